"""The tutorials' three networks, built from manualbp layers, and ResNet-20.

    mlp()         the 3-4-2-3 network of the torchsummary example: 31 parameters
    lenet5()      LeNet-5 as the tutorials write it for CIFAR-10: 3 x 32 x 32 in, 10 classes out
    cifar10net()  the CIFAR-10 network of the loss/optimizer tutorial (Conv-Pool x3, Flatten, Linear x2)
    resnet20()    He et al.'s ResNet-20 for CIFAR-10 (manualbp/resnet.py): 269,722 parameters

The first three return a ``Sequential`` whose parameter names and shapes match the same ``torch.nn.Sequential``,
so ``model.load_state_dict({k: v.numpy() for k, v in torch_model.state_dict().items()})`` works.
``INPUT_SHAPES`` gives the (C, H, W) each expects, which ``manualbp train`` uses to shape the data.
"""
from . import nn
from .nn import init
from .resnet import resnet20

__all__ = ["MODELS", "build", "cifar10net", "input_shape", "lenet5", "mlp", "resnet20"]


def mlp(in_features=3, num_classes=3, hidden=(4, 2), softmax=False):
    """The tutorials' MLP: Linear(3, 4, bias=False) -> Sigmoid -> Linear(4, 2) -> ReLU -> Linear(2, 3).

    12 + 10 + 9 = 31 parameters.  As in the tutorial the first weight is xavier_normal_ and the
    second kaiming_normal_ initialised.  The tutorial ends with a softmax; ``softmax=True`` adds it,
    but leave it off to train with ``CrossEntropyLoss``, which applies the softmax itself.

    Args:
        in_features: inputs per sample (3; 64 for flattened 8x8 digits).
        num_classes: outputs (3).
        hidden: the two hidden widths (4, 2).
    """
    h1, h2 = hidden
    layers = [nn.Linear(in_features, h1, bias=False), nn.Sigmoid(), nn.Linear(h1, h2), nn.ReLU(),
              nn.Linear(h2, num_classes)]
    init.xavier_normal_(layers[0].weight)    # nn.init.xavier_normal_(self.fc1.weight)
    init.kaiming_normal_(layers[2].weight)   # nn.init.kaiming_normal_(self.fc2.weight)
    if softmax:
        layers.append(nn.Softmax(dim=-1))
    return nn.Sequential(*layers)


def lenet5(in_channels=3, num_classes=10, activation=None):
    """LeNet-5 exactly as the tutorials build it (for 3-channel 32x32 CIFAR-10 images).

        Conv2d(3, 6, 5)     3@32x32 -> 6@28x28
        MaxPool2d(2, 2)             -> 6@14x14
        Conv2d(6, 16, 5)            -> 16@10x10
        MaxPool2d(2, 2)             -> 16@5x5
        Flatten()                   -> 400
        Linear(400, 120) -> Linear(120, 84) -> Linear(84, 10)

    62,006 parameters with 3 input channels.  The tutorials put no activation between the layers
    (the max-pools are the only non-linearity); ``activation="relu"`` (or "tanh", "sigmoid") inserts
    one after every layer but the last, as LeCun's original does.
    """
    act = _activation(activation)
    layers = [nn.Conv2d(in_channels, 6, kernel_size=5, stride=1, padding=0), *act(),
              nn.MaxPool2d(kernel_size=2, stride=2, padding=0),
              nn.Conv2d(6, 16, kernel_size=5, stride=1, padding=0), *act(),
              nn.MaxPool2d(kernel_size=2, stride=2, padding=0),
              nn.Flatten(),
              nn.Linear(400, 120), *act(),
              nn.Linear(120, 84), *act(),
              nn.Linear(84, num_classes)]
    return nn.Sequential(*layers)


def cifar10net(in_channels=3, num_classes=10):
    """The CIFAR-10 network of the tutorials (a ``Sequential`` of 9 layers, 145,578 parameters).

        Conv2d(3, 32, 5, padding=2)   -> 32@32x32 -> MaxPool2d(2) -> 32@16x16
        Conv2d(32, 32, 5, padding=2)  -> 32@16x16 -> MaxPool2d(2) -> 32@8x8
        Conv2d(32, 64, 5, padding=2)  -> 64@8x8   -> MaxPool2d(2) -> 64@4x4
        Flatten() -> 1024 -> Linear(1024, 64) -> Linear(64, 10)
    """
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2), nn.MaxPool2d(2),
        nn.Conv2d(32, 32, 5, padding=2), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1024, 64),
        nn.Linear(64, num_classes))


def _activation(name):
    table = {None: None, "none": None, "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
    if name not in table:
        raise ValueError(f"lenet5: activation must be one of None, 'relu', 'tanh', 'sigmoid', got {name!r}")
    cls = table[name]
    return (lambda: [cls()]) if cls is not None else (list)


MODELS = {"mlp": mlp, "lenet5": lenet5, "cifar10net": cifar10net, "resnet20": resnet20}


def input_shape(name, in_channels=3):
    """The (C, H, W) image each image model expects; for ``mlp`` the shape of its flat input."""
    if name == "mlp":
        return (3,)
    if name in ("lenet5", "cifar10net", "resnet20"):
        return (in_channels, 32, 32)
    raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")


def build(name, **kwargs):
    """``build("lenet5", in_channels=1)``: a model by its ``manualbp train --model`` name."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**kwargs)
