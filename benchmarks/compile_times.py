"""How long each kernel family of ``manualbp/kernels/cpu/`` takes to compile for a first training step.

Run in a fresh process whose NUMBA_CACHE_DIR is empty (``benchmarks/run.py``'s ``startup`` section
starts it):

    NUMBA_CACHE_DIR=$(mktemp -d) python -c "from benchmarks.compile_times import main; main()" lenet5 64

It listens to Numba's ``numba:compile`` events (one per specialisation Numba compiles rather than loads
from its cache) while it builds the model and runs one training step, and charges each compilation's
own time, less the compilations of our functions nested in it (a kernel compiles the helpers it calls),
to the module that defines the compiled function; Numba's own overloads that a kernel uses (``np.empty``,
``min``) count as that kernel's.  Modules are grouped into families by their file name (``conv_packed``
is a convolution, ``tile`` belongs to the matrix products).  The time in no compilation (imports, the
arithmetic itself, Numba's cache writes) is the rest of the step.  Prints one JSON line.
"""
import json
import os
import subprocess
import sys
import tempfile
import time


def family_of(module):
    """The kernel family of a module name (``manualbp.training.compile_progress.kernel_family``, the grouping the
    command line's first run announces), or ``other: <module>`` outside kernels/cpu."""
    from manualbp.training.compile_progress import kernel_family
    return kernel_family(module) or f"other: {module}"


def _listener():
    from numba.core import event

    class SelfTimes(event.Listener):
        """Own seconds and count of compilations per family (a nested compilation is its own)."""

        def __init__(self):
            self.stack, self.seconds, self.count, self.modules = [], {}, {}, {}

        def on_start(self, ev):
            self.stack.append([time.perf_counter(), 0.0])

        def on_end(self, ev):
            start, nested = self.stack.pop()
            spent = time.perf_counter() - start
            py_func = getattr(ev.data["dispatcher"], "py_func", None)
            module = getattr(py_func, "__module__", None)
            fam = family_of(module)
            if self.stack and not fam.startswith("other: "):
                self.stack[-1][1] += spent  # ours: not the enclosing kernel's own time
            elif self.stack:
                return  # Numba's own overloads (np.empty, min, ...) a kernel of ours uses: that kernel's time
            self.seconds[fam] = self.seconds.get(fam, 0.0) + spent - nested
            self.count[fam] = self.count.get(fam, 0) + 1
            self.modules.setdefault(fam, set()).add((module or "?").rsplit(".", 1)[-1])

    return event, SelfTimes()


def measure(model_name="lenet5", batch=64):
    """{"families": {family: {"seconds", "compiled", "modules"}}, "compile_s", "step_s"}."""
    t0 = time.perf_counter()
    event, listener = _listener()
    event.register("numba:compile", listener)
    try:
        import numpy as np

        from manualbp import models, nn, optim
        from manualbp.network import Network
        rng = np.random.default_rng(0)
        x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, batch)
        model = models.build(model_name)
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        Network(model).train_step(x, y, nn.CrossEntropyLoss(), opt)
    finally:
        event.unregister("numba:compile", listener)
    step_s = time.perf_counter() - t0
    fams = {f: {"seconds": s, "compiled": listener.count[f], "modules": sorted(listener.modules[f])}
            for f, s in sorted(listener.seconds.items(), key=lambda kv: -kv[1])}
    return {"families": fams, "compile_s": sum(listener.seconds.values()), "step_s": step_s}


def compile_child(root, model, batch, threads, cache_dir):
    """``measure``'s figures from a fresh process on ``cache_dir``, with the checkout ``root`` importable."""
    e = dict(os.environ)
    e["PYTHONPATH"] = root + os.pathsep + e.get("PYTHONPATH", "")
    e["NUMBA_NUM_THREADS"] = str(threads)
    e["NUMBA_CACHE_DIR"] = cache_dir
    proc = subprocess.run([sys.executable, "-c", "from benchmarks.compile_times import main; main()", model, str(batch)],
                          check=False, capture_output=True, text=True, env=e, cwd=tempfile.gettempdir(), timeout=900)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("COMPILE ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"compile-time child ({model}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("COMPILE "):])


def compile_table(ct):
    """Markdown lines: the table of ``measure``'s figures for the report's start-up section."""
    out = [f"### Compile time per kernel family (empty cache): first {ct['model']} training step, batch {ct['batch']}",
           "", ("Seconds Numba spent compiling the kernels of each family of `manualbp/kernels/cpu/` (each "
                "compilation's own time, the helpers it compiles from other families charged to theirs), measured "
                "once, in the fresh process that fills the cache for the rows above; the share is of the "
                f"{ct['step_s']:.1f} s from that process's first import (Numba, NumPy, manualbp) to the end of the "
                "step."), "",
           "| family | modules | specialisations compiled | seconds | share of the step |", "|---|---|---|---|---|"]
    for fam, d in ct["families"].items():
        out.append(f"| {fam} | {', '.join(d['modules'])} | {d['compiled']} | {d['seconds']:.2f} | "
                   f"{100 * d['seconds'] / ct['step_s']:.0f}% |")
    rest = ct["step_s"] - ct["compile_s"]
    out.append(f"| all compilation | | {sum(d['compiled'] for d in ct['families'].values())} | {ct['compile_s']:.2f} | "
               f"{100 * ct['compile_s'] / ct['step_s']:.0f}% |")
    out.append(f"| the rest (imports, building the model, the step's arithmetic, cache writes) | | | {rest:.2f} | "
               f"{100 * rest / ct['step_s']:.0f}% |")
    return out + [""]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    model_name = argv[0] if argv else "lenet5"
    batch = int(argv[1]) if len(argv) > 1 else 64
    print("COMPILE " + json.dumps(measure(model_name, batch)), flush=True)


if __name__ == "__main__":
    main()
