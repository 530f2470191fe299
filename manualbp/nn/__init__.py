"""manualbp.nn: layers, activations, losses and initialisers with torch.nn's names."""
from . import init
from .activation import LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .conv import Conv2d
from .linear import Flatten, Identity, Linear
from .loss_binary import BCELoss, BCEWithLogitsLoss
from .loss_classification import CrossEntropyLoss, NLLLoss
from .loss_regression import HuberLoss, L1Loss, MSELoss, SmoothL1Loss
from .module import Module, Sequential
from .parameter import Parameter
from .pooling import MaxPool2d

__all__ = [
    "BCELoss",
    "BCEWithLogitsLoss",
    "Conv2d",
    "CrossEntropyLoss",
    "Flatten",
    "HuberLoss",
    "Identity",
    "L1Loss",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MSELoss",
    "MaxPool2d",
    "Module",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "SmoothL1Loss",
    "Softmax",
    "Tanh",
    "init",
]

from .activation_extra import ELU, GELU, SiLU, Softplus

__all__ += ["ELU", "GELU", "SiLU", "Softplus"]

from .pooling_avg import AdaptiveAvgPool2d, AdaptiveMaxPool2d, AvgPool2d

__all__ += ["AdaptiveAvgPool2d", "AdaptiveMaxPool2d", "AvgPool2d"]

from .batchnorm import BatchNorm1d, BatchNorm2d

__all__ += ["BatchNorm1d", "BatchNorm2d"]

from .dropout import Dropout, Dropout2d
from .normalization import LayerNorm

__all__ += ["Dropout", "Dropout2d", "LayerNorm"]
