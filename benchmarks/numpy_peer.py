"""NumPy's rows of the benchmark, timed in a child process that runs OpenBLAS with its own kernel choice.

OpenBLAS reads ``OPENBLAS_CORETYPE`` (which CPU's kernels to use) and ``OPENBLAS_L2_SIZE`` once, when
the library loads, which is when ``import numpy`` runs: removing them from ``os.environ`` afterwards
changes nothing.  So NumPy's products run in a child started without them, which answers one request
per line on its stdin.  The benchmark keeps alternating ours, torch and NumPy repeat by repeat: the
parent pauses, then asks the child for one timed block, and the child times it itself (a pipe round
trip per call would be counted otherwise).

The child also reports which kernel OpenBLAS picked, as ``threadpoolctl.threadpool_info()`` sees the
library NumPy loaded (the only BLAS in that process).
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")  # read by OpenBLAS at load time
BLAS_FIELDS = ("internal_api", "prefix", "version", "architecture", "threading_layer", "num_threads")

_CHILD = textwrap.dedent("""
    import json, os, sys, time
    import numpy as np

    def blas():
        try:
            import threadpoolctl
        except ImportError:
            return "threadpoolctl not installed"
        fields = json.loads(sys.argv[1])
        return [{k: d.get(k) for k in fields} for d in threadpoolctl.threadpool_info() if d.get("user_api") == "blas"]

    def say(obj):
        sys.stdout.write(json.dumps(obj) + "\\n")
        sys.stdout.flush()

    say({"blas": blas(), "env": {k: os.environ.get(k) for k in json.loads(sys.argv[2])}, "numpy": np.__version__})
    rng = np.random.default_rng(0)
    a = b = None
    for line in sys.stdin:
        cmd, *arg = line.split()
        if cmd == "size":  # the parent draws its matrices from the same generator in the same order
            n = int(arg[0])
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = rng.standard_normal((n, n)).astype(np.float32)
            say(0)
        elif cmd == "calls":  # warm-up, then how many calls make one block of about target_s seconds
            target_s, quick = float(arg[0]), arg[1] == "1"
            a @ b
            t = time.perf_counter()
            a @ b
            dt = max(time.perf_counter() - t, 1e-6)
            say(1 if quick else max(1, int(target_s / dt)))
        elif cmd == "block":  # one call to wake the threads, then k timed calls: seconds per call
            k = int(arg[0])
            a @ b
            t = time.perf_counter()
            for _ in range(k):
                a @ b
            say((time.perf_counter() - t) / k)
        else:
            break
""")


class NumpyPeer:
    """A NumPy process with OpenBLAS's own kernel choice and ``threads`` BLAS threads.

    ``info`` holds what the child reported: {"blas": [{field: value}] or a sentence, "env": the two
    variables as the child saw them (None: unset), "numpy": its version, "removed": the variables this
    process had set and the child did not get}.
    """

    def __init__(self, threads):
        env = dict(os.environ)
        self.removed = [k for k in BLAS_VARS if env.pop(k, None) is not None]
        env["OPENBLAS_NUM_THREADS"] = str(threads)  # the same thread count as the other libraries
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(BLAS_FIELDS), json.dumps(BLAS_VARS)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                     cwd=tempfile.gettempdir())
        self.info = self._read()
        self.info["removed"] = self.removed

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=30)
            raise RuntimeError(f"the NumPy benchmark child exited (status {self.proc.returncode})")
        return json.loads(line)

    def ask(self, *words):
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Remote:
    """One side of ``timed`` that times itself in the NumPy child: its blocks run there."""

    def __init__(self, peer):
        self.peer = peer

    def calls_for(self, target_s, quick):
        return self.peer.ask("calls", target_s, int(quick))

    def block(self, k):
        return self.peer.ask("block", k)


def blas_line(info):
    """One line for the report: which OpenBLAS kernel NumPy's rows ran on, and how that was made sure of."""
    if info is None:
        return "NumPy's BLAS: not measured"
    blas = info["blas"]
    if isinstance(blas, str):
        what = blas
    elif not blas:
        what = "threadpoolctl found no BLAS library"
    else:
        what = "; ".join(", ".join(f"{k} {d[k]}" for k in BLAS_FIELDS if d.get(k) is not None) for d in blas)
    removed = info.get("removed") or []
    how = f"started without {' and '.join(BLAS_VARS)}" + (
        f" (removed: this process had {' and '.join(removed)} set)" if removed else "")
    return f"NumPy's BLAS, as threadpoolctl reports it in the process that times NumPy ({how}): {what}"
