"""manualbp: backpropagation by hand, on fast Numba kernels.

    from manualbp import nn, optim
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)

    opt.zero_grad()
    loss = loss_fn(model(x), y)
    model.backward(loss_fn.backward())   # what loss.backward() does in torch
    opt.step()

On a GPU: ``model.to("cuda")`` and ``manualbp.to_device(x)`` (or ``Network(model, device="cuda")``, whose
fit/evaluate/predict move the batches); ``manualbp.to_numpy`` brings results back.  See ``manualbp/device.py``.
"""
from . import cuda as cuda
from . import data as data
from . import device as device
from . import models as models
from . import nn, optim
from .backend import get_backend, set_backend
from .checkpoint import load_safetensors as load_safetensors
from .checkpoint import save_safetensors as save_safetensors
from .device import to_device as to_device
from .device import to_numpy as to_numpy
from .network import Network as Network
from .nn.saved import enable_grad, is_grad_enabled, no_grad
from .random import get_generator, manual_seed
from .summary import summary as summary

__version__ = "0.1.0"

__all__ = [
           "Network",
           "__version__",
           "cuda",
           "data",
           "device",
           "enable_grad",
           "get_backend",
           "get_generator",
           "is_grad_enabled",
           "load_safetensors",
           "manual_seed",
           "models",
           "nn",
           "no_grad",
           "optim",
           "save_safetensors",
           "set_backend",
           "summary",
           "to_device",
           "to_numpy",
]
