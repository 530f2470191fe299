"""Where the numbers live: the CPU (NumPy arrays) or a CUDA GPU (numba.cuda device arrays).

Derivation: derivations/11-gpu-tiled-matmul.md (the kernels a model on the GPU runs).

    import manualbp
    from manualbp import Network, models, nn, optim

    model = models.lenet5().to("cuda")        # parameters (and later .grad, momentum) on the GPU
    net = Network(model)                      # or Network(models.lenet5(), device="cuda")
    net.fit((x_train, y_train), epochs=2)     # each batch goes up once, through a pinned buffer

    # by hand: move the batch yourself, read the results back with to_numpy
    xb, yb = manualbp.to_device(x[:64]), manualbp.to_device(y[:64])   # float32 / int64 on the GPU
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    opt.zero_grad()
    loss = loss_fn(model(xb), yb)             # a float32 device array of shape (1,)
    model.backward(loss_fn.backward())        # every layer's backward runs its CUDA kernels
    opt.step()                                # one sgd_update kernel per parameter
    print(manualbp.to_numpy(loss)[0])         # the only copy back to the host

What runs on the GPU: Linear, Conv2d, MaxPool2d, ReLU, LeakyReLU, Sigmoid, Tanh, Flatten,
Identity, CrossEntropyLoss (class-index targets, no class weights, no label smoothing, (N, C)
logits) and MSELoss, and SGD (momentum, dampening, Nesterov, weight decay).  Anything else given a
device array raises a TypeError naming what is not supported on the GPU.  The GPU kernels compute
in float32 only (gradient checks in float64 stay on the CPU).

A layer decides where to run from its parameters; a layer without parameters from its input.  A
model on the GPU given a NumPy array (or the other way round) raises a TypeError that says how to
move the batch: nothing is copied behind your back, since a hidden copy per layer would cost more
than the layer.

Importing this module (and ``import manualbp``) never imports ``numba.cuda``: that happens on the
first ``to("cuda")``, so the CPU framework needs nothing but NumPy and Numba.
"""
import numbers

import numpy as np

__all__ = ["DEVICES", "Uploader", "device_of", "is_cuda_array", "item", "module_device", "normalize",
           "require_cuda", "to_device", "to_numpy"]

DEVICES = ("cpu", "cuda")


# --- what an array is, and moving it ---------------------------------------------------------------------

def is_cuda_array(x):
    """True for a numba.cuda device array (or the CUDA simulator's stand-in); never imports numba.cuda."""
    return not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host") and hasattr(x, "shape")


def device_of(x):
    """``"cuda"`` for a device array, else ``"cpu"``."""
    return "cuda" if is_cuda_array(x) else "cpu"


def normalize(device):
    """``"cpu"`` or ``"cuda"`` from ``"cpu"``, ``"cuda"``, ``"cuda:0"`` or ``"gpu"``; ValueError otherwise."""
    if not isinstance(device, str):
        raise TypeError(f"expected a device string 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    if name in ("cpu", "cuda", "gpu", "cuda:0"):
        return "cpu" if name == "cpu" else "cuda"
    if name.startswith("cuda:"):
        raise ValueError(f"unsupported device {device!r}: manualbp uses the current CUDA device only; "
                         f"pick the GPU with CUDA_VISIBLE_DEVICES and pass 'cuda'")
    raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")


def require_cuda(who="manualbp"):
    """The ``numba.cuda`` module, or a RuntimeError saying what is missing (no GPU, no driver, no numba-cuda)."""
    try:
        from numba import cuda
    except Exception as exc:  # an import failure of the CUDA target, whatever its kind
        raise RuntimeError(f"{who}: numba.cuda cannot be imported ({exc}); install the CUDA target with "
                           f"pip install 'numba-cuda[cu13]'") from exc
    if cuda.is_available():
        return cuda
    raise RuntimeError(
        f"no CUDA GPU found by numba.cuda ({_why_unavailable()}); {who} needs an NVIDIA GPU and its driver. "
        f"Keep the model on the CPU (the default), or, to check the GPU code without a GPU, run under "
        f"numba's simulator: set NUMBA_ENABLE_CUDASIM=1 before numba is imported (slow; for tests)")


def _why_unavailable():
    """numba's own reason when it has one (e.g. 'CUDA driver library cannot be found')."""
    try:
        from numba import cuda
        from numba.cuda.cudadrv.driver import driver

        error = getattr(driver, "initialization_error", None)
        if error:
            return " ".join(str(error).split())
        if not len(cuda.gpus):
            return "the driver reports no CUDA device"
    except (ImportError, OSError, RuntimeError) as exc:  # the driver itself failed to load: that is the reason
        return " ".join(str(exc).split()) or type(exc).__name__
    return "numba.cuda.is_available() is False"


def to_numpy(x):
    """A NumPy array from a device array (one copy to the host), a NumPy array (itself) or a scalar."""
    if is_cuda_array(x):
        return x.copy_to_host()
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch tensor, for convenience in comparisons
        return x.detach().cpu().numpy()
    return np.asarray(x)


def to_device(x, device="cuda", dtype=None):
    """``x`` on ``device``: a numba.cuda device array for ``"cuda"``, a NumPy array for ``"cpu"``.

    Going to the GPU, floating data becomes float32 and integer data int64 (what the GPU kernels
    take: values, and class indices) unless ``dtype`` says otherwise.  An array already on the
    device is returned as is.
    """
    where = normalize(device)
    if where == "cpu":
        host = to_numpy(x)
        return host if dtype is None else host.astype(dtype, copy=False)
    if is_cuda_array(x):
        return x
    cuda = require_cuda("to_device")
    host = np.asarray(x)
    return cuda.to_device(np.ascontiguousarray(host, dtype=dtype or _gpu_dtype(host.dtype)))


def _gpu_dtype(dtype):
    if dtype.kind == "f":
        return np.float32
    if dtype.kind in "iub":
        return np.int64
    raise TypeError(f"to_device: cannot move an array of dtype {dtype} to the GPU (numbers only)")


def item(x):
    """A Python float from a one-element value: a NumPy scalar, a loss on the GPU of shape (1,), ..."""
    if isinstance(x, numbers.Real):
        return float(x)
    a = to_numpy(x)
    if a.size != 1:
        raise ValueError(f"item: expected a single value, got shape {tuple(a.shape)}")
    return float(a.reshape(-1)[0])


def module_device(module):
    """Where a Module's parameters live: ``"cuda"`` or ``"cpu"`` (``"cpu"`` when it has none)."""
    for p in module.parameters():
        return device_of(p.data)
    return "cpu"


# --- what layers, losses and the optimizer call ----------------------------------------------------------

def kernels():
    """``manualbp.kernels.cuda``, imported on first use (it imports numba.cuda)."""
    from .kernels import cuda as gpu

    return gpu


def runs_on_cuda(module, x, name="input"):
    """Where ``module``'s forward runs: on the GPU when its parameters are there (or, with no
    parameters, when ``x`` is).  A parameter/input mismatch is a TypeError explaining the move."""
    x_on = is_cuda_array(x)
    for p in module._parameters.values():
        if p is not None:  # the first parameter decides: Module.to moves them all together
            if is_cuda_array(p.data) != x_on:
                raise TypeError(mixed_message(type(module).__name__, name, x, not x_on))
            break
    return x_on


def mixed_message(who, name, x, model_on_cuda):
    """The error for a model on one device given an array on the other."""
    if model_on_cuda:
        return (f"{who}: the parameters are on the GPU but {name} is {_what(x)} on the CPU; move the batch "
                f"with manualbp.to_device(x) (Network.fit / evaluate / predict do it for you), or bring the "
                f"model back with model.to('cpu')")
    return (f"{who}: the parameters are on the CPU but {name} is a numba.cuda device array on the GPU; bring "
            f"it back with manualbp.to_numpy(x), or move the model with model.to('cuda')")


def _what(x):
    return f"a {type(x).__name__}" if not isinstance(x, np.ndarray) else "a NumPy array"


def check_grad_device(module, grad, on_cuda):
    """In backward: grad_output must be where the forward ran (scalars, such as a loss's 1.0, go anywhere)."""
    if grad is None or isinstance(grad, numbers.Number) or (isinstance(grad, np.ndarray) and grad.ndim == 0):
        return
    if is_cuda_array(grad) != bool(on_cuda):
        raise TypeError(mixed_message(f"{type(module).__name__}.backward", "grad_output", grad, on_cuda))


def unsupported(what, hint=""):
    """The TypeError for a feature the GPU kernels do not have."""
    return TypeError(f"{what} is not supported on the GPU{': ' + hint if hint else ''} "
                     f"(keep this part on the CPU, or see manualbp/device.py for what runs on the GPU)")


def float32_input(x, who, name="input", ndim=None, min_ndim=None):
    """Check a device array's dtype and number of dimensions, with the layer's name in the message."""
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{who}: expected {name} with at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    if x.dtype != np.float32:
        raise TypeError(f"{who}: expected {name} of dtype float32 on the GPU (its kernels compute in float32), "
                        f"got {x.dtype}")
    if ndim is not None and x.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        raise ValueError(f"{who}: expected {name} with {ndim} dimensions, got shape {tuple(x.shape)}")
    if x.size and not x.is_c_contiguous():
        raise ValueError(f"{who}: expected a C-contiguous {name} on the GPU")
    return x


def add_grad(param, compute):
    """``param.grad (+)= compute(out, accumulate)`` on the GPU, the kernel writing into ``.grad`` itself.

    ``compute(None, False)`` makes a new gradient array (the first backward after zero_grad);
    ``compute(param.grad, True)`` adds into the existing one.  Nothing is computed for a parameter
    that is None or does not require a gradient.
    """
    if param is None or not param.requires_grad:
        return
    param.grad = compute(param.grad, param.grad is not None)


def move(a, device):
    """One array (a parameter's data or gradient, a momentum buffer) onto ``device`` ("cpu"/"cuda")."""
    if a is None:
        return None
    if device == "cpu":
        return to_numpy(a)
    if is_cuda_array(a):
        return a
    return require_cuda().to_device(np.ascontiguousarray(a))


# --- batches going up, once per step ---------------------------------------------------------------------

class Uploader:
    """Copies batches to the GPU through pinned (page-locked) host buffers that are reused.

    A copy from pageable NumPy memory goes through a hidden staging buffer of the driver; copying
    into our own pinned buffer first lets the DMA engine read it directly, and allocating that
    buffer once (it grows to the largest batch seen) avoids the slow pinned allocation per step.
    The device buffers are reused the same way: batch k+1 overwrites batch k's device memory, which
    is safe because every kernel and copy runs on the same (default) stream, in order.  Keep a batch
    you need later by copying it (``manualbp.to_numpy``).

    ``upload(x, slot)`` returns a device array of x's shape: float32 for floating data, int64 for
    integers; ``slot`` names the buffer ("x", "y"), so inputs and targets do not share one.
    """

    def __init__(self):
        self._host = {}  # slot -> flat pinned NumPy array
        self._device = {}  # slot -> flat device array of the same size and dtype

    def upload(self, x, slot="x"):
        if is_cuda_array(x):
            return x
        cuda = require_cuda("Uploader")
        x = np.asarray(x)
        dtype = np.dtype(_gpu_dtype(x.dtype))
        host, dev = self._host.get(slot), self._device.get(slot)
        if host is None or host.dtype != dtype or host.size < x.size:
            host = self._host[slot] = cuda.pinned_array(max(x.size, 1), dtype=dtype)
            dev = self._device[slot] = cuda.device_array(max(x.size, 1), dtype=dtype)
        staged = host[:x.size].reshape(x.shape)
        np.copyto(staged, x, casting="unsafe")  # the dtype change (e.g. int32 labels to int64) happens here
        target = dev[:x.size]
        target.copy_to_device(host[:x.size])  # one host-to-device copy per array and step
        return target.reshape(x.shape)

    __call__ = upload
