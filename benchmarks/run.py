"""manualbp (Numba backend) against PyTorch (CPU) and NumPy, side by side, on this machine.

    python benchmarks/run.py                      # everything; writes BENCHMARKS.md and BENCHMARKS.png
    python benchmarks/run.py --only matmul,conv   # some sections
    python benchmarks/run.py --quick --out /tmp/b # tiny sizes, one repeat (what the tests run)
    manualbp bench [same options]

Sections (``--only``): matmul, conv, train, startup, memory.  Every figure is the median of
``--repeats`` (default 5) timed repeats after a warm-up, with the min-max beside it; ours and torch are
timed in alternation (ours, torch, ours, torch, ... each after a short pause), with the same number of
threads (numba.get_num_threads()), so a slow spell of the machine hits both.  NumPy's products run in a
child process started without OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE, so that OpenBLAS picks its own
kernel (benchmarks/numpy_peer.py); their repeats alternate with ours and torch's all the same.  Where JAX
imports, the ``train`` section also times JAX's jit-compiled twin of each training step on the CPU
(benchmarks/jax_twin.py: the same weights, batch, loss and SGD step), in the same alternation.  ``ratio`` is ours / torch
of the figure in its row: for these alternating sections the median of the per-repeat ratios (``Row.ratio``), for the
start-up and memory rows the ratio of the medians; the column ``better`` says which way is good for us.  "% peak" compares a GFLOP/s figure with what an FMA
probe (independent fused multiply-add chains on float32 vectors, on all threads) reaches on this machine.

FLOPs are counted the usual way: 2 per multiply-add of a matrix product or convolution (padding
included); a training step counts forward + grad-weight + grad-input of every layer except the
grad-input of the first layer, which neither library computes (the images need no gradient:
``Network.train_step`` calls ``model.backward(g, input_grad=False)``).
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

from benchmarks import jax_twin  # after ROOT went on sys.path
from benchmarks.compile_times import compile_child, compile_table
from benchmarks.numpy_peer import NumpyPeer, Remote, blas_line

SETTLE_S = 0.3  # seconds of quiet before each timed block (see ``timed``)
SECTIONS = ("matmul", "conv", "train", "resnet", "startup", "memory")
MODELS = ("lenet5", "cifar10net")
CIFAR_CONVS = ((3, 32, 32), (32, 32, 16), (32, 64, 8))  # (C, O, H=W) of the CIFAR-10 net's 5x5, pad-2 convs


# --- timing ------------------------------------------------------------------------------------------


# The targets each row is held to, by row key: ours / peer >= x ("torch",
# "numpy"), seconds <= x ("abs"), or at most torch's ("torch-max").  A report re-rendered from an older
# BENCHMARKS.json (--from-json) is held to these too, so the page always shows the current targets.
TARGETS = {
    **{f"train-lenet5-{b}": ("torch", 2.0) for b in (1, 16, 64)},
    **{f"train-cifar10net-{b}": ("torch", 1.5) for b in (64, 256)},
    "train-resnet20-64": ("torch", 1.0),
    **{f"matmul{n}": ("numpy", 0.9) for n in (256, 512, 1024, 2048)},
    "startup-filled": ("abs", 3.0),
    "startup-empty": ("abs", 10.0),
}


def _calls_for(fn, target_s, quick):
    """How many calls of ``fn`` make one timed repeat of about ``target_s`` seconds (1 when quick)."""
    if quick:
        return 1
    t = time.perf_counter()
    fn()
    dt = max(time.perf_counter() - t, 1e-6)
    return max(1, int(target_s / dt))


def timed(fns, repeats, quick, target_s=0.15):
    """{name: [seconds per call, one per repeat]} for each callable in ``fns``, after a warm-up call.

    The repeats alternate between the callables (ours, torch, ours, torch, ...), so that a slow spell
    of this shared machine, which can last seconds, falls on both sides of a ratio rather than on one.
    Before each timed block comes a pause of SETTLE_S: Numba's and torch's OpenMP thread pools and
    NumPy's BLAS threads each keep spinning for a while after a parallel call, and a pool still
    spinning while another one works steals its cores (timing them back to back made both several
    times slower).

    A side given as a ``numpy_peer.Remote`` runs in another process, which does the same there
    (warm-up, calibration, then per repeat one waking call and a timed block) when asked.
    """
    calls = {}
    for name, fn in fns.items():
        time.sleep(0 if quick else SETTLE_S)
        if isinstance(fn, Remote):
            calls[name] = fn.calls_for(target_s, quick)
            continue
        fn()  # warm-up: compile, allocate, fill caches
        calls[name] = _calls_for(fn, target_s, quick)
    out = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(0 if quick else SETTLE_S)  # let the other pools' threads go to sleep
            if isinstance(fn, Remote):
                out[name].append(fn.block(calls[name]))
                continue
            fn()  # this side's caches and thread pool, awake again
            k = calls[name]
            t = time.perf_counter()
            for _ in range(k):
                fn()
            out[name].append((time.perf_counter() - t) / k)
    return out


class Figure:
    """A median with its min and max, in some unit; ``samples`` keeps the repeats in the order they ran."""

    def __init__(self, samples, scale=1.0):
        self.samples = [scale * s for s in samples]
        vals = sorted(self.samples)
        self.median, self.lo, self.hi, self.n = statistics.median(vals), vals[0], vals[-1], len(vals)

    @classmethod
    def rate(cls, seconds, amount):
        """amount per second (img/s, GFLOP/s ...) from seconds per call."""
        return cls([amount / s for s in seconds])

    def fmt(self, digits=None):
        d = digits if digits is not None else (0 if self.median >= 100 else (1 if self.median >= 10 else 2))
        return f"{self.median:,.{d}f} ({self.lo:,.{d}f}-{self.hi:,.{d}f})"

    def to_dict(self):
        return {"median": self.median, "min": self.lo, "max": self.hi, "repeats": self.n, "samples": self.samples}


class Row:
    def __init__(self, section, name, unit, ours, torch=None, numpy=None, better="higher", peak=None,
                 target=None, key=None, jax=None):
        self.section, self.name, self.unit = section, name, unit
        self.ours, self.torch, self.numpy, self.jax = ours, torch, numpy, jax
        self.better, self.peak, self.target, self.key = better, peak, target, key

    def ratio(self, other="torch"):
        """ours / other.  Where the two were timed by ``timed`` (repeats in alternation: the sections of
        PAIRED_SECTIONS), the median of the per-repeat ratios: a slow spell of this shared machine, which can
        last seconds, then slows both halves of a pair and moves their ratio less than either median (one
        side's slow repeats need not fall on the same repeats as the other's).  Otherwise the ratio of the
        medians."""
        ref = getattr(self, other)
        if ref is None or ref.median == 0:
            return None
        a, b = self.ours.samples, ref.samples
        if self.section in PAIRED_SECTIONS and len(a) == len(b) > 1 and all(b):
            return statistics.median(x / y for x, y in zip(a, b))
        return self.ours.median / ref.median


PAIRED_SECTIONS = ("matmul", "conv", "train", "resnet")  # the sections whose sides ``timed`` alternates


# --- what the machine can do -------------------------------------------------------------------------


# AMD's CPU families: which Zen a figure was measured on (the same EPYC name covers several)
ZEN = {23: "Zen/Zen 2", 25: "Zen 3/Zen 4", 26: "Zen 5"}


def machine():
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:
        pass
    family = fields.get("cpu family")
    from manualbp.kernels.cpu import machine as cpu_machine
    c = cpu_machine.caches()
    blocks = cpu_machine.matmul_blocking(4)
    return {"cpu": fields.get("model name") or platform.processor() or "unknown",
            "cpu_family": int(family) if family and family.isdigit() else None,
            "logical_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "caches": {"l1d": c.l1d, "l1d_ways": c.l1d_ways, "l2": c.l2, "l2_ways": c.l2_ways, "l3": c.l3,
                       "source": c.source},
            "matmul_blocking_f32": {"kc": blocks.kc, "mc": blocks.mc, "in_place_max_n": blocks.in_place_max_n}}


def _cpu_line(m):
    family = m.get("cpu_family")
    if family is None:
        return m["cpu"]
    zen = f" ({ZEN[family]})" if "AMD" in m["cpu"] and family in ZEN else ""
    return f"{m['cpu']}, CPU family {family}{zen}"


def fma_probe(quick):
    """GFLOP/s of float32 fused multiply-adds on all threads: the machine's practical peak.

    Each thread runs 16 independent multiply-add chains (a 4 x 4 block of dot products over 8 rows
    of 1024 floats that stay in L1), vectorized along the rows: the FMA units never wait for a
    previous result and loads are half as many as FMAs.  (A chain ``x = x*a + b`` repeated on one
    array is bound by loads and stores instead, and LLVM folds ``s += x*a`` for a constant ``a``.)
    """
    import numba
    from numba import njit, prange

    @njit(fastmath=True, parallel=True)
    def chains(v, out, iters):
        for t in prange(v.shape[0]):  # one (8, K) block per thread
            a0, a1, a2, a3 = v[t, 0], v[t, 1], v[t, 2], v[t, 3]
            b0, b1, b2, b3 = v[t, 4], v[t, 5], v[t, 6], v[t, 7]
            total = v.dtype.type(0)
            for _ in range(iters):
                c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = v.dtype.type(0)
                c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = v.dtype.type(0)
                for k in range(a0.shape[0]):
                    x0, x1, x2, x3 = a0[k], a1[k], a2[k], a3[k]
                    y0, y1, y2, y3 = b0[k], b1[k], b2[k], b3[k]
                    c00 += x0 * y0
                    c01 += x0 * y1
                    c02 += x0 * y2
                    c03 += x0 * y3
                    c10 += x1 * y0
                    c11 += x1 * y1
                    c12 += x1 * y2
                    c13 += x1 * y3
                    c20 += x2 * y0
                    c21 += x2 * y1
                    c22 += x2 * y2
                    c23 += x2 * y3
                    c30 += x3 * y0
                    c31 += x3 * y1
                    c32 += x3 * y2
                    c33 += x3 * y3
                total += (c00 + c01 + c02 + c03 + c10 + c11 + c12 + c13
                          + c20 + c21 + c22 + c23 + c30 + c31 + c32 + c33)
            out[t] = total

    threads = numba.get_num_threads()
    K = 1024
    v = np.full((threads, 8, K), 0.5, dtype=np.float32)
    out = np.zeros(threads, dtype=np.float32)
    iters = 200 if quick else 20000
    chains(v, out, 2)
    best = 0.0
    for _ in range(1 if quick else 5):
        t = time.perf_counter()
        chains(v, out, iters)
        best = max(best, 2 * 16 * K * threads * iters / (time.perf_counter() - t) / 1e9)
    return best


# --- matmul ------------------------------------------------------------------------------------------


def bench_matmul(args, peak, numpy_peer):
    """NumPy's products run in ``numpy_peer`` (OpenBLAS with its own kernel choice: see numpy_peer.py)."""
    import torch

    from manualbp.kernels import cpu
    sizes = (16, 32) if args.quick else (128, 256, 512, 1024, 2048)
    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        a = rng.standard_normal((n, n)).astype(np.float32)
        b = rng.standard_normal((n, n)).astype(np.float32)
        numpy_peer.ask("size", n)  # the same matrices, drawn there
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        t = timed({"ours": lambda a=a, b=b: cpu.matmul(a, b), "torch": lambda ta=ta, tb=tb: torch.mm(ta, tb),
                   "numpy": Remote(numpy_peer)}, args.repeats, args.quick, target_s=0.1)
        flop = 2.0 * n ** 3 / 1e9
        rows.append(Row("matmul", f"matmul n={n}", "GFLOP/s", Figure.rate(t["ours"], flop),
                        Figure.rate(t["torch"], flop), Figure.rate(t["numpy"], flop), peak=peak,
                        target=TARGETS.get(f"matmul{n}"), key=f"matmul{n}"))
        _say(args, rows[-1])
    return rows


# --- convolution -------------------------------------------------------------------------------------


def _conv_cases(x, w, b, g):
    """{what: (ours, torch)} closures for a 5x5, padding-2 convolution's three products."""
    import torch

    from manualbp.kernels import cpu
    tx, tw, tb, tg = (torch.from_numpy(v) for v in (x, w, b, g))
    s, p = (1, 1), (2, 2)
    conv_bw = torch.ops.aten.convolution_backward  # what autograd calls; the mask picks one gradient
    return {
        "forward": (lambda: cpu.conv2d_forward(x, w, b, s, p),
                    lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, 2)),
        "grad-input": (lambda: cpu.conv2d_grad_input(g, w, x.shape, s, p),
                       lambda: conv_bw(tg, tx, tw, None, [1, 1], [2, 2], [1, 1], False, [0, 0], 1,
                                       [True, False, False])),
        "grad-weight": (lambda: cpu.conv2d_grad_weight(g, x, w.shape, s, p),
                        lambda: conv_bw(tg, tx, tw, None, [1, 1], [2, 2], [1, 1], False, [0, 0], 1,
                                        [False, True, False])),
    }


def bench_conv(args, peak):
    N = 2 if args.quick else 64
    rows = []
    rng = np.random.default_rng(0)
    for ci, (C, O, H) in enumerate(CIFAR_CONVS):
        x = rng.standard_normal((N, C, H, H)).astype(np.float32)
        w = (0.1 * rng.standard_normal((O, C, 5, 5))).astype(np.float32)
        b = rng.standard_normal(O).astype(np.float32)
        g = rng.standard_normal((N, O, H, H)).astype(np.float32)
        cases = _conv_cases(x, w, b, g)
        flop = 2.0 * N * O * C * 25 * H * H / 1e9
        for what, (ours, theirs) in cases.items():
            t = timed({"ours": ours, "torch": theirs}, args.repeats, args.quick, target_s=0.1)
            name = f"conv{ci + 1} {C}->{O} {H}x{H} {what}"
            rows.append(Row("conv", name + " (ms)", "ms", Figure(t["ours"], 1e3), Figure(t["torch"], 1e3),
                            better="lower", key=f"conv{ci + 1}-{what}-ms"))
            rows.append(Row("conv", name, "GFLOP/s", Figure.rate(t["ours"], flop),
                            Figure.rate(t["torch"], flop), peak=peak, key=f"conv{ci + 1}-{what}"))
            _say(args, rows[-1])
    return rows


# --- training ----------------------------------------------------------------------------------------


def torch_twin(name, ours):
    """The same network in torch.nn, with our weights copied in."""
    import torch
    from torch import nn as tnn
    if name == "resnet20":
        from benchmarks.torch_resnet import TorchResNet  # the standard PyTorch CIFAR ResNet, in this folder
        m = TorchResNet()
    elif name == "lenet5":
        m = tnn.Sequential(tnn.Conv2d(3, 6, 5), tnn.MaxPool2d(2, 2), tnn.Conv2d(6, 16, 5), tnn.MaxPool2d(2, 2),
                           tnn.Flatten(), tnn.Linear(400, 120), tnn.Linear(120, 84), tnn.Linear(84, 10))
    else:
        m = tnn.Sequential(tnn.Conv2d(3, 32, 5, padding=2), tnn.MaxPool2d(2), tnn.Conv2d(32, 32, 5, padding=2),
                           tnn.MaxPool2d(2), tnn.Conv2d(32, 64, 5, padding=2), tnn.MaxPool2d(2), tnn.Flatten(),
                           tnn.Linear(1024, 64), tnn.Linear(64, 10))
    m.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    return m


def model_flops(name):
    """(forward, training step) FLOPs per image, counted from the layer shapes."""
    from manualbp import models, nn
    model = models.build(name)
    x_shape = (3, 32, 32)
    fwd, first_grad_input = 0.0, None
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
            oh = (x_shape[1] + 2 * ph - kh) // sh + 1
            ow = (x_shape[2] + 2 * pw - kw) // sw + 1
            f = 2.0 * layer.out_channels * layer.in_channels * kh * kw * oh * ow
            x_shape = (layer.out_channels, oh, ow)
        elif isinstance(layer, nn.MaxPool2d):
            (kh, kw), (sh, sw) = layer._k, layer._s
            x_shape = (x_shape[0], (x_shape[1] - kh) // sh + 1, (x_shape[2] - kw) // sw + 1)
            continue
        elif isinstance(layer, nn.Linear):
            f = 2.0 * layer.in_features * layer.out_features
        else:
            continue
        fwd += f
        if first_grad_input is None:
            first_grad_input = f
    return fwd, 3 * fwd - first_grad_input


def _train_pair(name, batch, seed=0):
    """(ours step, torch step, ours forward, torch forward) closures on the same weights and data."""
    import torch

    import manualbp
    from manualbp import models, nn, optim
    from manualbp.network import Network
    manualbp.manual_seed(seed)
    model = models.build(name)
    tmodel = torch_twin(name, model)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    net, loss_fn = Network(model), nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tloss = torch.nn.CrossEntropyLoss()
    topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)

    def ours_step():
        net.train_step(x, y, loss_fn, opt)

    def torch_step():
        topt.zero_grad()
        loss = tloss(tmodel(tx), ty)
        loss.backward()
        topt.step()

    def ours_infer():
        model(x)

    def torch_infer():
        with torch.no_grad():
            tmodel(tx)

    return ours_step, torch_step, ours_infer, torch_infer, (model, x, y, loss_fn, opt)


def profile_step(state, steps):
    """Milliseconds per training step spent in each layer's forward and backward, the loss and SGD."""
    model, x, y, loss_fn, opt = state
    layers = list(model)
    names = [f"{i}.{type(m).__name__}" for i, m in enumerate(layers)]
    acc = {}

    def add(key, dt):
        acc[key] = acc.get(key, 0.0) + dt

    for _ in range(steps):
        t = time.perf_counter()
        opt.zero_grad()
        h = x
        for name, layer in zip(names, layers):
            t1 = time.perf_counter()
            h = layer(h)
            add(f"{name} forward", time.perf_counter() - t1)
        t1 = time.perf_counter()
        loss_fn(h, y)
        g = loss_fn.backward()
        add("loss forward+backward", time.perf_counter() - t1)
        for i in range(len(layers) - 1, -1, -1):  # as Sequential.backward(g, input_grad=False) walks
            t1 = time.perf_counter()
            g = layers[i].backward(g, input_grad=False) if i == 0 else layers[i].backward(g)
            add(f"{names[i]} backward", time.perf_counter() - t1)
        t1 = time.perf_counter()
        opt.step()
        add("SGD step", time.perf_counter() - t1)
        add("total", time.perf_counter() - t)
    return {k: 1e3 * v / steps for k, v in acc.items()}


def bench_train(args, peak):
    """Training steps against torch, and against JAX's jitted step (benchmarks/jax_twin.py) when it imports."""
    batches = (1, 4) if args.quick else (1, 16, 64, 256)
    with_jax = jax_twin.load() is not None
    rows, profiles = [], {}
    for name in MODELS:
        fwd_flop, step_flop = model_flops(name)
        for batch in batches:
            ours, theirs, ours_inf, torch_inf, state = _train_pair(name, batch)
            sides = {"ours": ours, "torch": theirs}
            if with_jax:  # our weights before any step, our batch
                sides["jax"] = jax_twin.JaxTwin(state[0], state[1], state[2]).step
            t = timed(sides, args.repeats, args.quick, target_s=0.25)
            gf = step_flop * batch / 1e9
            rows.append(Row("train", f"{name} training step, batch {batch}", "img/s",
                            Figure.rate(t["ours"], batch), Figure.rate(t["torch"], batch),
                            target=TARGETS.get(f"train-{name}-{batch}"), key=f"train-{name}-{batch}",
                            jax=Figure.rate(t["jax"], batch) if with_jax else None))
            rows.append(Row("train", f"{name} training step, batch {batch}", "GFLOP/s",
                            Figure.rate(t["ours"], gf), Figure.rate(t["torch"], gf), peak=peak,
                            jax=Figure.rate(t["jax"], gf) if with_jax else None))
            _say(args, rows[-2])
            if f"train-{name}-{batch}" in TARGETS or args.quick:  # the rows held to a target get a profile
                profiles[f"{name}, batch {batch}"] = profile_step(state, 1 if args.quick else 20)
        batch = 4 if args.quick else 64
        _, _, ours_inf, torch_inf, _ = _train_pair(name, batch)
        t = timed({"ours": ours_inf, "torch": torch_inf}, args.repeats, args.quick, target_s=0.25)
        rows.append(Row("train", f"{name} inference, batch {batch}", "img/s", Figure.rate(t["ours"], batch),
                        Figure.rate(t["torch"], batch), key=f"infer-{name}-{batch}"))
        rows.append(Row("train", f"{name} inference, batch {batch}", "GFLOP/s",
                        Figure.rate(t["ours"], fwd_flop * batch / 1e9),
                        Figure.rate(t["torch"], fwd_flop * batch / 1e9), peak=peak))
        _say(args, rows[-2])
    return rows, profiles


RESNET_REPEATS = 9


def bench_resnet(args):
    """ResNet-20 training steps (BatchNorm in training mode, option-A shortcuts) against torch's twin."""
    batches = (1, 2) if args.quick else (1, 64, 128)
    rows = []
    for batch in batches:
        ours, theirs, _, _, _ = _train_pair("resnet20", batch)
        # at least RESNET_REPEATS: steps of 0.1-0.3 s put few calls in a block, and the target row needs them
        repeats = args.repeats if args.quick else max(args.repeats, RESNET_REPEATS)
        t = timed({"ours": ours, "torch": theirs}, repeats, args.quick, target_s=0.5)
        rows.append(Row("resnet", f"resnet20 training step, batch {batch}", "img/s",
                        Figure.rate(t["ours"], batch), Figure.rate(t["torch"], batch),
                        target=TARGETS.get(f"train-resnet20-{batch}"), key=f"train-resnet20-{batch}"))
        _say(args, rows[-1])
    return rows


# --- start-up and memory (fresh processes) ------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, time, resource
    import numpy as np
    which, what, model_name, batch, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, n)
    if which == "ours":
        import numba
        from manualbp import models, nn, optim
        from manualbp.network import Network
        model = models.build(model_name)
        net = Network(model)
        loss_fn = nn.CrossEntropyLoss()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        if what == "startup":
            net.train_step(x[:batch], y[:batch], loss_fn, opt)
        else:
            net.fit((x, y), epochs=1, batch_size=batch, loss=loss_fn, optimizer=opt, verbose=False,
                    progress=False, seed=0)
    else:
        import torch
        from torch import nn as tnn
        torch.set_num_threads(int(sys.argv[6]))
        if model_name == "lenet5":
            m = tnn.Sequential(tnn.Conv2d(3, 6, 5), tnn.MaxPool2d(2, 2), tnn.Conv2d(6, 16, 5), tnn.MaxPool2d(2, 2),
                               tnn.Flatten(), tnn.Linear(400, 120), tnn.Linear(120, 84), tnn.Linear(84, 10))
        else:
            m = tnn.Sequential(tnn.Conv2d(3, 32, 5, padding=2), tnn.MaxPool2d(2), tnn.Conv2d(32, 32, 5, padding=2),
                               tnn.MaxPool2d(2), tnn.Conv2d(32, 64, 5, padding=2), tnn.MaxPool2d(2), tnn.Flatten(),
                               tnn.Linear(1024, 64), tnn.Linear(64, 10))
        loss_fn = torch.nn.CrossEntropyLoss()
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        steps = 1 if what == "startup" else (n + batch - 1) // batch
        perm = torch.from_numpy(np.random.default_rng(0).permutation(n))
        for s in range(steps):
            idx = perm[s * batch:(s + 1) * batch]
            opt.zero_grad()
            loss = loss_fn(m(tx[idx]), ty[idx])
            loss.backward()
            opt.step()
    print("END", time.time(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
""")


_LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def _child(which, what, model, batch, n, threads, env=None):
    """(seconds from spawning the process to the end of its work, peak RSS in MiB)."""
    e = dict(os.environ)
    e.update(env or {})
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e["NUMBA_NUM_THREADS"] = str(threads)
    start = time.time()
    # Linux carries a process's peak RSS across exec, and a forked child starts with a copy of its
    # parent's memory counters: a child of this (large) process would report at least our own peak.
    # So a small launcher process starts the measured one, which then reports only its own peak.
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, sys.executable, "-c", _CHILD, which, what, model,
                           str(batch), str(n), str(threads)],
                          check=False, capture_output=True, text=True, env=e, cwd=tempfile.gettempdir(),
                          timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("END ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child ({which} {what} {model}) failed:\n{proc.stderr[-3000:]}")
    _, end, rss = lines[-1].split()
    return float(end) - start, int(rss) / 1024.0  # ru_maxrss is in KiB on Linux


def bench_startup(args, threads, compile_times):
    """Start-up rows; ``compile_times`` gets what the run that fills the Numba cache measured per family."""
    repeats = max(1, args.repeats)
    rows = []
    model, batch = "lenet5", 64
    with tempfile.TemporaryDirectory(prefix="mbp-numba-cache-") as root:
        filled = os.path.join(root, "filled")
        # fill the cache, timing each kernel family's compilation on the way (an empty cache, too)
        compile_times.update(compile_child(ROOT, model, batch, threads, filled), model=model, batch=batch)
        if args.verbose:
            print("  compile time per kernel family (empty cache): " + ", ".join(
                f"{f} {d['seconds']:.2f} s" for f, d in compile_times["families"].items()), flush=True)
        empty, warm, torch_t = [], [], []
        for r in range(repeats):
            fresh = os.path.join(root, f"empty{r}")
            empty.append(_child("ours", "startup", model, batch, batch, threads, {"NUMBA_CACHE_DIR": fresh})[0])
            warm.append(_child("ours", "startup", model, batch, batch, threads, {"NUMBA_CACHE_DIR": filled})[0])
            torch_t.append(_child("torch", "startup", model, batch, batch, threads)[0])
    tf = Figure(torch_t)
    rows.append(Row("startup", f"first {model} training step (batch {batch}), filled Numba cache", "s",
                    Figure(warm), tf, better="lower", target=TARGETS["startup-filled"], key="startup-filled"))
    _say(args, rows[-1])
    rows.append(Row("startup", f"first {model} training step (batch {batch}), empty Numba cache", "s",
                    Figure(empty), tf, better="lower", target=TARGETS["startup-empty"], key="startup-empty"))
    _say(args, rows[-1])
    return rows


def bench_memory(args, threads):
    rows = []
    n = 128 if args.quick else 2048
    for model in MODELS:
        ours, theirs = [], []
        for _ in range(max(1, args.repeats)):
            ours.append(_child("ours", "memory", model, 64, n, threads)[1])
            theirs.append(_child("torch", "memory", model, 64, n, threads)[1])
        rows.append(Row("memory", f"{model}, 1 epoch of {n} images, batch 64: peak RSS", "MiB", Figure(ours),
                        Figure(theirs), better="lower", target=("torch-max", 1.0), key=f"memory-{model}"))
        _say(args, rows[-1])
    return rows


# --- report ------------------------------------------------------------------------------------------


def _say(args, row):
    if args.verbose:
        r = row.ratio()
        print(f"  {row.name}: ours {row.ours.fmt()} {row.unit}"
              + (f", torch {row.torch.fmt()}" if row.torch else "")
              + (f", numpy {row.numpy.fmt()}" if row.numpy else "")
              + (f", jax {row.jax.fmt()}" if row.jax else "")
              + (f", ours/torch {r:.2f}" if r is not None else ""), flush=True)


def target_verdict(row):
    """(text of the target, reached?) or None for a row without a target."""
    if row.target is None:
        return None
    kind, value = row.target
    if kind == "abs":
        return f"<= {value:g} {row.unit}", row.ours.median <= value
    if kind == "torch-max":
        return "<= torch", row.ours.median <= row.torch.median
    r = row.ratio(kind)
    return f">= {value:g}x {kind}", r >= value


def _publish(tmp, path):
    """Give the temp file the usual permissions (mkstemp makes it private), then move it into place."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def _atomic_write(path, data, mode="w"):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if "b" not in mode else {})) as f:
            f.write(data)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_chart(rows, path):
    """A bar chart of ours/torch per row (as a speed ratio: > 1 means ours is better); False without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure as MplFigure
    except ImportError:
        return False
    shown = [r for r in rows if r.torch is not None and r.unit != "GFLOP/s" or (r.section in ("matmul", "conv")
             and r.unit == "GFLOP/s" and r.torch is not None)]
    shown = [r for r in shown if not (r.section == "conv" and r.unit == "ms")]
    labels, values = [], []
    for r in shown:
        ratio = r.ratio()
        values.append(1.0 / ratio if r.better == "lower" else ratio)
        labels.append(f"{r.name} [{r.unit}]")
    fig = MplFigure(figsize=(10, 0.3 * len(values) + 1.5))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ypos = np.arange(len(values))[::-1]
    ax.barh(ypos, values, color=["tab:green" if v >= 1 else "tab:red" for v in values])
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=7)
    ax.set_xlabel("manualbp advantage over torch (x; > 1: manualbp faster / smaller)")
    fig.subplots_adjust(left=0.42, right=0.97, top=0.98, bottom=1.0 / (0.3 * len(values) + 1.5))
    d = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".chart.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=90, format="png")
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def render(rows, profiles, meta, chart_name, notes):
    out = ["# Benchmarks: manualbp (Numba) against PyTorch and NumPy on the CPU", ""]
    out.append(f"Generated by `python benchmarks/run.py {' '.join(meta['argv'])}` on {meta['date']}. "
               "All figures below come from this one run.")
    out += ["", "## Machine and versions", ""]
    m = meta["machine"]
    out.append(f"- CPU: {_cpu_line(m)}, {m['logical_cores']} logical cores; {m['platform']}")
    if m.get("caches"):
        c, b = m["caches"], m["matmul_blocking_f32"]
        out.append(f"- caches: L1d {c['l1d'] >> 10} KiB {c['l1d_ways']}-way, L2 {c['l2'] >> 10} KiB {c['l2_ways']}-way, "
                   f"L3 {c['l3'] >> 20} MiB ({c['source']}); the matrix product's blocking derived from them "
                   f"(manualbp/kernels/cpu/machine.py), float32: {b['kc']} rows of k per block, {b['mc']} rows of C "
                   f"per task, b read in place up to {b['in_place_max_n']} columns")
    out.append(f"- threads: {meta['threads']} (numba.get_num_threads(); torch.set_num_threads the same), "
               f"Numba threading layer {meta['threading_layer']}")
    out.append(f"- FMA probe (float32, all threads): {meta['peak']:.1f} GFLOP/s; machine load average at the start "
               f"{meta['load']}")
    out.append("- " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    if "torch_cpu_capability" in meta:  # reports written before these lines existed lack them
        out.append(f"- torch's CPU capability (torch.backends.cpu.get_cpu_capability()): "
                   f"{meta['torch_cpu_capability']}")
    if "numpy_blas" in meta:
        out.append("- " + blas_line(meta["numpy_blas"]))
    if meta.get("jax", {}).get("installed"):
        j = meta["jax"]
        out.append(f"- JAX (the `train` section's third column): its training step as one `jax.jit` function on the "
                   f"CPU (XLA); XLA's thread pool: {j['xla_threads']} threads, the CPUs this process may use (no "
                   f"XLA flag sets its size{'' if j['xla_threads'] == meta['threads'] else ', so it differs from the others'})")
    out += ["", ("Each figure is the median of the repeats (min-max in brackets), after a warm-up; ours and "
                 "torch are timed in the same process, their repeats alternating, each after a short pause (NumPy's "
                 "products in a child process, its repeats in the same alternation). `ratio` is ours / torch of "
                 "the row's figure: the median of the per-repeat ratios where the two sides alternate (a slow spell "
                 "of the machine then slows both halves of a pair), the ratio of the medians for start-up and "
                 "memory; `better` says which direction favours manualbp. `% peak` is ours against "
                 "the FMA probe."), ""]
    verdicts = [(r, target_verdict(r)) for r in rows if r.target is not None]
    if verdicts:
        out += ["## Targets", "", "| row | target | reached | ours | torch / numpy | ratio |",
                "|---|---|---|---|---|---|"]
        for r, (text, ok) in verdicts:
            ref = r.numpy if r.target[0] == "numpy" else r.torch
            ratio = r.ratio("numpy" if r.target[0] == "numpy" else "torch")
            out.append(f"| {r.name} [{r.unit}] | {text} | {'yes' if ok else '**no**'} | {r.ours.fmt()} | "
                       f"{ref.fmt() if ref else '-'} | {ratio:.2f} |")
        out.append("")
    titles = {"matmul": "float32 matrix product (n x n) @ (n x n)",
              "conv": "Convolutions of the CIFAR-10 net, batch 64 (5x5, padding 2, float32)",
              "train": "Training step (zero_grad, forward, CrossEntropyLoss, backward, SGD momentum) and inference",
              "resnet": "ResNet-20 training step (BatchNorm in training mode, residual blocks, SGD momentum)",
              "startup": "Start-up: process start to the end of the first training step",
              "memory": "Peak resident memory (ru_maxrss) of a 1-epoch training run"}
    for section in SECTIONS:
        sec = [r for r in rows if r.section == section]
        if not sec:
            continue
        out += [f"## {titles[section]}", ""]
        if section == "train" and "jax" in meta and not meta["jax"].get("installed"):
            out += ["JAX not installed: no JAX rows (`pip install jax`, or the `bench` extra).", ""]
        peers = [p for p in ("numpy", "jax") if any(getattr(r, p, None) is not None for r in sec)]
        head = ("| row | unit | manualbp | torch |" + "".join(f" {p} |" for p in peers) + " ratio ours/torch |"
                + "".join(f" ratio ours/{p} |" for p in peers) + " better | % peak |")
        out += [head, "|" + "---|" * (head.count("|") - 1)]
        for r in sec:
            ratio = r.ratio()
            cells = [r.name, r.unit, r.ours.fmt(), r.torch.fmt() if r.torch else "-"]
            cells += [getattr(r, p).fmt() if getattr(r, p) else "-" for p in peers]
            cells.append(f"{ratio:.2f}" if ratio is not None else "-")
            for p in peers:
                rp = r.ratio(p)
                cells.append(f"{rp:.2f}" if rp is not None else "-")
            cells.append(r.better)
            cells.append(f"{100 * r.ours.median / r.peak:.0f}%" if r.peak else "")
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        if section == "startup" and meta.get("compile_times"):
            out += compile_table(meta["compile_times"])
    if profiles:
        out += ["## Where a training step's time goes (manualbp, ms per step)", ""]
        for name, prof in profiles.items():
            total = prof.get("total", 0.0)
            top = sorted(((k, v) for k, v in prof.items() if k != "total"), key=lambda kv: -kv[1])
            out.append(f"- {name}: {total:.3f} ms per step; " + ", ".join(
                f"{k} {v:.3f}" for k, v in top[:8]))
        out.append("")
    if chart_name:
        out += [f"![ours/torch per row]({chart_name})", ""]
    if notes:
        out += [notes.rstrip(), ""]
    return "\n".join(out)


def _versions():
    import numba
    import torch
    v = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
         "torch": torch.__version__, **jax_twin.versions()}
    try:
        import manualbp
        v["manualbp"] = getattr(manualbp, "__version__", "checkout")
    except ImportError:
        pass
    return v


def _torch_capability():
    """The instruction set torch's CPU kernels were dispatched to (torch.backends.cpu.get_cpu_capability())."""
    import torch
    try:
        return torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # torch older than 2.1
        return "unknown"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 1 repeat: a smoke test, not a measurement")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per figure (default 5; 1 with --quick)")
    p.add_argument("--out", default=ROOT, help="folder for BENCHMARKS.md and BENCHMARKS.png (default the checkout)")
    p.add_argument("--notes", default=os.path.join(HERE, "notes.md"),
                   help="Markdown appended to the report (default benchmarks/notes.md when it exists)")
    p.add_argument("--json", action="store_true", help="also write BENCHMARKS.json with every figure")
    p.add_argument("--from-json", default=None, metavar="PATH",
                   help="measure nothing: render BENCHMARKS.md (and the chart) again from a BENCHMARKS.json that "
                        "an earlier run wrote, e.g. after editing --notes")
    p.add_argument("-q", "--quiet", dest="verbose", action="store_false", help="print only where the report went")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    bad = [s for s in args.sections if s not in SECTIONS]
    if bad:
        p.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    if args.repeats is None:
        args.repeats = 1 if args.quick else 5
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def _figure_from(d):
    if d.get("samples"):
        return Figure(d["samples"])
    f = Figure([d["median"]])
    f.lo, f.hi, f.n = d["min"], d["max"], d["repeats"]
    f.samples = []  # (a file from before the samples were kept: its ratios are ratios of medians)
    return f


def load_json(path):
    """(rows, profiles, meta) of an earlier run, from its BENCHMARKS.json."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    rows = []
    for r in data["rows"]:
        figs = {k: _figure_from(r[k]) if k in r else None for k in ("ours", "torch", "numpy", "jax")}
        target = TARGETS.get(r.get("key")) or (tuple(r["target"]) if r.get("target") else None)  # today's targets
        rows.append(Row(r["section"], r["name"], r["unit"], figs["ours"], figs["torch"], figs["numpy"],
                        better=r["better"], peak=r.get("peak"), target=target, key=r.get("key"), jax=figs["jax"]))
    return rows, data["profiles"], data["meta"]


def write_report(args, rows, profiles, meta):
    os.makedirs(args.out, exist_ok=True)
    chart = os.path.join(args.out, "BENCHMARKS.png")
    chart_ok = write_chart(rows, chart) if rows else False
    if not chart_ok and args.verbose:
        print("  chart skipped: matplotlib is not installed (pip install matplotlib)")
    notes = None
    if args.notes and os.path.exists(args.notes):
        with open(args.notes, encoding="utf-8") as f:
            notes = f.read()
    report = os.path.join(args.out, "BENCHMARKS.md")
    _atomic_write(report, render(rows, profiles, meta, "BENCHMARKS.png" if chart_ok else None, notes))
    if args.json and not args.from_json:
        data = {"meta": meta, "profiles": profiles,
                "rows": [{"section": r.section, "name": r.name, "unit": r.unit, "better": r.better,
                          "peak": r.peak, "target": list(r.target) if r.target else None, "key": r.key,
                          **{k: getattr(r, k).to_dict() for k in ("ours", "torch", "numpy", "jax") if getattr(r, k)},
                          "ratio": r.ratio(), **({"ratio_jax": r.ratio("jax")} if r.jax else {})} for r in rows]}
        _atomic_write(os.path.join(args.out, "BENCHMARKS.json"), json.dumps(data, indent=1))
    return report, (chart if chart_ok else None)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.from_json:
        rows, profiles, meta = load_json(args.from_json)
        report, chart = write_report(args, rows, profiles, meta)
        print(f"wrote {report}" + (f" and {chart}" if chart else "") + f" from {args.from_json}")
        return 0
    import numba
    import torch
    threads = numba.get_num_threads()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    load_start = os.getloadavg()
    if args.verbose:
        print(f"manualbp benchmarks: {threads} threads, sections {','.join(args.sections)}"
              f"{' (quick)' if args.quick else ''}", flush=True)
    peak = fma_probe(args.quick)
    if args.verbose:
        print(f"  FMA probe: {peak:.1f} GFLOP/s", flush=True)
    rows, profiles = [], {}
    with NumpyPeer(threads) as numpy_peer:
        blas = numpy_peer.info
        if args.verbose:
            print("  " + blas_line(blas), flush=True)
        if "matmul" in args.sections:
            rows += bench_matmul(args, peak, numpy_peer)
    if "conv" in args.sections:
        rows += bench_conv(args, peak)
    if "train" in args.sections:
        r, profiles = bench_train(args, peak)
        rows += r
    if "resnet" in args.sections:
        rows += bench_resnet(args)
    compile_times = {}
    if "startup" in args.sections:
        rows += bench_startup(args, threads, compile_times)
    if "memory" in args.sections:
        rows += bench_memory(args, threads)
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    meta = {"argv": list(sys.argv[1:] if argv is None else argv), "threads": threads, "peak": peak,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "machine": machine(), "versions": _versions(), "threading_layer": layer,
            "numpy_blas": blas, "torch_cpu_capability": _torch_capability(),
            "jax": {"installed": jax_twin.load() is not None, "xla_threads": jax_twin.xla_threads()},
            **({"compile_times": compile_times} if compile_times else {}),
            "load": " ".join(f"{v:.2f}" for v in load_start) + " (1, 5, 15 min); at the end "
                    + " ".join(f"{v:.2f}" for v in os.getloadavg())}
    report, chart = write_report(args, rows, profiles, meta)
    print(f"wrote {report}" + (f" and {chart}" if chart else "") + f" in {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
