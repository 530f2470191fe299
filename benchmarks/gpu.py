"""manualbp's CUDA kernels against PyTorch (cuBLAS, cuDNN) on the same GPU, one command away.

    python benchmarks/gpu.py                  # everything; writes the "GPU" section of BENCHMARKS_GPU.md
    python benchmarks/gpu.py --only matmul    # some sections: matmul, conv, train
    python benchmarks/gpu.py --quick          # small sizes, few repeats (a smoke run)
    python benchmarks/gpu.py --out /tmp/b.md  # another file
    NUMBA_ENABLE_CUDASIM=1 python benchmarks/gpu.py --only counts   # no GPU needed (see "counts")

Sections:
  matmul  GFLOP/s of an n x n x n float32 product, n = 1024, 2048, 4096, 8192, ours (the tiled kernel of
          manualbp/kernels/cuda/gemm.py) vs torch's cuBLAS with TF32 off (full float32, as ours).
  conv    the three 5x5, padding-2 convolutions of the CIFAR-10 net at batch 64: forward, grad-input and
          grad-weight, ours (implicit GEMM) vs cuDNN (TF32 off), in GFLOP/s.
  train   images per second of whole training steps (host batch -> GPU, forward, cross-entropy, backward,
          SGD with momentum, the loss read back) of LeNet-5 and the CIFAR-10 net at batch 64 and 256:
          ``Network.train_step`` on a model moved with ``.to("cuda")`` vs the same five lines in torch;
          beside them, our step's kernel launches, allocations and host microseconds (see counts).
  counts  what one of our training steps asks of the GPU, counted with ``manualbp.cuda.counting``:
          kernel launches, device allocations, copies each way and, on a GPU, the host's own time per step
          (the wall time less the time spent waiting for the GPU in copies back).  Needs no torch, and runs
          under numba's CUDA simulator too, where the counts are the same (the same Python code launches
          the same kernels) but kernels are slow, so it takes batch 1 there; it writes its own section,
          "## Launches per training step".

Every figure is the median of ``--repeats`` (default 7, at least 5) timed repeats after a warm-up
(which also compiles our kernels); each repeat times enough calls to last about 50 ms, between CUDA
events (or a synchronize for the training steps).  Ours and torch alternate inside each repeat.
Without a CUDA GPU the script exits with status 2 and says what is missing.
"""
import argparse
import contextlib
import datetime
import os
import statistics
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, ROOT)

SECTIONS = ("matmul", "conv", "train", "counts")
COUNT_MODELS = ("lenet5", "cifar10net", "resnet20")
MATMUL_SIZES = (1024, 2048, 4096, 8192)
CIFAR_CONVS = ((3, 32, 32), (32, 32, 16), (32, 64, 8))  # (C, O, H=W) of the CIFAR-10 net's 5x5, pad-2 convs
TRAIN_BATCHES = (64, 256)
MODELS = ("lenet5", "cifar10net")
DEFAULT_OUT = os.path.join(ROOT, "BENCHMARKS_GPU.md")


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Time manualbp's CUDA kernels and training steps against PyTorch on this GPU; writes the "
                    "'GPU' section of BENCHMARKS_GPU.md.  Needs a CUDA GPU (exits with status 2 without one).")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections to run, of {', '.join(SECTIONS)} (default: all)")
    p.add_argument("--repeats", type=int, default=7, help="timed repeats per figure; the median is reported "
                                                          "(at least 5; default 7)")
    p.add_argument("--quick", action="store_true", help="small sizes and 5 short repeats: a smoke run")
    p.add_argument("--out", default=DEFAULT_OUT, help="the Markdown file whose 'GPU' section is (re)written "
                                                      "(default: BENCHMARKS_GPU.md in the checkout)")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        p.error(f"unknown section(s) {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    args.repeats = max(5, args.repeats)
    return args


# --- timing ---------------------------------------------------------------------------------------------

def _time_events(fn, calls, cuda, torch):
    """Seconds per call of ``fn`` over ``calls`` calls, between CUDA events (ours: numba's, torch: torch's)."""
    if torch is None:
        start, stop = cuda.event(), cuda.event()
        start.record()
        for _ in range(calls):
            fn()
        stop.record()
        stop.synchronize()
        return start.elapsed_time(stop) / 1e3 / calls
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(calls):
        fn()
    stop.record()
    stop.synchronize()
    return start.elapsed_time(stop) / 1e3 / calls


def _time_wall(fn, calls, sync):
    sync()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    sync()
    return (time.perf_counter() - t) / calls


def timed(fns, repeats, target_s):
    """{name: median seconds per call} for ``fns = {name: (fn, timer)}``, timed in alternation per repeat.

    ``timer(fn, calls)`` returns seconds per call.  One warm-up call each, then the number of calls per
    repeat is set so that one repeat lasts about ``target_s``.
    """
    calls = {}
    for name, (fn, timer) in fns.items():
        fn()  # warm-up: compiles our kernels, lets cuDNN pick its algorithm
        one = timer(fn, 1)
        calls[name] = max(1, int(target_s / max(one, 1e-7)))
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, (fn, timer) in fns.items():
            samples[name].append(timer(fn, calls[name]))
    return {name: statistics.median(v) for name, v in samples.items()}


# --- sections -------------------------------------------------------------------------------------------

def _ours(cuda):
    return lambda f, calls: _time_events(f, calls, cuda, None)


def _theirs(cuda, torch):
    return lambda f, calls: _time_events(f, calls, cuda, torch)


def _matmul_case(args, cuda, torch, gpu, n):
    rng = np.random.default_rng(n)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    da, db = cuda.to_device(a), cuda.to_device(b)
    dc = cuda.device_array((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
    tc = torch.empty((n, n), device="cuda")
    t = timed({"ours": (lambda: gpu.matmul(da, db, out=dc), _ours(cuda)),
               "torch": (lambda: torch.matmul(ta, tb, out=tc), _theirs(cuda, torch))}, args.repeats, args.target_s)
    flops = 2.0 * n ** 3
    diff = float(np.abs(dc.copy_to_host() - tc.cpu().numpy()).max())
    return f"{n} x {n} x {n}", flops / t["ours"] / 1e9, flops / t["torch"] / 1e9, diff


def bench_matmul(args, cuda, torch, gpu):
    sizes = (256, 512) if args.quick else MATMUL_SIZES
    rows = []
    for n in sizes:
        rows.append(_matmul_case(args, cuda, torch, gpu, n))
        print(f"matmul n={n}: ours {rows[-1][1]:.0f} GFLOP/s, cuBLAS {rows[-1][2]:.0f} GFLOP/s", flush=True)
    lines = ["### Matrix product (float32, TF32 off)", "",
             "| size | ours GFLOP/s | cuBLAS GFLOP/s | ours / cuBLAS | max abs diff |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {s} | {o:.0f} | {c:.0f} | {o / c:.2f} | {d:.1e} |" for s, o, c, d in rows]
    return lines


def _conv_passes(cuda, torch, gpu, batch, c, o, hw):
    """{pass: (ours, theirs)} callables for one 5x5, padding-2 convolution."""
    rng = np.random.default_rng(c * o)
    x = rng.standard_normal((batch, c, hw, hw), dtype=np.float32)
    w = (rng.standard_normal((o, c, 5, 5)) * 0.1).astype(np.float32)
    bias = rng.standard_normal(o).astype(np.float32)
    gy = rng.standard_normal((batch, o, hw, hw), dtype=np.float32)
    dx, dw, db, dgy = (cuda.to_device(v) for v in (x, w, bias, gy))
    tx, tw, tb, tgy = (torch.from_numpy(v).cuda() for v in (x, w, bias, gy))
    backward = torch.ops.aten.convolution_backward  # what autograd calls: cuDNN's backward kernels

    def t_backward(mask):
        return backward(tgy, tx, tw, None, [1, 1], [2, 2], [1, 1], False, [0, 0], 1, mask)

    return {"forward": (lambda: gpu.conv2d_forward(dx, dw, db, 1, 2),
                        lambda: torch.nn.functional.conv2d(tx, tw, tb, 1, 2)),
            "grad-input": (lambda: gpu.conv2d_grad_input(dgy, dw, x.shape, 1, 2),
                           lambda: t_backward([True, False, False])),
            "grad-weight": (lambda: gpu.conv2d_grad_weight(dgy, dx, w.shape, 1, 2),
                            lambda: t_backward([False, True, False]))}


def bench_conv(args, cuda, torch, gpu):
    batch = 8 if args.quick else 64
    rows = []
    for c, o, hw in CIFAR_CONVS:
        flops = 2.0 * batch * o * hw * hw * c * 25
        for pass_name, (ours, theirs) in _conv_passes(cuda, torch, gpu, batch, c, o, hw).items():
            t = timed({"ours": (ours, _ours(cuda)), "torch": (theirs, _theirs(cuda, torch))},
                      args.repeats, args.target_s)
            rows.append((f"{c}->{o} @ {hw}x{hw}", pass_name, flops / t["ours"] / 1e9, flops / t["torch"] / 1e9,
                         t["ours"] * 1e3, t["torch"] * 1e3))
            print(f"conv {rows[-1][0]} {pass_name}: ours {rows[-1][2]:.0f}, cuDNN {rows[-1][3]:.0f} GFLOP/s",
                  flush=True)
    lines = [f"### The CIFAR-10 net's convolutions (5x5, padding 2, batch {batch}; cuDNN with TF32 off)", "",
             "| conv | pass | ours GFLOP/s | cuDNN GFLOP/s | ours / cuDNN | ours ms | cuDNN ms |",
             "|---|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {s} | {p} | {o:.0f} | {c:.0f} | {o / c:.2f} | {mo:.3f} | {mc:.3f} |"
              for s, p, o, c, mo, mc in rows]
    return lines


def _torch_twin(torch, model):
    """The same Sequential in torch, with our weights (the state_dict keys match by construction)."""
    from manualbp import nn

    tnn = torch.nn
    layers = []
    for layer in model:
        if isinstance(layer, nn.Conv2d):
            layers.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                                     layer.padding, bias=layer.bias is not None))
        elif isinstance(layer, nn.Linear):
            layers.append(tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None))
        elif isinstance(layer, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, nn.Flatten):
            layers.append(tnn.Flatten(layer.start_dim, layer.end_dim))
        else:
            layers.append(getattr(tnn, type(layer).__name__)())
    twin = tnn.Sequential(*layers)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    return twin.cuda()


def _train_steps(torch, name, batch):
    """(ours, theirs): one training step each of the same model, from the same weights, on the same batch."""
    from manualbp import Network, models, nn, optim
    from manualbp.device import item

    rng = np.random.default_rng(batch)
    x = rng.random((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = getattr(models, name)()
    twin = _torch_twin(torch, model)
    net = Network(model, device="cuda")
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    t_loss, t_opt = torch.nn.CrossEntropyLoss(), torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.from_numpy(x).pin_memory(), torch.from_numpy(y).pin_memory()

    def ours():
        loss, _ = net.train_step(x, y, loss_fn, opt)  # the batch goes up through the pinned buffer
        item(loss)  # the loss read back, as fit does for its log

    def theirs():
        xb, yb = tx.cuda(non_blocking=True), ty.cuda(non_blocking=True)
        t_opt.zero_grad()
        loss = t_loss(twin(xb), yb)
        loss.backward()
        t_opt.step()
        loss.item()

    return ours, theirs


WARMUP_STEPS = 3  # the first step lays SGD's parameters out flat (from the second on) and fills the buffer cache


def step_counts(step, cuda, steps=5):
    """Per step of ``step()`` (after WARMUP_STEPS warm-up calls): launches, allocations, bytes, uploads,
    downloads, and host_us, the wall time less the time spent waiting for the GPU (manualbp.cuda.Counts.wait_s)."""
    from manualbp.cuda import counting

    for _ in range(WARMUP_STEPS):
        step()
    cuda.synchronize()
    with counting() as c:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        cuda.synchronize()
        wall = time.perf_counter() - start
    return {"launches": c.total_launches / steps, "allocations": c.allocations / steps, "bytes": c.bytes / steps,
            "uploads": c.uploads / steps, "downloads": c.downloads / steps,
            "host_us": (wall - c.wait_s) / steps * 1e6, "kernels": {k: v / steps for k, v in c.launches.items()}}


def our_step(name, batch):
    """One training step of ``models.<name>()`` on the GPU, as ``bench_train`` times it (no torch needed)."""
    from manualbp import Network, models, nn, optim
    from manualbp.device import item

    rng = np.random.default_rng(batch)
    x = rng.random((batch, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    net = Network(getattr(models, name)(), device="cuda")
    loss_fn, opt = nn.CrossEntropyLoss(), optim.SGD(net.parameters(), lr=0.01, momentum=0.9)

    def ours():
        loss, _ = net.train_step(x, y, loss_fn, opt)
        item(loss)

    return ours


@contextlib.contextmanager
def _launches_skipped(cuda):
    """Under the simulator: every kernel launch returns at once without running, and new device arrays
    start as zeros.  The simulator runs each CUDA thread as a Python thread (a ResNet-20 step would take
    hours); the counts do not need the results, since the only value a step reads back before its last
    launch is the loss for the finite check, which zeros pass."""
    import numba.cuda.simulator.kernel as sim_kernel

    allocate, getitem = cuda.device_array, sim_kernel.FakeCUDAKernel.__getitem__

    def zeros(*args, **kwargs):
        a = allocate(*args, **kwargs)
        a.copy_to_device(np.zeros(a.shape, a.dtype))
        return a

    cuda.device_array = zeros
    sim_kernel.FakeCUDAKernel.__getitem__ = lambda kernel, config: (lambda *args: None)
    try:
        yield
    finally:
        cuda.device_array, sim_kernel.FakeCUDAKernel.__getitem__ = allocate, getitem


def bench_counts(args, cuda, torch, gpu):
    simulated = _simulated()
    batch, steps = 64, (3 if simulated else 20)
    rows = []
    for name in COUNT_MODELS:
        with _launches_skipped(cuda) if simulated else contextlib.nullcontext():
            c = step_counts(our_step(name, batch), cuda, steps)
        if simulated:
            c["uploads"] -= c["allocations"]  # the zero fill of each new array is an upload of its own
        rows.append((name, c))
        print(f"counts {name} batch {batch}: {c['launches']:.0f} launches, {c['allocations']:.0f} allocations, "
              f"{c['downloads']:.0f} downloads, host {c['host_us']:.0f} us", flush=True)
    where = ("numba's CUDA simulator, with the kernels' launches counted but not run (see `_launches_skipped` in benchmarks/gpu.py)"
             if simulated else "the GPU above")
    lines = ["## Launches per training step", "",
             (f"`python benchmarks/gpu.py --only counts`, on {where}: a training step of each model at batch "
              f"{batch} (forward, cross-entropy, backward, SGD with momentum, batch upload and loss read back), "
              f"counted with `manualbp.cuda.counting` over {steps} steps after {WARMUP_STEPS} warm-up steps."
              + (" No host time: the simulator's host is not a GPU's." if simulated
                 else " Host µs: the step's wall time less the time spent waiting for the GPU.")), "",
             "| model | launches | allocations | MiB allocated | uploads | downloads |"
             + ("" if simulated else " host µs |"),
             "|---|---:|---:|---:|---:|---:|" + ("" if simulated else "---:|")]
    for name, c in rows:
        lines.append(f"| {name} | {c['launches']:.0f} | {c['allocations']:.0f} | {c['bytes'] / 2**20:.2f} | "
                     f"{c['uploads']:.0f} | {c['downloads']:.0f} |" + ("" if simulated else f" {c['host_us']:.0f} |"))
    lines += ["", "Launches by kernel, per step:", ""]
    for name, c in rows:
        kernels = ", ".join(f"{k.lstrip('_')} {v:g}" for k, v in sorted(c["kernels"].items(), key=lambda t: -t[1]))
        lines.append(f"- {name}: {kernels}")
    return lines


def _simulated():
    from numba.core.config import ENABLE_CUDASIM

    return bool(ENABLE_CUDASIM)


def bench_train(args, cuda, torch, gpu):
    batches = (16,) if args.quick else TRAIN_BATCHES
    rows = []
    for name in MODELS:
        for batch in batches:
            ours, theirs = _train_steps(torch, name, batch)
            t = timed({"ours": (ours, lambda f, n: _time_wall(f, n, cuda.synchronize)),
                       "torch": (theirs, lambda f, n: _time_wall(f, n, torch.cuda.synchronize))},
                      args.repeats, args.target_s * 4)
            c = step_counts(ours, cuda, 10)
            rows.append((name, batch, batch / t["ours"], batch / t["torch"], c))
            print(f"train {name} batch {batch}: ours {rows[-1][2]:.0f} img/s, torch {rows[-1][3]:.0f} img/s, "
                  f"{c['launches']:.0f} launches, host {c['host_us']:.0f} us per step", flush=True)
    lines = [("### Training steps (images/s; forward, cross-entropy, backward, SGD momentum 0.9, batch upload "
              "and loss read back included)"), "",
             ("Launches, allocations and host µs are per step of ours (`manualbp.cuda.counting`; host µs: the "
              "wall time less the time spent waiting for the GPU)."), "",
             "| model | batch | ours img/s | torch img/s | ours / torch | launches | allocations | host µs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {m} | {b} | {o:.0f} | {t:.0f} | {o / t:.2f} | {c['launches']:.0f} | {c['allocations']:.0f} | "
              f"{c['host_us']:.0f} |" for m, b, o, t, c in rows]
    return lines


# --- the report -----------------------------------------------------------------------------------------

def write_section(path, lines):
    """Replace (or add) the section of ``path`` whose heading is ``lines[0]`` ("## GPU", ...), atomically:
    a temporary file, then os.replace."""
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            old = f.read()
    before, after = old, ""
    heading = lines[0] + "\n"
    start = old.find("\n" + heading) + 1 if "\n" + heading in old else (0 if old.startswith(heading) else -1)
    if start >= 0:
        before = old[:start]
        end = old.find("\n## ", start + 1)
        after = old[end + 1:] if end >= 0 else ""
    if not before.strip():
        before = "# manualbp on the GPU\n\nWritten by `python benchmarks/gpu.py`.\n\n"
    text = before.rstrip("\n") + "\n\n" + "\n".join(lines).rstrip("\n") + "\n" + ("\n" + after if after else "")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".gpu-bench-", suffix=".md", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def main(argv=None):
    args = parse_args(argv)
    args.target_s = 0.01 if args.quick else 0.05
    from manualbp.device import require_cuda

    try:
        cuda = require_cuda("benchmarks/gpu.py")
    except RuntimeError as exc:
        print(f"benchmarks/gpu.py: {exc}", file=sys.stderr)
        return 2
    from manualbp.kernels import cuda as gpu

    compared = [s for s in args.sections if s != "counts"]  # the sections that time torch beside us
    if "counts" in args.sections:  # first: it needs neither torch nor, under the simulator, a GPU
        write_section(args.out, bench_counts(args, cuda, None, gpu))
        print(f"wrote the launch counts of {args.out}")
    if not compared:
        return 0
    if _simulated():
        print("benchmarks/gpu.py: under the CUDA simulator only the 'counts' section runs", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("benchmarks/gpu.py: torch is needed for the comparison (pip install torch)", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: torch sees no CUDA device, so there is nothing to compare with", file=sys.stderr)
        return 2
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as our kernels compute
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True

    device = cuda.get_current_device()
    name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
    lines = ["## GPU", "",
             (f"{name} (compute capability {'.'.join(map(str, device.compute_capability))}); torch "
              f"{torch.__version__}, cuDNN {torch.backends.cudnn.version()}; "
              f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}; median of {args.repeats} repeats after a "
              f"warm-up{' (--quick: small sizes)' if args.quick else ''}."), ""]
    for section in compared:
        lines += {"matmul": bench_matmul, "conv": bench_conv, "train": bench_train}[section](args, cuda, torch, gpu)
        lines.append("")
    write_section(args.out, lines)
    print(f"wrote the GPU section of {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
