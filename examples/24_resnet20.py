"""Train ResNet-20 (He et al. 2016) with SGD and the paper's step schedule, on the digits or CIFAR-10.

    python examples/24_resnet20.py --download   # fetch CIFAR-10 (~170 MB, once) into ./data
    python examples/24_resnet20.py              # CIFAR-10 if ./data has it, else the offline digits (3x32x32)
    python examples/24_resnet20.py --tiny       # a few seconds: 128 digits, two epochs

``manualbp.models.resnet20()`` is the network of the paper's section 4.2: a 3x3 convolution with 16 channels,
three stages of three residual blocks (16, 32 and 64 channels; each block two 3x3 convolutions without bias,
each followed by BatchNorm2d), global average pooling and Linear(64, 10): 19 convolutions and one Linear
layer, 269,722 parameters.  It is trained the paper's way, scaled down to a few epochs:

    SGD(lr=0.1, momentum=0.9, weight_decay=1e-4)
    MultiStepLR(milestones=[epochs // 2, 3 * epochs // 4], gamma=0.1)   # lr / 10 at half, again at 3/4

``Network.fit`` runs the tutorials' loop and prints their ``Train Epoch: ...  Loss: ...`` lines; it steps
the scheduler once at the end of every epoch, as torch's examples do, and each epoch's summary line shows
the rate that epoch used.

What to look at:

- the ``lr`` in the epoch lines: 0.1, then 0.01 from the first milestone, then 0.001; and the validation
  lines beside them.  On the digits, while the rate is 0.1 the training accuracy climbs but the validation
  accuracy swings (12%, 29%, 64%, 62% in one run): validation runs in eval mode, with BatchNorm's running
  statistics, averages over the last batches that lag behind weights that move a lot at every step.  Once
  the rate drops the weights settle, the running statistics catch up, and validation jumps to ~97%;
- twenty layers train from the first epoch.  Each block computes ``y = F(x) + x``, so its backward adds
  the gradient that comes back through ``F`` to the one that passes unchanged through the identity path
  (the fork adds gradients): the gradient reaching the first layers does not shrink with depth the way it
  does in a plain stack of the same convolutions;
- the summary: where the parameters are (most in the last stage, whose convolutions are 64 x 64 x 3 x 3)
  and the ``ShortcutA`` layers with no parameters at all (option A: subsample and pad with zero channels).

The derivation of the residual block's backward and of option A: derivations/18-residual.md.
"""
import argparse
import time

import manualbp
from manualbp import data, models, nn, optim
from manualbp.network import Network
from manualbp.optim import lr_scheduler


def load(args):
    """(train, test, name): CIFAR-10 when available (or --download), else the offline digits."""
    if not args.tiny:
        try:
            return (data.cifar10(args.data_root, train=True, download=args.download),
                    data.cifar10(args.data_root, train=False, download=args.download), "CIFAR-10")
        except (FileNotFoundError, ImportError) as exc:
            print(f"CIFAR-10 is not available ({exc})\n-> training on the offline digits instead (3x32x32).\n")
    train, test = data.digits(True, (3, 32, 32)), data.digits(False, (3, 32, 32))
    if args.tiny:
        train, test = data.subset(*train, 128), data.subset(*test, 64)
    return train, test, "digits"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into --data-root")
    parser.add_argument("--tiny", action="store_true", help="a quick run: 128 digits, two epochs")
    args = parser.parse_args(argv)
    if args.tiny:
        args.epochs = 2

    train, test, name = load(args)
    manualbp.manual_seed(0)
    net = Network(models.resnet20(num_classes=10, in_channels=3))
    print(f"ResNet-20 on {name}: {len(train[0])} training and {len(test[0])} test images")
    net.summary((3, 32, 32))

    optimizer = optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, weight_decay=1e-4)
    milestones = sorted({max(1, args.epochs // 2), max(1, 3 * args.epochs // 4)})
    scheduler = lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    print(f"SGD(lr={args.lr}, momentum=0.9, weight_decay=1e-4), MultiStepLR(milestones={milestones}, gamma=0.1)\n")
    started = time.perf_counter()
    history = net.fit(train, epochs=args.epochs, batch_size=args.batch_size, loss=nn.CrossEntropyLoss(),
                      optimizer=optimizer, scheduler=scheduler, val=test,
                      log_interval=100 if name == "CIFAR-10" else 10)
    seconds = time.perf_counter() - started

    result = net.evaluate(test)
    print(f"\nTest accuracy after {len(history)} epochs: {result['correct']}/{result['total']} "
          f"({100 * result['accuracy']:.2f}%); {seconds:.1f} s of training")


if __name__ == "__main__":
    main()
