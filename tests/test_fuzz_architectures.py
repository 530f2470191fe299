"""Random networks against torch: 200 random stacks of Conv2d / MaxPool2d / Linear / activations, with a
random loss and random SGD options, each run through two whole training steps (forward, loss, backward,
SGD step) in float64 by manualbp and by torch.autograd from the same weights.

Compared after the first step: the loss, dL/dx and every parameter's gradient; after the second (so
that momentum buffers, Nesterov and weight decay all act): the loss and every parameter.  The error of
a tensor is max|ours - torch| / max|torch| (a relative error measured against the tensor's scale, so an
element that is a near-zero sum of large terms is not judged against its own tiny size); the largest
one seen must stay under 1e-9.
"""
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manualbp import nn, optim

N_NETWORKS = 200
RTOL = 1e-9

ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1)),
    "Tanh": (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
}


def _conv_geometry(draw, size):
    """A kernel, stride and padding valid for a spatial size (kernel <= padded size)."""
    pad = draw(st.integers(0, 2))
    kernel = draw(st.integers(1, min(5, size + 2 * pad)))
    stride = draw(st.integers(1, 3))
    return kernel, stride, pad, (size + 2 * pad - kernel) // stride + 1


def _pool_geometry(draw, size):
    kernel = draw(st.integers(1, min(3, size)))
    pad = draw(st.integers(0, kernel // 2))
    stride = draw(st.integers(1, 3))
    return kernel, stride, pad, (size + 2 * pad - kernel) // stride + 1


@st.composite
def network_case(draw):
    """A list of layer specs with valid sizes, the input shape, the loss and the optimizer options."""
    n = draw(st.integers(1, 4))
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 10)), draw(st.integers(3, 10))
    specs, shape, image = [], (c, h, w), (n, c, h, w)
    for _ in range(draw(st.integers(0, 3))):       # convolutional stages
        c, h, w = shape
        kh, sh, ph, oh = _conv_geometry(draw, h)
        kw, sw, pw, ow = _conv_geometry(draw, w)
        out_c = draw(st.integers(1, 4))
        specs.append(("Conv2d", {"in_channels": c, "out_channels": out_c, "kernel_size": (kh, kw), "stride": (sh, sw),
                                     "padding": (ph, pw), "bias": draw(st.booleans())}))
        shape = (out_c, oh, ow)
        if draw(st.booleans()):
            specs.append((draw(st.sampled_from(sorted(ACTIVATIONS))), {}))
        if draw(st.booleans()):
            _, h, w = shape
            kh, sh, ph, oh = _pool_geometry(draw, h)
            kw, sw, pw, ow = _pool_geometry(draw, w)
            specs.append(("MaxPool2d", {"kernel_size": (kh, kw), "stride": (sh, sw), "padding": (ph, pw)}))
            shape = (shape[0], oh, ow)
    specs.append(("Flatten", {}))
    features = int(np.prod(shape))
    for _ in range(draw(st.integers(0, 2))):       # hidden dense layers
        out = draw(st.integers(1, 8))
        specs.append(("Linear", {"in_features": features, "out_features": out, "bias": draw(st.booleans())}))
        specs.append((draw(st.sampled_from(sorted(ACTIVATIONS))), {}))
        features = out
    classes = draw(st.integers(2, 5))
    specs.append(("Linear", {"in_features": features, "out_features": classes, "bias": draw(st.booleans())}))
    loss = draw(st.sampled_from(["CrossEntropy", "CrossEntropyProbs", "MSE", "L1", "SmoothL1", "Huber",
                                 "BCEWithLogits"]))
    momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
    nesterov = momentum > 0 and draw(st.booleans())
    opt = {"lr": draw(st.sampled_from([0.01, 0.1, 0.5])), "momentum": momentum, "nesterov": nesterov,
               "dampening": 0.0 if nesterov else draw(st.sampled_from([0.0, 0.3])),
               "weight_decay": draw(st.sampled_from([0.0, 1e-3, 0.1]))}
    return {"input": image, "specs": specs, "classes": classes, "loss": loss,
            "reduction": draw(st.sampled_from(["mean", "sum"])), "smoothing": draw(st.sampled_from([0.0, 0.2])),
            "opt": opt, "seed": draw(st.integers(0, 2**31 - 1)), "batch": n}


def _build(specs):
    ours, theirs = [], []
    for name, kw in specs:
        if name in ACTIVATIONS:
            ours.append(ACTIVATIONS[name][0]())
            theirs.append(ACTIVATIONS[name][1]())
        else:
            ours.append(getattr(nn, name)(**kw))
            theirs.append(getattr(torch.nn, name)(**kw))
    return nn.Sequential(*ours).double(), torch.nn.Sequential(*theirs).double()


def _losses(case):
    name, red, eps = case["loss"], case["reduction"], case["smoothing"]
    if name.startswith("CrossEntropy"):
        return (nn.CrossEntropyLoss(reduction=red, label_smoothing=eps),
                torch.nn.CrossEntropyLoss(reduction=red, label_smoothing=eps))
    ours = {"MSE": nn.MSELoss, "L1": nn.L1Loss, "SmoothL1": nn.SmoothL1Loss, "Huber": nn.HuberLoss,
            "BCEWithLogits": nn.BCEWithLogitsLoss}[name]
    return ours(reduction=red), getattr(torch.nn, ours.__name__)(reduction=red)


def _targets(case, rng):
    n, classes, name = case["batch"], case["classes"], case["loss"]
    if name == "CrossEntropy":
        return rng.integers(0, classes, n)
    if name in ("CrossEntropyProbs", "BCEWithLogits"):
        p = rng.uniform(0, 1, (n, classes))
        return p / p.sum(axis=1, keepdims=True) if name == "CrossEntropyProbs" else p
    return rng.standard_normal((n, classes))


def _rel(ours, theirs):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
    diff = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    return diff / scale if scale > 0 else diff


def run_case(case):
    """Two training steps in manualbp and in torch; return the largest relative error seen."""
    rng = np.random.default_rng(case["seed"])
    model, ref = _build(case["specs"])
    model.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = rng.standard_normal(case["input"])
    y = _targets(case, rng)
    loss_fn, torch_loss = _losses(case)
    opt = optim.SGD(model.parameters(), **case["opt"])
    torch_opt = torch.optim.SGD(ref.parameters(), **case["opt"])
    worst = 0.0
    for step in range(2):
        opt.zero_grad()
        torch_opt.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        loss = loss_fn(model(x), y)
        tl = torch_loss(ref(xt), torch.tensor(y))
        grad_x = model.backward(loss_fn.backward())
        tl.backward()
        errors = [_rel(loss, tl)]
        if step == 0:
            errors.append(_rel(grad_x, xt.grad))
            errors += [_rel(p.grad, tp.grad) for p, tp in zip(model.parameters(), ref.parameters())]
        opt.step()
        torch_opt.step()
        errors += [_rel(p.data, tp) for p, tp in zip(model.parameters(), ref.parameters())]
        worst = max(worst, *errors)
    return worst


def test_random_networks_forward_backward_and_sgd_step_match_torch():
    seen = []

    @settings(max_examples=N_NETWORKS, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=network_case())
    def check(case):
        seen.append(run_case(case))
        assert seen[-1] <= RTOL, f"relative error {seen[-1]:.3g} for {case}"

    check()
    print(f"{len(seen)} random networks; largest relative error {max(seen):.3g}")
    assert len(seen) >= N_NETWORKS
