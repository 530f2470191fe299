"""Train the tutorials' CIFAR-10 network, with the training loop written out by hand.

    python examples/21_train_cifar10net.py --download   # fetch CIFAR-10 (~170 MB, once) into ./data
    python examples/21_train_cifar10net.py              # CIFAR-10 if ./data has it, else the offline digits
    python examples/21_train_cifar10net.py --tiny       # a few seconds: 256 digits, one epoch

The network of the loss/optimizer tutorial (torch's ``Sequential`` of Conv2d/MaxPool2d x 3, Flatten and two
Linear layers, 145,578 parameters), trained with SGD(lr=0.01, momentum=0.9).  Where the tutorial writes

    optim.zero_grad(); result_loss.backward(); optim.step()

manualbp writes the backward pass as the two calls ``loss.backward()`` hides: the loss's gradient with
respect to the network's output, then the network's backward, layer by layer in reverse.  (Network.fit,
used in example 20, runs this same loop.)
"""
import argparse
import time

import numpy as np

import manualbp
from manualbp import data, models, nn, optim
from manualbp.summary import summary


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


def accuracy(model, x, y, batch_size=256):
    model.eval()
    correct = sum(int((model(xb).argmax(axis=1) == yb).sum())
                  for xb, yb in data.batches(x, y, batch_size, shuffle=False))
    model.train()
    return correct / len(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--download", action="store_true", help="download CIFAR-10 into --data-root")
    parser.add_argument("--tiny", action="store_true", help="a quick run on 256 digits, one epoch")
    args = parser.parse_args()
    if args.tiny:
        args.epochs = 1

    (x_train, y_train), (x_test, y_test), name = load(args)
    manualbp.manual_seed(0)
    model = models.cifar10net()
    print(f"The tutorials' CIFAR-10 network on {name}: {len(x_train)} training and {len(x_test)} test images")
    summary(model, (3, 32, 32))

    loss = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_loader = data.batches(x_train, y_train, batch_size=args.batch_size, shuffle=True)
    log_interval = 100 if name == "CIFAR-10" else 10
    for epoch in range(1, args.epochs + 1):
        running_loss, start = 0.0, time.perf_counter()
        for batch_idx, (imgs, targets) in enumerate(train_loader):
            optimizer.zero_grad()                    # clear the gradients of the last step
            outputs = model(imgs)                    # forward
            result_loss = loss(outputs, targets)     # the loss, a NumPy scalar
            model.backward(loss.backward())          # = result_loss.backward() in torch
            optimizer.step()                         # update every parameter
            running_loss += float(result_loss)
            if batch_idx % log_interval == 0:
                print(f"Train Epoch: {epoch} [{batch_idx * len(imgs)}/{len(x_train)} "
                      f"({100. * batch_idx / len(train_loader):.0f}%)]\tLoss: {float(result_loss):.6f}")
        seconds = time.perf_counter() - start
        print(f"running_loss: {running_loss:.4f}   test accuracy: {100 * accuracy(model, x_test, y_test):.2f}%   "
              f"({seconds:.1f}s, {len(x_train) / seconds:.0f} images/s)")
    print(f"\nFinal test accuracy: {100 * accuracy(model, x_test, y_test):.2f}% "
          f"(chance: {100 / len(np.unique(y_train)):.0f}%)")


if __name__ == "__main__":
    main()
