"""Train the tutorials' LeNet-5 (3 input channels, 32x32) on CIFAR-10 with SGD(lr=0.01, momentum=0.9).

    python examples/20_train_lenet5_cifar10.py --download   # fetch CIFAR-10 (~170 MB, once) into ./data
    python examples/20_train_lenet5_cifar10.py              # CIFAR-10 if ./data has it, else the offline digits
    python examples/20_train_lenet5_cifar10.py --tiny       # a few seconds: 256 digits, one epoch

The model is the one the tutorials build in torch,

    nn.Sequential(nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2, 2),
                  nn.Flatten(), nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10))

and ``Network.fit`` runs their loop -- zero_grad, forward, loss, backward, step -- printing the same
``Train Epoch: ...  Loss: ...`` lines.  Without a network, the offline digits (resized to 3x32x32) stand
in for CIFAR-10 so the script always runs.  This LeNet-5 has no activation functions, exactly as in the
tutorial: the max-pools are its only non-linearity, so do not expect the accuracy of a modern CIFAR-10 model.
"""
import argparse

import manualbp
from manualbp import data, models, nn, optim
from manualbp.network import Network


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
        train, test = data.subset(*train, 256), data.subset(*test, 128)
    return train, test, "digits"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into --data-root")
    parser.add_argument("--out", default="runs/example-lenet5", help="checkpoints go here (not with --tiny)")
    parser.add_argument("--tiny", action="store_true", help="a quick run on 256 digits, one epoch")
    args = parser.parse_args()
    if args.tiny:
        args.epochs = 1

    train, test, name = load(args)
    manualbp.manual_seed(0)
    net = Network(models.lenet5(in_channels=3, num_classes=10))
    print(f"LeNet-5 on {name}: {len(train[0])} training and {len(test[0])} test images")
    net.summary((3, 32, 32))

    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    history = net.fit(train, epochs=args.epochs, batch_size=args.batch_size, loss=criterion, optimizer=optimizer,
                      val=test, checkpoint=None if args.tiny else args.out,
                      log_interval=100 if name == "CIFAR-10" else 10)

    result = net.evaluate(test)
    print(f"\nTest accuracy after {len(history)} epochs: {result['correct']}/{result['total']} "
          f"({100 * result['accuracy']:.2f}%)" + ("" if args.tiny else f"; best checkpoint in {args.out}/best.npz"))


if __name__ == "__main__":
    main()
