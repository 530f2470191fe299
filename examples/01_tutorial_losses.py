"""The loss values the tutorials print, computed by manualbp and by hand.

    python examples/01_tutorial_losses.py

Derivations: derivations/07-regression-losses.md (L1, MSE) and
derivations/02-softmax-cross-entropy.md (cross-entropy).
"""
import math

import numpy as np

from manualbp import nn

# The tutorial reshapes [1, 2, 3] and [1, 2, 5] to (1, 1, 1, 3); the losses do not care about the shape.
inputs = np.array([1.0, 2.0, 3.0], dtype=np.float32).reshape(1, 1, 1, 3)
targets = np.array([1.0, 2.0, 5.0], dtype=np.float32).reshape(1, 1, 1, 3)

l1 = nn.L1Loss(reduction="sum")(inputs, targets)
l1_hand = abs(1 - 1) + abs(2 - 2) + abs(3 - 5)
print(f"L1Loss(reduction='sum')  manualbp {float(l1):.4f}   by hand |0| + |0| + |-2| = {l1_hand}")

mse = nn.MSELoss()(inputs, targets)
mse_hand = ((1 - 1) ** 2 + (2 - 2) ** 2 + (3 - 5) ** 2) / 3
print(f"MSELoss()                manualbp {float(mse):.4f}   by hand (0 + 0 + 4) / 3 = {mse_hand:.4f}")

# Cross-entropy takes raw scores (logits) of shape (N, C) and class indices of shape (N,).
ce = nn.CrossEntropyLoss()
x = np.array([[0.1, 0.2, 0.3]], dtype=np.float32)
loss = ce(x, np.array([1]))
hand = -0.2 + math.log(math.exp(0.1) + math.exp(0.2) + math.exp(0.3))
print(f"CrossEntropyLoss([0.1, 0.2, 0.3], target 1)  manualbp {float(loss):.4f}   "
      f"by hand -0.2 + ln(e^0.1 + e^0.2 + e^0.3) = {hand:.4f}")

x = np.array([[2.0, 1.0, 0.1]], dtype=np.float32)
loss = ce(x, np.array([0]))
p = np.exp(x[0]) / np.exp(x[0]).sum()
print(f"softmax([2.0, 1.0, 0.1]) = [{p[0]:.3f}, {p[1]:.3f}, {p[2]:.3f}]")
print(f"CrossEntropyLoss([2.0, 1.0, 0.1], target 0)  manualbp {float(loss):.4f}   "
      f"by hand -ln({p[0]:.3f}) = {-math.log(p[0]):.4f}")

# What backward hands to the layer before: p - onehot(target), divided by N for 'mean' (here N = 1).
grad = ce.backward()
print("dL/dlogits = softmax - onehot =", [f"{v:.4f}" for v in grad[0]])
