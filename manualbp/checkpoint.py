"""Checkpoints: a model's weights, the optimizer's momentum buffers and the run's bookkeeping, in one file.

The file is an ordinary ``.npz`` (a zip of ``.npy`` arrays, readable by ``np.load``) that holds

    model/<name>               every parameter, under torch's state_dict keys ("0.weight")
    optimizer/<i>/<buffer>     the optimizer's per-parameter state (e.g. "optimizer/0/momentum_buffer")
    __header__                 UTF-8 JSON, stored as a uint8 array: format version, manualbp and numpy
                               versions, the architecture (the model's repr), epoch, history, the
                               shuffling generator's state, the optimizer's hyper-parameters, a
                               sha256 of all the arrays above, and a sha256 of the header itself

Nothing in it is pickled and it is read with ``allow_pickle=False``, so loading a checkpoint cannot run
code (``torch.load`` of an untrusted ``.pth`` can).  Writing goes to a temporary file in the same folder,
is flushed to disk, then renamed over the target (``os.replace`` is atomic): a crash mid-write leaves the
previous checkpoint as it was.  Loading checks everything -- readable zip, checksum, architecture, every
shape -- before it changes the model or the optimizer, so a bad file leaves them untouched too.

Weights alone, to share with torch (and back): ``save_safetensors(model, path)`` writes a
``.safetensors`` file (the ``safetensors`` package; ``pip install safetensors``) under torch's
state_dict keys, which ``torch_model.load_state_dict(safetensors.torch.load_file(path))`` reads;
``load_safetensors(path)`` reads one that torch wrote with ``safetensors.torch.save_file``.  A pickle
would not do: ``torch.load`` (weights_only, its default) refuses pickled NumPy arrays, and unpickling an
untrusted file can run code.
"""
import hashlib
import json
import os
import tempfile
import time
import zipfile
from collections import OrderedDict

import numpy as np

FORMAT = "manualbp-checkpoint"
FORMAT_VERSION = 1
HEADER_KEY = "__header__"

__all__ = ["FORMAT_VERSION", "atomic_write", "load", "load_safetensors", "read", "save", "save_safetensors"]

# mkstemp creates files readable by their owner only; a checkpoint gets the mode an ordinary
# open() would give it (0o666 less the umask).  The umask can only be read by setting it.
_UMASK = os.umask(0)
os.umask(_UMASK)


def _checksum(arrays):
    """sha256 over every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(a.dtype.str.encode())
        h.update(repr(tuple(a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _header_checksum(header):
    """sha256 of the header's JSON (keys sorted) without its own ``header_sha256`` entry."""
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode("utf-8")).hexdigest()


def _remove_stale_temps(folder, prefix, before):
    """Delete temp files of the same target left by a process killed mid-write (older than this write)."""
    for name in os.listdir(folder):
        if name.startswith(prefix) and name.endswith(".tmp"):
            stale = os.path.join(folder, name)
            try:
                if os.path.getmtime(stale) < before - 1.0:
                    os.remove(stale)
            except OSError:  # gone already, or not ours to delete
                pass


def _atomic_write(path, arrays):
    """np.savez into a temp file beside ``path``, fsync, then rename it over ``path``."""
    atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write):
    """``write(file)`` into a temp file beside ``path``, fsync, then rename it over ``path``: a reader sees the
    old file or the whole new one, never half of it (checkpoints, safetensors files, figures)."""
    path = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    prefix = "." + os.path.basename(path) + "."
    started = time.time()
    fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _remove_stale_temps(folder, prefix, started)
    try:  # make the rename itself durable
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open a folder
        return
    try:
        os.fsync(dir_fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dir_fd)


def save(path, model, optimizer=None, *, epoch=None, history=None, rng_state=None, extra=None):
    """Write ``model`` (and ``optimizer``'s state) to ``path`` atomically; return the header written.

    Args:
        path: the file to write (conventionally ``*.npz``); its folder is created if needed.
        model: a ``manualbp.nn.Module``.
        optimizer: optional ``manualbp.optim`` optimizer whose buffers and hyper-parameters are saved.
        epoch, history, rng_state, extra: JSON-serialisable bookkeeping stored in the header
            (``Network.fit`` stores the finished epoch, the history and the shuffling generator's
            ``bit_generator.state``).
    """
    from . import __version__

    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    opt_header = None
    if optimizer is not None:
        sd = optimizer.state_dict()
        for index, buffers in sd["state"].items():
            for buffer_name, value in buffers.items():
                arrays[f"optimizer/{index}/{buffer_name}"] = np.asarray(value)
        opt_header = {"type": type(optimizer).__name__, "param_groups": sd["param_groups"]}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "manualbp_version": __version__,
        "numpy_version": np.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "architecture": repr(model),
        "parameters": {name: [list(v.shape), v.dtype.str] for name, v in model.state_dict().items()},
        "epoch": epoch,
        "history": history,
        "rng_state": rng_state,
        "optimizer": opt_header,
        "extra": extra,
        "sha256": _checksum(arrays),
    }
    header["header_sha256"] = _header_checksum(header)
    arrays[HEADER_KEY] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    _atomic_write(path, arrays)
    return header


def read(path):
    """Read and verify a checkpoint file: return ``(header, arrays)`` or raise ``ValueError``.

    Verifies that the file is a complete zip of plain arrays, that it carries a manualbp header of a
    known format version, and that the arrays' sha256 matches the header's.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"PK\x03\x04":   # np.load would try other formats (and ask to unpickle)
        raise ValueError(f"checkpoint {path!r} is not a manualbp checkpoint: it is not an .npz (zip) file"
                         + (" (it is empty)" if not magic else ""))
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}   # reads every member: a CRC error raises here
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise ValueError(f"checkpoint {path!r} holds pickled Python objects, which manualbp never loads "
                             f"(unpickling can run code): it was not written by manualbp") from exc
        raise ValueError(f"checkpoint {path!r} cannot be read; it is truncated or corrupted "
                         f"({type(exc).__name__}: {exc})") from exc
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, NotImplementedError,
            UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise ValueError(f"checkpoint {path!r} cannot be read; it is truncated or corrupted "
                         f"({type(exc).__name__}: {exc})") from exc
    if HEADER_KEY not in arrays:
        raise ValueError(f"checkpoint {path!r} has no {HEADER_KEY} entry: it is not a manualbp checkpoint")
    try:
        header = json.loads(arrays.pop(HEADER_KEY).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"checkpoint {path!r}: its header is corrupted ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"checkpoint {path!r} is not a manualbp checkpoint (format {header.get('format')!r})"
                         if isinstance(header, dict) else f"checkpoint {path!r}: malformed header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} has format version {header.get('format_version')!r}; this "
                         f"manualbp reads version {FORMAT_VERSION}")
    if "header_sha256" in header and _header_checksum(header) != header["header_sha256"]:
        raise ValueError(f"checkpoint {path!r} is corrupted: its header does not match the sha256 recorded "
                         f"in it")
    if _checksum(arrays) != header.get("sha256"):
        raise ValueError(f"checkpoint {path!r} is corrupted: the sha256 of its arrays does not match the "
                         f"one recorded when it was written")
    return header, arrays


def _check_model(path, header, arrays, model, strict):
    saved = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        problems.append(f"missing parameters {missing}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected}")
    for k in own:
        if k in saved and saved[k].shape != own[k].shape:
            problems.append(f"{k!r} has shape {tuple(saved[k].shape)} in the file, {tuple(own[k].shape)} "
                            f"in the model")
        elif k in saved and saved[k].dtype.kind not in "fiu":
            problems.append(f"{k!r} has non-numeric dtype {saved[k].dtype}")
    if strict and header.get("architecture") != repr(model):
        problems.append("the architectures differ:\n  saved:\n    "
                        + str(header.get("architecture")).replace("\n", "\n    ")
                        + "\n  this model:\n    " + repr(model).replace("\n", "\n    "))
    if problems:
        raise ValueError(f"checkpoint {path!r} does not match this model: " + "; ".join(problems))
    return saved


def _optimizer_state(path, header, arrays, optimizer):
    info = header.get("optimizer")
    if info is None:
        raise ValueError(f"checkpoint {path!r} holds no optimizer state, but an optimizer was given to load into")
    if info.get("type") != type(optimizer).__name__:
        raise ValueError(f"checkpoint {path!r} holds {info.get('type')} state; cannot load it into "
                         f"{type(optimizer).__name__}")
    state = {}
    for key, value in arrays.items():
        if key.startswith("optimizer/"):
            _, index, buffer_name = key.split("/", 2)
            state.setdefault(int(index), {})[buffer_name] = value
    return {"state": state, "param_groups": info["param_groups"]}


def load(path, model, optimizer=None, strict=True):
    """Load a checkpoint into ``model`` (and ``optimizer``); return its header (epoch, history, rng_state...).

    Raises ``ValueError`` -- leaving the model and optimizer exactly as they were -- when the file is
    truncated or corrupted, is not a manualbp checkpoint, or does not match the model (different
    parameter names or shapes, or with ``strict=True`` a different architecture repr).
    """
    header, arrays = read(path)
    saved = _check_model(path, header, arrays, model, strict)
    if optimizer is not None:
        opt_sd = _optimizer_state(path, header, arrays, optimizer)
        try:
            optimizer.load_state_dict(opt_sd)   # validates everything before it assigns anything
        except (TypeError, ValueError) as exc:
            raise ValueError(f"checkpoint {path!r}: optimizer state does not fit this optimizer: {exc}") from exc
    model.load_state_dict(saved)   # already checked: cannot fail half-way
    return header


# --- weights alone, in the safetensors format torch reads ---------------------------------------------------

def _safetensors_numpy(who):
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError(f"{who} needs the safetensors package: pip install safetensors "
                          f"(or pip install 'manualbp[train]')") from exc
    return safetensors.numpy


def save_safetensors(model_or_state_dict, path, metadata=None):
    """Write a model's weights (or a state_dict of arrays or tensors) to a ``.safetensors`` file, atomically.

    The keys are torch's (``"0.weight"``) and the shapes its layouts, so torch reads the file as it is::

        manualbp.save_safetensors(model, "lenet5.safetensors")
        torch_model.load_state_dict(safetensors.torch.load_file("lenet5.safetensors"))

    Args:
        model_or_state_dict: a ``manualbp.nn.Module`` (or ``Network``), or a mapping name -> array
            (NumPy arrays, torch tensors, device arrays: copied to the host).
        path: the file to write; its folder is created if needed.  A temp file beside it is renamed
            over it once complete, so a crash leaves the previous file as it was.
        metadata: optional ``{str: str}`` stored in the file's header (``"format": "pt"`` is added: the
            names and layouts are torch's, and tools that read torch checkpoints look for it).
    """
    from .device import host_array

    st = _safetensors_numpy("save_safetensors")
    state = model_or_state_dict.state_dict() if hasattr(model_or_state_dict, "state_dict") else model_or_state_dict
    if not hasattr(state, "items"):
        raise TypeError(f"save_safetensors: expected a Module or a mapping of name -> array, "
                        f"got {type(model_or_state_dict).__name__}")
    arrays = {}
    for name, value in state.items():
        a = np.asarray(host_array(value, "save_safetensors", repr(name)))
        if not isinstance(name, str) or a.dtype.kind not in "fiub":
            raise TypeError(f"save_safetensors: expected str names and numeric arrays, got {name!r}: {a.dtype}")
        arrays[name] = np.asarray(a, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
    info = {"format": "pt"}
    info.update({str(k): str(v) for k, v in (metadata or {}).items()})
    blob = st.save(arrays, metadata=info)
    atomic_write(path, lambda f: f.write(blob))
    return path


def load_safetensors(path, model=None, strict=True):
    """Read a ``.safetensors`` file into an ordered ``{name: NumPy array}``; with ``model``, also load it.

    Reads what ``save_safetensors`` or torch's ``safetensors.torch.save_file(torch_model.state_dict(),
    path)`` wrote.  With ``model`` the weights go through ``model.load_state_dict(..., strict)``: names
    and shapes are checked before anything changes.  A missing file is a FileNotFoundError; a file that is
    not a complete safetensors file is a ValueError.
    """
    st = _safetensors_numpy("load_safetensors")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"safetensors file {path!r} does not exist")
    with open(path, "rb") as f:
        raw = f.read()
    try:
        arrays = st.load(raw)
    except Exception as exc:  # safetensors' own error type (SafetensorError) is not exported everywhere
        raise ValueError(f"{path!r} is not a readable safetensors file; it is truncated or corrupted "
                         f"({type(exc).__name__}: {' '.join(str(exc).split())})") from exc
    state = OrderedDict(arrays)
    if model is not None:
        model.load_state_dict(state, strict=strict)
    return state
