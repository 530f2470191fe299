"""A tiny MLP learns XOR, then two interleaved spirals, with the five-line training loop spelled out.

    python examples/04_mlp_xor_or_spirals.py                 # both problems
    python examples/04_mlp_xor_or_spirals.py --problem xor   # or: --problem spirals

Neither problem is linearly separable: a single Linear layer cannot solve it, a hidden layer with a
non-linearity can.  Each step is the loop of every PyTorch tutorial:

    opt.zero_grad(); loss = loss_fn(model(x), y); model.backward(loss_fn.backward()); opt.step()

where ``model.backward(loss_fn.backward())`` is what ``loss.backward()`` does in torch.
"""
import argparse

import numpy as np

import manualbp
from manualbp import nn, optim


def train(model, x, y, steps, lr, report_every):
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    for step in range(1, steps + 1):
        opt.zero_grad()                      # 1. clear last step's gradients
        logits = model(x)                    # 2. forward
        loss = loss_fn(logits, y)            # 3. loss
        model.backward(loss_fn.backward())   # 4. backward: fills every .grad
        opt.step()                           # 5. update
        if step % report_every == 0 or step == 1:
            acc = (logits.argmax(axis=1) == y).mean()
            print(f"  step {step:5d}  loss {float(loss):.4f}  accuracy {acc:.0%}")
    acc = float((model(x).argmax(axis=1) == y).mean())
    return acc


def xor(seed=0):
    manualbp.manual_seed(seed)
    print("XOR: 4 points, Linear(2, 8) -> Tanh -> Linear(8, 2)")
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 0])
    model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2))
    acc = train(model, x, y, steps=300, lr=0.1, report_every=100)
    print(f"XOR final accuracy {acc:.0%}; predictions {model(x).argmax(axis=1).tolist()} for targets {y.tolist()}")
    return acc


def spirals(seed=0, points_per_arm=100):
    manualbp.manual_seed(seed)
    rng = np.random.default_rng(0)
    t = np.sqrt(rng.uniform(0, 1, points_per_arm)) * 3 * np.pi       # angle along the arm
    arm = np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / (3 * np.pi)
    x = np.concatenate([arm, -arm]) + rng.normal(0, 0.02, (2 * points_per_arm, 2))
    y = np.repeat([0, 1], points_per_arm)
    x = x.astype(np.float32)
    print(f"Two spirals: {len(x)} points, Linear(2, 64) -> ReLU -> Linear(64, 64) -> ReLU -> Linear(64, 2)")
    model = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2))
    acc = train(model, x, y, steps=1000, lr=0.1, report_every=250)
    print(f"spirals final accuracy {acc:.0%}")
    return acc


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=["xor", "spirals", "both"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.problem in ("xor", "both"):
        xor(args.seed)
    if args.problem in ("spirals", "both"):
        spirals(args.seed)


if __name__ == "__main__":
    main()
