"""Random networks against torch: 200 random stacks drawn from manualbp's layers, with a random loss, a
random optimizer and a random learning-rate scheduler, each run through two or three whole training
steps (forward, loss, backward, optimizer step, scheduler step) in float64 by manualbp and by
torch.autograd from the same weights.

The layers: Conv2d (stride, padding, dilation, groups, padding='same', every padding_mode), residual
blocks (manualbp.resnet.BasicBlock against benchmarks/torch_resnet.py's TorchBlock, identity and option-A
shortcuts), BatchNorm2d / BatchNorm1d (train mode, or eval mode now and then; momentum, affine and
track_running_stats drawn), LayerNorm over the last one to three dimensions, MaxPool2d (dilation,
ceil_mode), AvgPool2d (ceil_mode, count_include_pad, divisor_override), AdaptiveAvgPool2d,
AdaptiveMaxPool2d, Dropout / Dropout2d (p=0 in train mode or p>0 in eval mode: with p>0 in train mode
the masks are not torch's), Flatten, Linear, and the activations ReLU, LeakyReLU, Tanh, Sigmoid, GELU
(both forms), SiLU, ELU, Softplus, Softmax and LogSoftmax.  The optimizers: SGD, Adam, AdamW, RMSprop and
Adagrad with their options drawn; the schedulers (or none): StepLR, ExponentialLR, CosineAnnealingLR,
LinearLR and OneCycleLR, stepped after every optimizer step.

Compared at every step: the network's output, the loss, dL/dx, every parameter's gradient, the learning
rate, and after the optimizer step every entry of the state_dict (parameters, BatchNorm's running_mean,
running_var and num_batches_tracked).  The error of a tensor is max|ours - torch| / max|torch| (a
relative error measured against the tensor's scale, so an element that is a near-zero sum of large terms
is not judged against its own tiny size); the largest one seen must stay under 1e-9.
"""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import manualbp
from benchmarks.torch_resnet import TorchBlock
from manualbp import nn, optim
from manualbp.resnet import BasicBlock

N_NETWORKS = 200
RTOL = 1e-9

ACTIVATIONS = {
    "ReLU": (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.1), lambda: torch.nn.LeakyReLU(0.1)),
    "Tanh": (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
    "Sigmoid": (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
    "GELU": (lambda: nn.GELU(), lambda: torch.nn.GELU()),
    "GELU-tanh": (lambda: nn.GELU("tanh"), lambda: torch.nn.GELU("tanh")),
    "SiLU": (lambda: nn.SiLU(), lambda: torch.nn.SiLU()),
    "ELU": (lambda: nn.ELU(), lambda: torch.nn.ELU()),
    "ELU-0.5": (lambda: nn.ELU(0.5), lambda: torch.nn.ELU(0.5)),
    "Softplus": (lambda: nn.Softplus(), lambda: torch.nn.Softplus()),
    "Softplus-2-1": (lambda: nn.Softplus(2.0, 1.0), lambda: torch.nn.Softplus(2.0, 1.0)),
    "Softmax": (lambda: nn.Softmax(dim=1), lambda: torch.nn.Softmax(dim=1)),
    "LogSoftmax": (lambda: nn.LogSoftmax(dim=1), lambda: torch.nn.LogSoftmax(dim=1)),
}
PADDING_MODES = ["zeros", "zeros", "reflect", "replicate", "circular"]


def _torch_layer(name, kw):
    kw = {k: v for k, v in kw.items() if k != "eval"}
    if name in ACTIVATIONS:
        return ACTIVATIONS[name][1]()
    if name == "BasicBlock":
        return TorchBlock(**kw)
    return getattr(torch.nn, name)(**kw)


def _shape_after(name, kw, shape, n):
    """The per-example output shape of a layer, from torch itself (in float64, on a batch of n).  A layer
    whose output holds -inf or NaN (a pooling window with no input pixel in it) is rejected."""
    layer = _torch_layer(name, kw).double()
    with torch.no_grad():
        y = layer(torch.ones((n,) + tuple(shape), dtype=torch.float64))
    assume(bool(torch.isfinite(y).all()))
    return tuple(y.shape[1:])


def _conv(draw, c, h, w):
    """Conv2d options valid for a (c, h, w) input: stride/padding/dilation or padding='same', groups, a
    padding_mode."""
    groups = draw(st.sampled_from([g for g in (1, 2, 3, 4) if c % g == 0]))
    out_c = groups * draw(st.integers(1, max(1, 4 // groups)))
    mode = draw(st.sampled_from(PADDING_MODES))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    kw = {"in_channels": c, "out_channels": out_c, "dilation": dilation, "groups": groups,
          "padding_mode": mode, "bias": draw(st.booleans())}
    if draw(st.integers(0, 3)) == 0:  # padding='same': stride 1, D*(K-1) padding, the odd one after
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
        if mode != "zeros" and any(d * (k - 1) - d * (k - 1) // 2 >= s
                                   for d, k, s in zip(dilation, kernel, (h, w))):
            kw["padding_mode"] = "zeros"  # reflect needs padding < size (and so does torch's circular)
        return {**kw, "kernel_size": kernel, "padding": "same"}
    kernel, stride, pad = [], [], []
    for size, d in zip((h, w), dilation):
        p = draw(st.integers(0, 2 if mode == "zeros" else min(2, size - 1)))
        k = draw(st.integers(1, min(5 if d == 1 else 3, (size + 2 * p - 1) // d + 1)))
        kernel.append(k)
        stride.append(draw(st.integers(1, 3)))
        pad.append(p)
    return {**kw, "kernel_size": tuple(kernel), "stride": tuple(stride), "padding": tuple(pad)}


def _pool(draw, h, w):
    """One of MaxPool2d / AvgPool2d / AdaptiveAvgPool2d / AdaptiveMaxPool2d, with options valid for h x w."""
    name = draw(st.sampled_from(["MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]))
    if name.startswith("Adaptive"):
        size = [draw(st.one_of(st.none(), st.integers(1, min(s + 1, 5)))) for s in (h, w)]
        return name, {"output_size": tuple(size) if draw(st.booleans()) else (size[0] or 2)}
    kernel, stride, pad = [], [], []
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if name == "MaxPool2d" else (1, 1)
    for size, d in zip((h, w), dilation):
        k = draw(st.integers(1, max(1, min(3, (size - 1) // d + 1))))
        kernel.append(k)
        pad.append(draw(st.integers(0, k // 2)))
        stride.append(draw(st.integers(1, 3)))
    kw = {"kernel_size": tuple(kernel), "stride": tuple(stride), "padding": tuple(pad),
          "ceil_mode": draw(st.booleans())}
    if name == "MaxPool2d":
        kw["dilation"] = dilation
    else:
        kw["count_include_pad"] = draw(st.booleans())
        kw["divisor_override"] = draw(st.sampled_from([None, None, None, 2]))
    return name, kw


def _batchnorm(draw, name, c):
    return (name, {"num_features": c, "momentum": draw(st.sampled_from([0.1, 0.5, None])),
                   "affine": draw(st.booleans()), "track_running_stats": draw(st.sampled_from([True, True, False])),
                   "eval": draw(st.integers(0, 4)) == 0})


def _no_bias_before(specs, norm):
    """Take away the bias a normalization would cancel: a Conv2d's or Linear's before BatchNorm, a Conv2d's or a
    BatchNorm2d's (per channel) before a LayerNorm over the last one or two dimensions.  Its gradient is then 0
    in exact arithmetic and a rounding error of 1e-16 in torch and in manualbp alike: two different errors
    that no relative tolerance can compare (real networks leave such biases out too)."""
    i = len(specs) - 1
    while i >= 0 and specs[i][0].startswith("Dropout"):
        i -= 1
    name, kw = specs[i] if i >= 0 else (None, {})
    if name == "Conv2d" or (name == "Linear" and norm.startswith("BatchNorm")):
        kw["bias"] = False
    elif name == "BatchNorm2d" and norm == "LayerNorm":
        kw["affine"] = False


def _layernorm(draw, shape):
    """LayerNorm over the last 1-3 dimensions, over at least two numbers (over one, its output is 0 (or the
    bias) and torch's a rounding error of 1e-17: nothing to compare)."""
    dims = draw(st.integers(1, len(shape)))
    assume(np.prod(shape[-dims:]) > 1)
    return ("LayerNorm", {"normalized_shape": tuple(shape[-dims:]),
                          "elementwise_affine": draw(st.booleans()), "bias": draw(st.booleans())})


def _dropout(draw, name):
    if draw(st.booleans()):
        return name, {"p": 0.0}
    return name, {"p": draw(st.sampled_from([0.3, 0.9])), "eval": True}


@st.composite
def _optimizer(draw):
    name = draw(st.sampled_from(["SGD", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad"]))
    wd = draw(st.sampled_from([0.0, 1e-3, 0.1]))
    if name == "SGD":
        momentum = draw(st.sampled_from([0.0, 0.5, 0.9]))
        nesterov = momentum > 0 and draw(st.booleans())
        return name, {"lr": draw(st.sampled_from([0.01, 0.1, 0.5])), "momentum": momentum, "nesterov": nesterov,
                      "dampening": 0.0 if nesterov else draw(st.sampled_from([0.0, 0.3])), "weight_decay": wd}
    if name in ("Adam", "AdamW"):
        return name, {"lr": draw(st.sampled_from([1e-3, 1e-2])), "weight_decay": wd,
                      "betas": draw(st.sampled_from([(0.9, 0.999), (0.5, 0.9)])),
                      "eps": draw(st.sampled_from([1e-8, 1e-3])), "amsgrad": draw(st.booleans())}
    if name == "RMSprop":
        return name, {"lr": draw(st.sampled_from([1e-3, 1e-2])), "weight_decay": wd,
                      "alpha": draw(st.sampled_from([0.99, 0.5])), "eps": draw(st.sampled_from([1e-8, 1e-3])),
                      "momentum": draw(st.sampled_from([0.0, 0.9])), "centered": draw(st.booleans())}
    return name, {"lr": draw(st.sampled_from([1e-2, 0.1])), "weight_decay": wd,
                  "lr_decay": draw(st.sampled_from([0.0, 0.1])), "eps": draw(st.sampled_from([1e-10, 1e-3])),
                  "initial_accumulator_value": draw(st.sampled_from([0.0, 0.1]))}


@st.composite
def _scheduler(draw, optimizer, steps):
    name = draw(st.sampled_from([None, "StepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR", "OneCycleLR"]))
    if name is None:
        return None
    kw = {"StepLR": lambda: {"step_size": draw(st.integers(1, 2)), "gamma": draw(st.sampled_from([0.1, 0.5]))},
          "ExponentialLR": lambda: {"gamma": draw(st.sampled_from([0.5, 0.9]))},
          "CosineAnnealingLR": lambda: {"T_max": draw(st.integers(1, 4)), "eta_min": draw(st.sampled_from([0.0, 1e-3]))},
          "LinearLR": lambda: {"start_factor": draw(st.sampled_from([1 / 3, 0.5])),
                               "end_factor": draw(st.sampled_from([1.0, 0.25])),
                               "total_iters": draw(st.integers(1, 4))},
          "OneCycleLR": lambda: {"max_lr": draw(st.sampled_from([0.01, 0.1])),
                                 "total_steps": steps + draw(st.integers(1, 3)),  # a phase of length 0
                                 "pct_start": draw(st.sampled_from([0.3, 0.45])),  # divides by 0 in torch too
                                 "anneal_strategy": draw(st.sampled_from(["cos", "linear"])),
                                 "three_phase": draw(st.booleans()),
                                 "cycle_momentum": optimizer != "Adagrad" and draw(st.booleans())}}[name]()
    return name, kw


@st.composite
def network_case(draw):
    """A list of layer specs with valid sizes, the input shape, the loss, the optimizer and the scheduler."""
    n = draw(st.integers(1, 4))
    c, h, w = draw(st.integers(1, 3)), draw(st.integers(3, 8)), draw(st.integers(3, 8))
    specs, shape, image = [], (c, h, w), (n, c, h, w)

    def add(spec):
        nonlocal shape
        shape = _shape_after(*spec, shape, n)
        specs.append(spec)

    for _ in range(draw(st.integers(0, 3))):       # convolutional stages
        c, h, w = shape
        if n * h * w > 1 and draw(st.integers(0, 4)) == 0:  # a residual block (BatchNorm needs 2+ values)
            down = c % 2 == 0 and c <= 4 and draw(st.booleans())  # option A: stride 2, twice the channels
            add(("BasicBlock", {"in_planes": c, "planes": 2 * c if down else c, "stride": 2 if down else 1}))
        else:
            add(("Conv2d", _conv(draw, c, h, w)))
        if n * shape[1] * shape[2] > 1 and draw(st.integers(0, 3)) == 0:
            _no_bias_before(specs, "BatchNorm2d")
            add(_batchnorm(draw, "BatchNorm2d", shape[0]))
        if draw(st.integers(0, 5)) == 0:
            _no_bias_before(specs, "LayerNorm")
            add(_layernorm(draw, shape))
        if draw(st.booleans()):
            add((draw(st.sampled_from(sorted(ACTIVATIONS))), {}))
        if draw(st.booleans()):
            add(_pool(draw, *shape[1:]))
        if draw(st.integers(0, 5)) == 0:
            add(_dropout(draw, draw(st.sampled_from(["Dropout", "Dropout2d"]))))
    add(("Flatten", {}))
    for _ in range(draw(st.integers(0, 2))):       # hidden dense layers
        add(("Linear", {"in_features": shape[0], "out_features": draw(st.integers(1, 8)), "bias": draw(st.booleans())}))
        if n > 1 and draw(st.integers(0, 3)) == 0:
            _no_bias_before(specs, "BatchNorm1d")
            add(_batchnorm(draw, "BatchNorm1d", shape[0]))
        if draw(st.integers(0, 4)) == 0:
            add(_layernorm(draw, shape))
        add((draw(st.sampled_from(sorted(ACTIVATIONS))), {}))
        if draw(st.integers(0, 4)) == 0:
            add(_dropout(draw, "Dropout"))
    classes = draw(st.integers(2, 5))
    add(("Linear", {"in_features": shape[0], "out_features": classes, "bias": draw(st.booleans())}))
    loss = draw(st.sampled_from(["CrossEntropy", "CrossEntropyProbs", "NLL", "MSE", "L1", "SmoothL1", "Huber",
                                 "BCEWithLogits"]))
    if loss == "NLL":
        add(("LogSoftmax", {}))
    steps = draw(st.integers(2, 3))
    opt = draw(_optimizer())
    return {"input": image, "specs": specs, "classes": classes, "loss": loss,
            "reduction": draw(st.sampled_from(["mean", "sum"])), "smoothing": draw(st.sampled_from([0.0, 0.2])),
            "opt": opt, "scheduler": draw(_scheduler(opt[0], steps)), "steps": steps,
            "seed": draw(st.integers(0, 2**31 - 1)), "batch": n}


def _build(specs):
    ours, theirs = [], []
    for name, kw in specs:
        if name in ACTIVATIONS:
            ours.append(ACTIVATIONS[name][0]())
        elif name == "BasicBlock":
            ours.append(BasicBlock(**kw))
        else:
            ours.append(getattr(nn, name)(**{k: v for k, v in kw.items() if k != "eval"}))
        theirs.append(_torch_layer(name, kw))
        if kw.get("eval"):
            ours[-1].eval()
            theirs[-1].eval()
    return nn.Sequential(*ours).double(), torch.nn.Sequential(*theirs).double()


def _losses(case):
    name, red, eps = case["loss"], case["reduction"], case["smoothing"]
    if name.startswith("CrossEntropy"):
        return (nn.CrossEntropyLoss(reduction=red, label_smoothing=eps),
                torch.nn.CrossEntropyLoss(reduction=red, label_smoothing=eps))
    ours = {"NLL": nn.NLLLoss, "MSE": nn.MSELoss, "L1": nn.L1Loss, "SmoothL1": nn.SmoothL1Loss,
            "Huber": nn.HuberLoss, "BCEWithLogits": nn.BCEWithLogitsLoss}[name]
    return ours(reduction=red), getattr(torch.nn, ours.__name__)(reduction=red)


def _targets(case, rng):
    n, classes, name = case["batch"], case["classes"], case["loss"]
    if name in ("CrossEntropy", "NLL"):
        return rng.integers(0, classes, n)
    if name in ("CrossEntropyProbs", "BCEWithLogits"):
        p = rng.uniform(0, 1, (n, classes))
        return p / p.sum(axis=1, keepdims=True) if name == "CrossEntropyProbs" else p
    return rng.standard_normal((n, classes))


def _rel(ours, theirs, floor=0.0):
    """max|ours - theirs| / max(max|theirs|, floor)."""
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = max(float(np.max(np.abs(theirs))), floor) if theirs.size else floor
    diff = float(np.max(np.abs(ours - theirs))) if theirs.size else 0.0
    return diff / scale if scale > 0 else diff


def _errors(pairs):
    """The errors of a family of tensors (the gradients; the state_dict's floating entries), each against its
    own scale or, for a tensor under 1e-5 of the family's largest entry, against that: a gradient that is 0 in
    exact arithmetic (a bias that a later BatchNorm cancels, a weight that a LayerNorm makes nearly scale-free)
    comes out as different 1e-17-sized rounding errors in torch and in manualbp, and so does such a bias after
    the steps, or the running_mean of a LayerNorm's output; only a yardstick from outside the tensor can judge
    them."""
    pairs = [(ours, theirs) for ours, theirs in pairs if theirs.is_floating_point()]
    floor = 1e-5 * max(float(t.abs().max()) if t.numel() else 0.0 for _, t in pairs)
    return [_rel(ours, theirs, floor) for ours, theirs in pairs]


def _optimizers(case, model, ref):
    name, kw = case["opt"]
    opt, torch_opt = getattr(optim, name)(model.parameters(), **kw), getattr(torch.optim, name)(ref.parameters(), **kw)
    if case["scheduler"] is None:
        return opt, torch_opt, None, None
    name, kw = case["scheduler"]
    return (opt, torch_opt, getattr(optim.lr_scheduler, name)(opt, **kw),
            getattr(torch.optim.lr_scheduler, name)(torch_opt, **kw))


def _watch_constant_norm_inputs(ref):
    """Flag a LayerNorm row or a (batch-statistics) BatchNorm channel whose input is constant (a 1x1 map
    upsampled by AdaptiveMaxPool2d, a replicate-padded border...): its x - mean is then rounding noise, scaled
    up by 1/sqrt(eps), and a later max (ReLU's 0, MaxPool2d's ties) picks by the noise's signs, which no two
    implementations share.  Such a network is not drawn."""
    flags = []

    def hook(module, args):
        x = args[0].detach()
        if isinstance(module, torch.nn.LayerNorm):
            rows = x.reshape(-1, int(np.prod(module.normalized_shape)))
        elif module.training or not module.track_running_stats:
            rows = x.transpose(0, 1).reshape(x.shape[1], -1)
        else:
            return
        spread = rows.var(dim=1, unbiased=False) / (rows.square().mean(dim=1) + 1e-300)
        flags.append(bool((spread < 1e-12).any()))

    for m in ref.modules():
        if isinstance(m, (torch.nn.LayerNorm, torch.nn.modules.batchnorm._BatchNorm)):
            m.register_forward_pre_hook(hook)
    return flags


def run_case(case):
    """Two or three training steps in manualbp and in torch; return the largest relative error seen."""
    rng = np.random.default_rng(case["seed"])
    torch.manual_seed(case["seed"])  # torch's initial weights: a failure replays
    model, ref = _build(case["specs"])
    model.load_state_dict({k: v.detach().numpy() for k, v in ref.state_dict().items()})
    x = rng.standard_normal(case["input"])
    y = _targets(case, rng)
    loss_fn, torch_loss = _losses(case)
    opt, torch_opt, sched, torch_sched = _optimizers(case, model, ref)
    constant = _watch_constant_norm_inputs(ref)
    worst = 0.0
    for _ in range(case["steps"]):
        opt.zero_grad()
        torch_opt.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        with manualbp.enable_grad():  # a module in eval mode saves for backward too (torch's autograd does)
            out = model(x)
        tout = ref(xt)
        assume(not any(constant))
        loss = loss_fn(out, y)
        tl = torch_loss(tout, torch.tensor(y))
        grad_x = model.backward(loss_fn.backward())
        tl.backward()
        errors = [_rel(out, tout), _rel(loss, tl), _rel(opt.param_groups[0]["lr"], torch_opt.param_groups[0]["lr"])]
        errors += _errors([(grad_x, xt.grad)] + [(p.grad, tp.grad) for p, tp in
                                                          zip(model.parameters(), ref.parameters())])
        opt.step()
        torch_opt.step()
        if sched is not None:
            sched.step()
            torch_sched.step()
        state, torch_state = model.state_dict(), ref.state_dict()
        assert list(state) == list(torch_state)
        errors += _errors([(state[k], torch_state[k]) for k in torch_state])
        errors += [_rel(state[k], t) for k, t in torch_state.items() if not t.is_floating_point()]
        worst = max(worst, *errors)
    return worst


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
def test_random_networks_forward_backward_and_optimizer_steps_match_torch():
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
