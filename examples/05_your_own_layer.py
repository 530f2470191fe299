"""Write your own layer: forward, backward, and a gradient check that catches a wrong derivative.

    python examples/05_your_own_layer.py

The layer is SiLU (also called Swish), y = x * sigmoid(x).  Its derivative, by the product rule and the
sigmoid's slope s (1 - s) (derivations/06-activations.md, (A6)):

    dy/dx = s + x * s * (1 - s),   s = sigmoid(x)

Every manualbp layer follows the same recipe: forward keeps what backward needs; backward multiplies the
incoming gradient by the local derivative (the chain rule, derivations/01-chain-rule.md) and returns it.
``manualbp.gradcheck.gradcheck`` compares backward with finite differences.
"""
import numpy as np

import manualbp
from manualbp import nn, optim
from manualbp.gradcheck import gradcheck


class SiLU(nn.Module):
    def forward(self, x):
        self._x = x
        self._s = 1 / (1 + np.exp(-x))   # kept for backward
        return x * self._s

    def backward(self, grad_output):
        s, x = self._s, self._x
        return grad_output * (s + x * s * (1 - s))


class WrongSiLU(SiLU):
    def backward(self, grad_output):
        return grad_output * self._s     # forgot the product rule's second term


rng = np.random.default_rng(0)
x = rng.standard_normal((4, 5))
print("SiLU gradcheck:", gradcheck(SiLU(), x))
print("WrongSiLU gradcheck:", gradcheck(WrongSiLU(), x, raise_exception=False), "(the missing term is caught)")

# It slots into a model like any built-in layer, and the model trains.
manualbp.manual_seed(0)
model = nn.Sequential(nn.Linear(2, 16), SiLU(), nn.Linear(16, 1)).double()
assert gradcheck(model, rng.standard_normal((3, 2)))
xs = rng.uniform(-2, 2, (128, 2))
ys = (xs[:, :1] * xs[:, 1:])                 # learn the product of the two inputs
loss_fn, opt = nn.MSELoss(), optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for step in range(301):
    opt.zero_grad()
    loss = loss_fn(model(xs), ys)
    model.backward(loss_fn.backward())
    opt.step()
    if step % 100 == 0:
        print(f"step {step:3d}  MSE {float(loss):.4f}")
print(f"final MSE {float(loss):.4f}; always predicting 0 would score {float(np.mean(ys ** 2)):.2f}")
