"""Which families of kernels Numba is compiling, named as it starts each: the progress of a first run.

Numba compiles a kernel the first time it is called and keeps the machine code in its cache, so a first run
of manualbp spends 20-40 s compiling (the convolutions and the matrix products take most of it;
BENCHMARKS.md has the time per family).  ``announce_families`` listens to Numba's ``numba:compile`` events,
one per function it compiles rather than loads from its cache, and names each family of
``manualbp/kernels/cpu/`` the first time one of its functions is compiled, so the wait shows what it is
waiting for.  ``benchmarks/compile_times.py`` groups its timings by the same families.
"""
import contextlib

CPU_PACKAGE = "manualbp.kernels.cpu."
# kernels/cpu module -> family; a module not listed is a family of its own
FAMILIES = {"conv": "conv", "conv_packed": "conv", "conv_direct": "conv", "conv_im2col": "conv", "conv_pad": "conv",
            "gemm": "gemm", "gemm_dot": "gemm", "gemm_packed": "gemm", "tile": "gemm",
            "pool": "pool", "pooling_avg": "pool", "adaptive": "pool",
            "norm": "norm", "norm_relu": "norm", "common": "common", "heap": "common"}

__all__ = ["CPU_PACKAGE", "FAMILIES", "announce_families", "kernel_family"]


def kernel_family(module):
    """The family of a module of ``manualbp/kernels/cpu/`` by its dotted name (``manualbp.kernels.cpu.tile`` ->
    ``gemm``); None for any other module (Numba's own functions, the caller's)."""
    if not module or not module.startswith(CPU_PACKAGE):
        return None
    name = module[len(CPU_PACKAGE):]
    return FAMILIES.get(name, name)


@contextlib.contextmanager
def announce_families(say):
    """Within the block, ``say(family)`` the first time Numba compiles a function of each kernel family (nothing
    for a kernel loaded from the cache).  Yields the list of the families named, in order."""
    from numba.core import event

    named = []

    class _Announce(event.Listener):
        def on_start(self, ev):
            py_func = getattr(ev.data.get("dispatcher"), "py_func", None)
            family = kernel_family(getattr(py_func, "__module__", None))
            if family is not None and family not in named:
                named.append(family)
                say(family)

        def on_end(self, ev):
            pass

    listener = _Announce()
    event.register("numba:compile", listener)
    try:
        yield named
    finally:
        event.unregister("numba:compile", listener)
