"""The 2-2-2 sigmoid network of the tutorials: by hand and with manualbp, side by side.

    python examples/02_two_two_two_network.py

Left column: plain Python, one line of the chain rule at a time (derivations/01-chain-rule.md).
Right column: manualbp's Linear/Sigmoid layers, MSELoss, backward() and SGD.
For the full trace of every weight run `python -m manualbp explain`.
"""
import math

import numpy as np

from manualbp import nn, optim

# ---- by hand ------------------------------------------------------------------------------------------
i1, i2 = 0.05, 0.10
w1, w2, w3, w4, b1 = 0.15, 0.20, 0.25, 0.30, 0.35
w5, w6, w7, w8, b2 = 0.40, 0.45, 0.50, 0.55, 0.60
t1, t2 = 0.01, 0.99
lr = 0.5


def sigmoid(z):
    return 1 / (1 + math.exp(-z))


out_h1 = sigmoid(w1 * i1 + w2 * i2 + b1)                     # (C4)
out_h2 = sigmoid(w3 * i1 + w4 * i2 + b1)
out_o1 = sigmoid(w5 * out_h1 + w6 * out_h2 + b2)
out_o2 = sigmoid(w7 * out_h1 + w8 * out_h2 + b2)
E_total = 0.5 * (t1 - out_o1) ** 2 + 0.5 * (t2 - out_o2) ** 2  # (C5)

delta_o1 = (out_o1 - t1) * out_o1 * (1 - out_o1)              # (C7)
delta_o2 = (out_o2 - t2) * out_o2 * (1 - out_o2)
dE_dw5 = delta_o1 * out_h1                                    # (C6)
dE_dout_h1 = delta_o1 * w5 + delta_o2 * w7                    # (C8): two paths, old w5 and w7
dE_dw1 = dE_dout_h1 * out_h1 * (1 - out_h1) * i1              # (C9)
w5_new = w5 - lr * dE_dw5                                     # (C10), after all gradients exist
w1_new = w1 - lr * dE_dw1

# ---- manualbp ---------------------------------------------------------------------------------------------
net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).double()
net.load_state_dict({
    "0.weight": np.array([[w1, w2], [w3, w4]]), "0.bias": np.array([b1, b1]),
    "2.weight": np.array([[w5, w6], [w7, w8]]), "2.bias": np.array([b2, b2]),
})
x, target = np.array([[i1, i2]]), np.array([[t1, t2]])
loss_fn = nn.MSELoss(reduction="sum")          # sum (out - target)^2 = 2 * E_total
opt = optim.SGD(net.parameters(), lr=lr)

opt.zero_grad()
E_mbp = 0.5 * float(loss_fn(net(x), target))
net.backward(loss_fn.backward(0.5))            # half the gradient of 2E is the gradient of E
g5, g1 = net[2].weight.grad[0, 0], net[0].weight.grad[0, 0]
opt.step()

rows = [
    ("E_total", E_total, E_mbp),
    ("dE/dw5", dE_dw5, g5),
    ("dE/dw1", dE_dw1, g1),
    ("w5 after one step", w5_new, net[2].weight.data[0, 0]),
    ("w1 after one step", w1_new, net[0].weight.data[0, 0]),
]
print(f"{'':20s}{'by hand':>14s}{'manualbp':>14s}")
for name, hand, mbp in rows:
    print(f"{name:20s}{hand:14.9f}{mbp:14.9f}")
    assert abs(hand - mbp) < 1e-12, name
print("The hidden-layer gradient dE/dw1 used w5 = 0.40 and w7 = 0.50, the weights from before the step.")
