"""SIGKILL a training process at random moments, 20 times: the checkpoint on disk always loads, and
resuming from it ends exactly where the uninterrupted run ends (weights, BatchNorm's running statistics,
Adam's state and the StepLR schedule all travel in the checkpoint).

The child (tests/reliability_child.py) is tiny: three steps per epoch, then a checkpoint write of
about 100 kB with two fsyncs, so a large share of its time -- and of the kills -- falls inside
``checkpoint.save``.  A kill inside a write leaves a ``.last.npz.*.tmp`` file behind; those are
counted to show that the writes were hit, not only the arithmetic between them.  Half of the kills come
at a random moment of the run, half a random 0-0.6 ms after a write has begun.
"""
import os
import random
import select
import signal
import subprocess
import sys
import time

import numpy as np

from manualbp import checkpoint

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reliability_child as child

KILLS = 20
MAX_EPOCHS = 2000     # the child never gets that far: it is killed first
EXTRA_EPOCHS = 2      # resume this many epochs past the killed run's last checkpoint


def _reference_snapshots(n_epochs):
    """The uninterrupted run's weights after every epoch, in this process."""
    snaps = {}

    def keep(network, epoch, logs):
        snaps[epoch] = {k: v.copy() for k, v in network.state_dict().items()}

    net, opt = child.build()
    child.fit(net, opt, n_epochs, callbacks=[keep])
    return snaps


def _start(out):
    return subprocess.Popen([sys.executable, os.path.join(HERE, "reliability_child.py"), str(out),
                             "--epochs", str(MAX_EPOCHS), "--ready"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                break
    proc.kill()
    raise AssertionError(f"child never became ready: {proc.stderr.read()[-3000:]}")


def _writing(out):
    return any(name.endswith(".tmp") for name in os.listdir(out))


def _wait_for_a_write(out, proc, skip, timeout=30):
    """Let ``skip`` checkpoint writes pass, then return as soon as the next one begins (its temporary
    file appears in ``out``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if _writing(out):
            if skip == 0:
                return
            skip -= 1
            while _writing(out) and time.monotonic() < deadline:
                pass
    raise AssertionError("the child wrote no checkpoint")


def test_sigkill_during_checkpoint_writes_never_leaves_a_bad_checkpoint(tmp_path):
    rnd = random.Random(20240607)
    results = []
    for i in range(KILLS):
        out = tmp_path / f"run{i}"
        proc = _start(out)
        try:
            _wait_ready(proc)
            if i % 2:
                time.sleep(rnd.uniform(0.0, 0.4))      # any moment of the run
            else:
                _wait_for_a_write(out, proc, skip=rnd.randint(0, 6))   # a moment inside a checkpoint write
                time.sleep(rnd.uniform(0.0, 0.0006))   # a write takes about 1.3 ms here
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL, "the child finished before it was killed"
        header, _ = checkpoint.read(out / "last.npz")     # raises if the file is damaged
        checkpoint.read(out / "best.npz")
        leftovers = [p for p in os.listdir(out) if p.endswith(".tmp")]
        results.append((header["epoch"], out / "last.npz", bool(leftovers)))

    last = max(epoch for epoch, _, _ in results) + EXTRA_EPOCHS
    reference = _reference_snapshots(last)
    for epoch, path, _ in results:
        net, opt = child.build()
        child.fit(net, opt, epoch + EXTRA_EPOCHS, resume=path)
        want = reference[epoch + EXTRA_EPOCHS]
        for k, v in net.state_dict().items():
            assert np.array_equal(v, want[k]), f"resumed from epoch {epoch}: {k} differs from the uninterrupted run"
    mid_write = sum(hit for _, _, hit in results)
    print(f"{KILLS} kills at epochs {sorted(e for e, _, _ in results)}; {mid_write} inside a checkpoint write")
    assert mid_write >= 3, "too few kills landed inside a checkpoint write: the test did not test what it claims"
