"""manualbp.optim: parameter update rules with torch.optim's names."""
from .optimizer import Optimizer
from .sgd import SGD

__all__ = ["SGD", "Optimizer"]
