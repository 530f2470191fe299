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

What a learner hands in may be a NumPy array, a torch tensor (CPU; on the GPU a CUDA tensor), a numba.cuda
device array, or anything with ``__array__`` / ``__dlpack__`` / ``__cuda_array_interface__``: every public
entry point reads it with ``as_array``, without a copy where none is needed (a torch CPU tensor becomes a
NumPy view of its memory, a CUDA tensor a numba.cuda device array over its memory).  What comes back is
always NumPy arrays on the CPU and numba.cuda device arrays on the GPU; torch is never imported.

What runs on the GPU: everything -- every layer, activation and loss (with all its options) and SGD,
through the same ``forward``/``backward`` as on the CPU: a layer never asks where it runs; the operations
it calls (``manualbp/kernels/__init__.py``) run where their arrays are.  The GPU kernels compute in float32
only (gradient checks in float64 stay on the CPU; ``.double()`` on the GPU is a TypeError).

A model on the GPU given a NumPy array (or the other way round) raises a TypeError that says how to
move the batch: nothing is copied behind your back, since a hidden copy per layer would cost more
than the layer.

Importing this module (and ``import manualbp``) never imports ``numba.cuda``: that happens on the
first ``to("cuda")``, so the CPU framework needs nothing but NumPy and Numba.
"""
import numbers
import weakref

import numpy as np

__all__ = ["DEVICES", "Uploader", "as_array", "assign", "cast", "device_of", "host_array", "host_copy", "is_cuda_array",
           "item", "module_device", "normalize", "parse_to", "read_back", "require_cuda", "to_device", "to_numpy"]

DEVICES = ("cpu", "cuda")


# --- what an array is, and moving it ---------------------------------------------------------------------

def is_cuda_array(x):
    """True for a numba.cuda device array (or the CUDA simulator's stand-in); never imports numba.cuda."""
    return not isinstance(x, np.ndarray) and hasattr(x, "copy_to_host") and hasattr(x, "shape")


def device_of(x):
    """``"cuda"`` for a device array, else ``"cpu"``."""
    return "cuda" if is_cuda_array(x) else "cpu"


def normalize(device):
    """``"cpu"`` or ``"cuda"`` from ``"cpu"``, ``"cuda"``, ``"cuda:0"``, ``"gpu"``, a ``torch.device`` or anything
    with a ``.type`` of ``"cpu"``/``"cuda"`` (and an ``.index`` of None or 0); ValueError for another device."""
    if isinstance(device, str):
        name = device.strip().lower()
        if name in ("cpu", "cuda", "gpu", "cuda:0", "cpu:0"):
            return "cpu" if name.startswith("cpu") else "cuda"
        if name.startswith("cuda:"):
            raise ValueError(f"unsupported device {device!r}: manualbp uses the current CUDA device only; "
                             f"pick the GPU with CUDA_VISIBLE_DEVICES and pass 'cuda'")
        raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
    kind = getattr(device, "type", None)
    if isinstance(kind, str):  # torch.device("cuda", 0), or any object that says which device it means
        index = getattr(device, "index", None)
        if kind.lower() not in DEVICES:
            raise ValueError(f"unknown device {device!r}: expected 'cpu' or 'cuda'")
        if index not in (None, 0):
            raise ValueError(f"unsupported device {device!r} (index {index!r}): manualbp uses the current CUDA "
                             f"device only; pick the GPU with CUDA_VISIBLE_DEVICES and pass 'cuda'")
        return kind.lower()
    raise TypeError(f"expected a device string 'cpu' or 'cuda', a torch.device or an object with a .type "
                    f"attribute, got {type(device).__name__}")


def _is_dtype(value):
    """A NumPy dtype or scalar type, or a torch dtype (``torch.float64``, recognised by its name)."""
    return (isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic))
            or (not isinstance(value, str) and str(value).startswith("torch.")))


def float_dtype(value, who):
    """np.float32 or np.float64 from a NumPy dtype, a scalar type, a name ('float32', 'double', ...) or a torch
    dtype (read by its name: torch is never imported); a TypeError naming the two for anything else."""
    name = str(value).replace("torch.", "")
    names = {"float32": np.float32, "float": np.float32, "float64": np.float64, "double": np.float64}
    if name in names:
        return np.dtype(names[name])
    try:
        found = None if value is None or isinstance(value, (bool, numbers.Number)) else np.dtype(value)
    except (TypeError, ValueError):
        found = None
    if found is not None and found in FLOAT_DTYPES:  # (np.dtype == None is true for float64: check None first)
        return found
    raise TypeError(f"{who}: expected dtype float32 or float64, got {value!r}")


FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def parse_to(args, kwargs, who):
    """``(device, dtype)`` from the arguments of ``.to(...)``, as torch takes them: ``to(device)``,
    ``to(dtype)``, ``to(device, dtype)`` or the keywords ``device=``, ``dtype=`` (``non_blocking`` is
    accepted: every copy here is synchronous).  Either may be None; the device comes back normalized."""
    kwargs = dict(kwargs)
    kwargs.pop("non_blocking", None)
    unknown = sorted(set(kwargs) - {"device", "dtype"})
    if unknown:
        raise TypeError(f"{who}: unexpected keyword argument(s) {unknown}")
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for arg in args:
        if _is_dtype(arg) and dtype is None:
            dtype = arg
        elif not _is_dtype(arg) and device is None:
            device = arg
        else:
            raise TypeError(f"{who}: expected a device and/or a dtype, got {args!r}")
    return (None if device is None else normalize(device)), (None if dtype is None else float_dtype(dtype, who))


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


def _protocols(x):
    """Does ``x`` offer a way to be read as an array (checked on its class for the CUDA one: torch's
    property refuses on a CPU tensor, and reading it would raise)?"""
    return (hasattr(type(x), "__cuda_array_interface__") or hasattr(x, "__array__")
            or hasattr(x, "__array_interface__") or hasattr(x, "__array_struct__") or hasattr(x, "__dlpack__"))


def as_array(x, who="manualbp", name="input"):
    """``x`` as the array manualbp computes with, without a copy where none is needed; anything else as it is.

    NumPy arrays and numba.cuda device arrays are returned unchanged.  Otherwise, in this order:

    - ``__cuda_array_interface__`` (a torch CUDA tensor, CuPy): a numba.cuda device array over the same
      memory (``numba.cuda.as_cuda_array``; numba.cuda is imported only when such an object is seen);
    - ``__array__`` / ``__array_interface__`` (a torch CPU tensor, pandas): ``np.asarray``, a view;
    - ``__dlpack__`` (JAX and others): ``np.from_dlpack``, a view.

    A torch tensor that requires grad refuses these protocols; its ``.detach()`` (the same memory, no
    gradient tracking) is read instead.  A list, a number, a NumPy scalar or None comes back as it is,
    so that the caller's check refuses (or accepts) it with its own message.
    """
    if isinstance(x, (np.ndarray, np.generic)) or is_cuda_array(x) or not _protocols(x):
        return x
    try:
        try:
            on_gpu = x.__cuda_array_interface__ is not None
        except AttributeError:  # torch declares it on every tensor; a CPU tensor refuses with AttributeError
            on_gpu = False
        if not on_gpu:
            if hasattr(x, "__array__") or hasattr(x, "__array_interface__") or hasattr(x, "__array_struct__"):
                return np.asarray(x)
            return np.from_dlpack(x)
    except (RuntimeError, BufferError, TypeError, ValueError) as exc:
        detach = getattr(x, "detach", None)
        if callable(detach) and getattr(x, "requires_grad", False):  # torch: "Use tensor.detach()"
            return as_array(detach(), who, name)
        raise TypeError(f"{who}: cannot read {name} ({type(x).__name__}) as an array: "
                        f"{' '.join(str(exc).split()) or type(exc).__name__}") from exc
    return _from_cuda_interface(x)  # outside the try: without a GPU, require_cuda's RuntimeError says why


class _HostMemory:
    """A NumPy view of memory described by a ``__cuda_array_interface__`` (for the simulator, see below)."""

    def __init__(self, interface, owner):
        self.owner = owner  # keeps the memory alive as long as the view
        typestr = interface["typestr"]
        self.__array_interface__ = {"version": 3, "shape": tuple(interface["shape"]), "typestr": typestr,
                                    "data": tuple(interface["data"]), "strides": interface.get("strides"),
                                    "descr": interface.get("descr") or [("", typestr)]}


def _from_cuda_interface(x):
    """A numba.cuda device array over the memory of ``x`` (no copy)."""
    cuda = require_cuda("as_array")
    as_cuda_array = getattr(cuda, "as_cuda_array", None)
    if as_cuda_array is not None:
        return as_cuda_array(x)
    # numba's CUDA simulator has no as_cuda_array: its "device" memory is host memory, so a NumPy view of
    # the interface's pointer, in the simulator's device-array wrapper, is the same array without a copy
    return cuda.devicearray.FakeCUDAArray(np.asarray(_HostMemory(x.__cuda_array_interface__, x)))


def host_array(x, who="manualbp", name="input"):
    """``as_array(x)`` brought to the host: a device array (a CUDA tensor) is copied to a NumPy array."""
    x = as_array(x, who, name)
    return x.copy_to_host() if is_cuda_array(x) else x


_host_copies = {}  # id(device array) -> (a weak reference to it, a host array holding the same values)


def host_copy(x):
    """The values of ``x`` on the host, for checks that read them (class indices in range) and for a loss read
    once more (``item``).

    A batch the ``Uploader`` sent up is read from the pinned host buffer it was copied from, and a loss that
    ``Network.train_step`` has read back already from that copy: the same values, without another copy
    back, which would make the host wait for every kernel queued before it.  Any other device array is
    copied to the host; a NumPy array is returned as it is.
    """
    if not is_cuda_array(x):
        return x
    entry = _host_copies.get(id(x))
    if entry is not None and entry[0]() is x:
        return entry[1]
    return x.copy_to_host()


def read_back(x):
    """``to_numpy(x)``, remembered for a device array (``host_copy``, and so ``item``, read it from there):
    for a value read once and needed again, as a step's loss."""
    host = to_numpy(x)
    if is_cuda_array(x):
        remember_host_copy(x, host)
    return host


def remember_host_copy(dev, host):
    """Note that ``host`` holds the values of the device array ``dev`` (until ``dev`` is gone), for
    ``host_copy``.  Only for arrays no kernel writes to afterwards: an uploaded batch, a step's loss."""
    key = id(dev)
    _host_copies[key] = (weakref.ref(dev, lambda _, key=key: _host_copies.pop(key, None)), host)


def forget(dev):
    """Drop what the host side remembers about the device array ``dev`` by its identity: its host copy
    (``remember_host_copy``) and the note of which output a loss gradient belongs to.  The GPU wrappers'
    buffer cache calls this when it hands ``dev`` out again, to hold new values (``kernels/cuda/buffers.py``)."""
    _host_copies.pop(id(dev), None)
    from .nn.saved import forget_origin

    forget_origin(dev)


def to_numpy(x):
    """A NumPy array from a device array (one copy to the host), a NumPy array (itself), a torch tensor
    (CPU: a view; CUDA: a copy), anything ``as_array`` reads, or a scalar or list."""
    if is_cuda_array(x):
        return x.copy_to_host()
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):  # torch, on either device
        return x.detach().cpu().numpy()
    return np.asarray(host_array(x, "to_numpy"))


def to_device(x, device="cuda", dtype=None):
    """``x`` on ``device``: a numba.cuda device array for ``"cuda"``, a NumPy array for ``"cpu"``.

    ``x`` may be anything ``as_array`` reads (a NumPy array, a torch tensor, a device array); ``device``
    anything ``normalize`` reads (``"cuda"``, ``"cuda:0"``, a ``torch.device``).

    Going to the GPU, floating data becomes float32 and integer data int64 (what the GPU kernels
    take: values, and class indices) unless ``dtype`` says otherwise.  An array already on the
    device is returned as is.
    """
    where = normalize(device)
    if where == "cpu":
        host = to_numpy(x)
        return host if dtype is None else host.astype(dtype, copy=False)
    x = as_array(x, "to_device", "x")  # a CUDA tensor becomes a device array over its memory: already there
    if is_cuda_array(x):
        return x
    cuda = require_cuda("to_device")
    host = np.asarray(x)
    return cuda.to_device(np.asarray(host, dtype=dtype or _gpu_dtype(host.dtype), order="C"))  # a 0-d array stays 0-d


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
    a = host_copy(x) if is_cuda_array(x) else to_numpy(x)  # a loss train_step read back already: not again
    if a.size != 1:
        raise ValueError(f"item: expected a single value, got shape {tuple(a.shape)}")
    return float(a.reshape(-1)[0])


def module_device(module):
    """Where a Module's parameters live: ``"cuda"`` or ``"cpu"`` (``"cpu"`` when it has none)."""
    for p in module.parameters():
        return device_of(p.data)
    return "cpu"


# --- what layers, losses and the optimizer call ----------------------------------------------------------

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


def cast(a, dtype, who):
    """``a`` in ``dtype`` (float32/float64): a NumPy array is converted; the GPU holds float32 only."""
    if is_cuda_array(a):
        if np.dtype(dtype) != np.float32:
            raise TypeError(f"{who}: the GPU computes in float32 only; move the model to the CPU with "
                            f".to('cpu') before .double()")
        return a
    return np.ascontiguousarray(a, dtype=dtype)


def assign(dst, values):
    """Write ``values`` (host values, broadcast to ``dst``'s shape) into the array ``dst`` in place, on its device."""
    if is_cuda_array(dst):
        host = np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=dst.dtype), tuple(dst.shape)))
        dst.copy_to_device(host)
    else:
        np.copyto(dst, values, casting="same_kind")
    return dst


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
    you need later by copying it (``manualbp.to_numpy``).  The pinned copy stays beside the device
    array, so a loss checking its class indices reads them there (``host_copy``) instead of copying
    them back, which would wait for the GPU in the middle of the step.

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
        out = target.reshape(x.shape)
        remember_host_copy(out, staged)  # the next upload overwrites both copies: they stay equal
        return out

    __call__ = upload


# --- buffers (BatchNorm's running statistics): moved and cast with their module, keeping shape and int dtype ---

def move_keep(a, where):
    """``a`` on ``where`` ("cpu"/"cuda") with its shape (0-d too) and its dtype (an int64 count stays int64)."""
    if a is None:
        return None
    if where == "cpu":
        return to_numpy(a)
    if is_cuda_array(a):
        return a
    return require_cuda().to_device(np.array(a, order="C"))


def cast_float(a, dtype, who):
    """A float array converted to ``dtype`` (``cast``); an integer array (a count) as it is, as torch does."""
    if a is None or np.dtype(a.dtype).kind != "f":
        return a
    return cast(a, dtype, who) if is_cuda_array(a) else np.asarray(a, dtype=dtype, order="C")
