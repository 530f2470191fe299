"""Every line ``fit`` prints (``Progress``), and the word about Numba compiling the kernels on a first run."""
import importlib
import pickle
import pkgutil
import sys
import time

from .batches import length


class Progress:
    """Every line ``fit`` prints, in the tutorials' words.

    Per step, every ``log_interval`` batches, the tutorials' line, computed as they compute it:
    ``Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} ({100. * batch_idx /
    len(train_loader):.0f}%)]\\tLoss: {loss:.6f}``; per epoch: ``Epoch 3: running loss ...`` and, with
    validation data, ``Validation set: ...``.  On a terminal (or with ``bar=True``) a tqdm bar counts the
    batches, and the step lines go through the bar (``bar.write``) so that they do not tear it.  With
    ``compiles=True`` (the Numba kernels run the steps) it says so when the first step will compile them,
    and how long that took (``CompileNote``).  With ``verbose=False`` nothing is printed at all.
    """

    def __init__(self, verbose=True, bar=None, log_interval=100, compiles=False):
        self.verbose, self.want_bar, self.log_interval = verbose, bar, log_interval
        self._bar, self._write = None, print
        self.samples = self.steps = None
        self._compile = CompileNote(self) if verbose and compiles else None

    def say(self, message):
        if self.verbose:
            self._write(message)
            sys.stdout.flush()

    def start_epoch(self, epoch, loader):
        """Open the epoch's bar: on a terminal (or with bar=True), when tqdm is installed and verbose."""
        self.samples, self.steps = loader.num_samples, length(loader)
        self._bar, self._write = None, print
        if self.verbose and self.want_bar is not False and (
                self.want_bar is not None or (hasattr(sys.stdout, "isatty") and sys.stdout.isatty())):
            try:
                from tqdm.auto import tqdm
            except ImportError:   # no tqdm: plain lines
                pass
            else:
                self._bar = tqdm(total=self.steps, desc=f"Epoch {epoch}", unit="batch", leave=False,
                                 file=sys.stdout)
        self._write = self._bar.write if self._bar is not None else print
        if self._compile is not None:
            self._compile.before_step()

    def step(self, epoch, batch_idx, data_len, loss):
        """After step ``batch_idx`` (counted from 0) of ``epoch``, on a batch of ``data_len`` samples."""
        if self._compile is not None:
            self._compile = self._compile.after_step()
        if self.verbose and self.log_interval and batch_idx % self.log_interval == 0:
            samples = "?" if self.samples is None else self.samples
            percent = "?" if not self.steps else f"{100. * batch_idx / self.steps:.0f}"
            self._write(f"Train Epoch: {epoch} [{batch_idx * data_len}/{samples} ({percent}%)]\tLoss: {loss:.6f}")
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            self._bar.update(1)

    def stop_bar(self):
        """Close the bar (the epoch ended, or is being left early)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._write = print

    def end_epoch(self, row):
        acc = "" if row["train_accuracy"] is None else f", train accuracy {100 * row['train_accuracy']:.2f}%"
        self.say(f"Epoch {row['epoch']}: running loss {row['running_loss']:.4f} (mean {row['train_loss']:.6f})"
                 f"{acc}, lr {row['lr']:.6g}, {row['seconds']:.1f}s, {row['images_per_sec'] or 0:.0f} images/s")

    def validation(self, result):
        """``result`` is ``Network.evaluate``'s dict."""
        acc = "" if result["accuracy"] is None else (
            f", Accuracy: {result['correct']}/{result['total']} ({100 * result['accuracy']:.2f}%)")
        self.say(f"Validation set: Average loss: {result['loss']:.4f}{acc}")


class CompileNote:
    """Numba compiles a kernel the first time it runs and keeps the machine code in its cache on disk, so the
    first run of manualbp spends 20-40 s compiling before its first step finishes.  When that cache is empty
    (``kernel_cache_is_empty``) this says so before the first step, and after it how long it took.  When the
    cache held some kernels but the first step still took over 2 s and five times the second, it says
    afterwards that the time went to compiling the kernels that were missing."""

    def __init__(self, log):
        self.log, self.cold, self.times, self._start = log, False, [], None

    def before_step(self):
        if self._start is None and not self.times:
            self.cold = kernel_cache_is_empty()
            if self.cold:
                self.log.say("compiling kernels (first run only) ...")
        self._start = time.perf_counter()

    def after_step(self):
        """Called after each step; returns itself while it still has something to say, then None."""
        self.times.append(time.perf_counter() - self._start)
        if self.cold:
            self.log.say(f"compiled in {self.times[0]:.1f}s (Numba caches the kernels: later runs start at once)")
            return None
        if len(self.times) < 2:
            return self
        first, second = self.times
        if first > 2 and first > 5 * second:
            self.log.say(f"the first step took {first:.1f}s: Numba compiled the kernels it had not cached yet")
        return None


def kernel_cache_is_empty():
    """True when Numba's on-disk cache holds no compiled code for any of manualbp's CPU kernels (a new
    install, a cleared cache, another NUMBA_CACHE_DIR): the next step compiles them all.  Reads only the
    small index file of each kernel; False when it cannot tell."""
    try:
        from ..kernels import cpu
        found = False
        for info in pkgutil.iter_modules(cpu.__path__):
            module = importlib.import_module(f"{cpu.__name__}.{info.name}")
            for kernel in vars(module).values():
                index = getattr(getattr(kernel, "_cache", None), "_cache_file", None)
                if index is not None and getattr(kernel, "__module__", None) == module.__name__:
                    found = True
                    if index._load_index():
                        return False
        return found
    except (AttributeError, ImportError, OSError, EOFError, TypeError, ValueError, pickle.UnpicklingError):
        return False   # another numba's internals: say nothing rather than something wrong
