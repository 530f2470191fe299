"""The life of a gradient: None, then set by backward, then accumulated, then None after zero_grad.

    python examples/03_grad_lifecycle.py

What the tutorials watch in the debugger (grad is None before loss.backward(), has a value after, and
optimizer.zero_grad() clears it), printed instead.  Backward passes *add* into .grad: the gradient of a
sum of losses is the sum of their gradients (derivations/01-chain-rule.md, (C3)), which is why a
training loop clears the gradients before every backward.
"""
import numpy as np

import manualbp
from manualbp import nn, optim

manualbp.manual_seed(0)
model = nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2)).double()
loss_fn = nn.CrossEntropyLoss()
opt = optim.SGD(model.parameters(), lr=0.1)
x = np.array([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
y = np.array([1, 0])
w = model[0].weight


def show(when):
    g = "None" if w.grad is None else np.array2string(w.grad[0], precision=6)
    print(f"{when:45s} model[0].weight.grad[0] = {g}")


show("1. just built")

loss = loss_fn(model(x), y)
model.backward(loss_fn.backward())
show("2. after one backward")
first = w.grad.copy()

loss = loss_fn(model(x), y)
model.backward(loss_fn.backward())
show("3. after a second backward (no zero_grad)")
assert np.allclose(w.grad, 2 * first)
print("   the second backward added to the first: grad is now exactly twice as large")

opt.zero_grad()
show("4. after optimizer.zero_grad()")
assert w.grad is None

loss = loss_fn(model(x), y)
model.backward(loss_fn.backward())
show("5. backward again: a fresh gradient")
assert np.allclose(w.grad, first)

before = w.data.copy()
opt.step()
print(f"{'6. optimizer.step(): w <- w - lr * grad':45s} changed by {np.abs(w.data - before).max():.6f} "
      f"(= 0.1 * {np.abs(first).max():.6f})")
assert np.allclose(w.data, before - 0.1 * first)

opt.zero_grad(set_to_none=False)
show("7. zero_grad(set_to_none=False)")
assert (w.grad == 0).all()
