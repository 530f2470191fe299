"""Module and Sequential: the containers every layer is built on.

A ``Module`` owns ``Parameter`` objects and child modules, registered simply by
assigning them as attributes (``self.weight = Parameter(...)``), as in
``torch.nn.Module``.  Unlike torch there is no autograd tape: each layer writes
its own ``backward(grad_output) -> grad_input``, which adds dL/d(parameter)
into each parameter's ``.grad``.  ``Sequential.backward`` calls the layers'
backwards in reverse order: that loop *is* backpropagation.

Derivation: derivations/01-chain-rule.md (the chain rule (C2), applied one layer
at a time; gradients add where a value is used more than once (C3)).
"""
import weakref
from collections import OrderedDict, namedtuple

import numpy as np

from .. import kernels
from ..device import cast, cast_float, device_of, host_array, move, move_keep, parse_to, require_cuda, to_numpy
from .buffers import buffer_value, check_buffer_name
from .parameter import Parameter
from .saved import TAPE, checked_backward, replay_backward, restore, saves, snapshot

# What load_state_dict returns, under torch's name and fields (a tuple: ``missing, unexpected = ...`` works).
IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


# Values that Module.__setattr__ stores without looking further when they replace one another (see there)
_PLAIN = frozenset({np.ndarray, tuple, bool, int, float, str, type, type(np.dtype(np.float32)),
                    type(np.dtype(np.float64))})
_PLAIN_OR_NONE = _PLAIN | {type(None)}


class Module:
    """Base class of every layer and model.

    Subclasses implement ``forward(x)`` (saving what backward needs) and
    ``backward(grad_output)`` (returning dL/dx and accumulating parameter
    gradients).  Calling the module calls ``forward``.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "training", True)

    # --- registration -----------------------------------------------------
    def __setattr__(self, name, value):
        d = self.__dict__
        if type(d.get(name)) in _PLAIN and type(value) in _PLAIN_OR_NONE:
            # The common case, every step: a forward replacing what it saved last time (an array, a shape, a
            # flag).  An attribute that already holds such a value is neither a parameter, a module nor a
            # buffer (those are Parameter or Module objects, None, or kept in _buffers): nothing to register.
            d[name] = value
            return
        if "_parameters" not in d:
            raise AttributeError(
                f"cannot assign attributes before Module.__init__() is called in {type(self).__name__}")
        params, modules = self.__dict__["_parameters"], self.__dict__["_modules"]
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            if not isinstance(value, (Parameter, Module)):  # a registered buffer: assignment replaces its array
                buffers[name] = buffer_value(value, name, type(self).__name__)
                return
            del buffers[name]  # a Parameter or a Module takes the name over, as in torch
            self.__dict__["_non_persistent_buffers_set"].discard(name)
        params.pop(name, None)
        modules.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        elif isinstance(value, Module):
            modules[name] = value
        elif value is None and name in ("weight", "bias"):
            params[name] = None  # registered as absent, as torch does for bias=False
        object.__setattr__(self, name, value)

    def __getattr__(self, name):  # only called when ordinary lookup fails: buffers live in _buffers alone
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            return buffers[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            del buffers[name]
            self._non_persistent_buffers_set.discard(name)
            return
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    # --- the two passes ---------------------------------------------------
    def forward(self, input):
        raise TypeError(f"{type(self).__name__} does not define forward()")

    def _replayed_backward(self, grad_output):
        """With no backward of its own: the forward's chain of child calls, replayed in reverse (saved.py)."""
        return replay_backward(self, grad_output)

    backward = checked_backward(_replayed_backward)
    _replays = True  # this class's backward is the replay: its forward records its child calls
    _consumes_saved_state = True  # a backward uses up what its forward saved (losses: no parameters, no need)
    # the methods that use up a forward's saved state: a class may add its own (BatchNorm's backward_relu)
    _backward_methods = ("backward",)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in cls._backward_methods:
            own = cls.__dict__.get(name)
            if own is not None and cls._consumes_saved_state and not hasattr(own, "__wrapped_backward__"):
                setattr(cls, name, checked_backward(own))  # the saved-state bookkeeping of saved.py around it
        cls._replays = cls.backward is Module.backward

    def __call__(self, *args, **kwargs):
        """``forward``, with the bookkeeping of what it saves (manualbp/nn/saved.py)."""
        d = self.__dict__
        if not saves(self):  # eval mode or no_grad: whatever forward sets is put back as it was
            state = snapshot(self)
            try:
                return self.forward(*args, **kwargs)
            finally:
                restore(self, state)
                d["_ever_called"] = True
        frames = TAPE.frames
        parent = frames[-1] if frames else False
        if parent is False:  # called from outside any forward: a new root call
            TAPE.root_calls += 1
            d["_saved_stack"] = None
        elif d.get("_pending") and d.get("_root_id") == TAPE.root_calls:  # again within the same forward
            stack = d.get("_saved_stack")
            if stack is None:
                stack = d["_saved_stack"] = []
            stack.append(snapshot(self))  # the earlier call's state, for the backward that comes after
        else:
            d["_saved_stack"] = None  # a state from an earlier forward that no backward took: obsolete
        root = TAPE.root_calls
        own = [] if self._replays else None
        frames.append(own)
        try:
            out = self.forward(*args, **kwargs)
        finally:
            frames.pop()
        d["_pending"], d["_root_id"], d["_ever_saved"] = 1, root, True
        first = args[0] if args else next(iter(kwargs.values()), None)
        if own is not None:
            d["_calls"], d["_io"] = own, (first, out)
        if parent is False:
            try:
                d["_root_out"] = weakref.ref(out)
            except TypeError:  # a NumPy scalar (a loss): nothing to check against
                d["_root_out"] = None
        elif parent is not None:
            parent.append((self, first, out))
        return out

    def _saved(self, value, what="its input"):
        """Return a value saved by forward, or explain that backward came first."""
        if value is None:
            raise ValueError(
                f"{type(self).__name__}.backward() called before forward(): it needs {what}, "
                f"which forward() saves; call the module on a batch first")
        return value

    # --- traversal --------------------------------------------------------
    def children(self):
        return iter(self._modules.values())

    def named_children(self):
        return iter(self._modules.items())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, m in self.named_modules():
            yield m

    def named_parameters(self, prefix="", recurse=True):
        """Yield ``(name, Parameter)`` with torch's dotted names (``"0.weight"``)."""
        seen = set()
        for mod_name, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name, p in module._parameters.items():
                if p is None or id(p) in seen:
                    continue
                seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self, recurse=True):
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def register_buffer(self, name, tensor, persistent=True):
        """Keep ``tensor`` (an array, or None) as buffer ``name``: an attribute that is not a parameter, moved
        and converted with the module and, if ``persistent``, saved in ``state_dict()`` (manualbp/nn/buffers.py)."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        check_buffer_name(self, name)
        value = buffer_value(tensor, name, type(self).__name__)
        self._buffers[name] = value
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """Yield ``(name, array)`` for every buffer that is not None, with torch's dotted names."""
        seen = set()
        for mod_name, module in (self.named_modules(prefix) if recurse else [(prefix, self)]):
            for name, b in module._buffers.items():
                if b is None or (remove_duplicate and id(b) in seen):
                    continue
                seen.add(id(b))
                yield (f"{mod_name}.{name}" if mod_name else name), b

    def buffers(self, recurse=True):
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def _state_entries(self):
        """(key, owner module, attribute name, is a buffer) in torch's state_dict order: each module's
        parameters, then its persistent buffers, then its children's, recursively."""
        seen = set()
        for mod_name, module in self.named_modules():
            prefix = f"{mod_name}." if mod_name else ""
            for name, p in module._parameters.items():
                if p is not None and id(p) not in seen:
                    seen.add(id(p))
                    yield prefix + name, module, name, False
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers_set:
                    yield prefix + name, module, name, True

    def zero_grad(self):
        """Set every parameter's ``.grad`` back to ``None`` (torch's default)."""
        for p in self.parameters():
            p.grad = None

    # --- modes and dtypes -------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def _cast(self, dtype):
        for p in self.parameters():
            p.data = cast(p.data, dtype, type(self).__name__)
            if p.grad is not None:
                p.grad = cast(p.grad, dtype, type(self).__name__)
        for m in self.modules():
            for name, b in m._buffers.items():
                m._buffers[name] = cast_float(b, dtype, type(self).__name__)
        return self

    def float(self):
        """Convert every parameter (and gradient) to float32, in place."""
        return self._cast(np.float32)

    def double(self):
        """Convert every parameter (and gradient) to float64, in place."""
        return self._cast(np.float64)

    def to(self, *args, **kwargs):
        """Move every parameter (``.data`` and ``.grad``) to a device and/or convert it to a dtype, in place;
        returns self.  As torch: ``to("cuda")``, ``to("cuda:0")``, ``to(torch.device("cuda"))`` (or any
        object with ``.type``/``.index``), ``to(np.float64)`` or ``to(torch.float64)``, ``to(device, dtype)``.

        On the GPU the parameters are numba.cuda device arrays, and every layer's forward and backward
        runs the CUDA kernels of ``manualbp/kernels/cuda/``: see ``manualbp/device.py``.  Moving to
        ``"cuda"`` without a GPU is a RuntimeError that names what is missing.  float32 only.
        """
        who = f"{type(self).__name__}.to"
        where, dtype = parse_to(args, kwargs, who)
        if where == "cpu":
            self._move("cpu")
        if dtype is not None:
            self._cast(dtype)
        if where == "cuda":
            require_cuda(f"{type(self).__name__}.to('cuda')")
            for name, p in self.named_parameters():
                if p.dtype != np.float32:
                    raise TypeError(f"{type(self).__name__}.to('cuda'): parameter {name!r} is {p.dtype}, but "
                                    f"the GPU kernels compute in float32; call .float() first")
            for name, b in self.named_buffers():
                if b.dtype.kind == "f" and b.dtype != np.float32:
                    raise TypeError(f"{type(self).__name__}.to('cuda'): buffer {name!r} is {b.dtype}, but "
                                    f"the GPU kernels compute in float32; call .float() first")
            self._move("cuda")
        return self

    def _move(self, where):
        for p in self.parameters():
            p.data, p.grad = move(p.data, where), move(p.grad, where)
        for m in self.modules():
            for name, b in m._buffers.items():
                m._buffers[name] = move_keep(b, where)

    def cuda(self, device=None):
        """``to("cuda")`` (``device``: None, 0, ``"cuda:0"`` or a ``torch.device``: the current GPU)."""
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def cpu(self):
        """``to("cpu")``."""
        return self.to("cpu")

    # --- state ------------------------------------------------------------
    def state_dict(self):
        """An ordered ``{name: array copy}`` with PyTorch's keys and shapes (NumPy copies, wherever the model is):
        each module's parameters, then its persistent buffers (BatchNorm's running statistics), as torch orders them.

        To hand the weights to torch, write them with ``manualbp.save_safetensors(model, path)`` and read
        them with ``safetensors.torch.load_file(path)``: ``torch.load`` (weights_only, its default) refuses
        a pickle of NumPy arrays.
        """
        return OrderedDict((key, np.array(to_numpy(m._buffers[name] if is_buffer else m._parameters[name].data),
                                          copy=True)) for key, m, name, is_buffer in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays into the parameters and persistent buffers; keys and shapes are checked as torch does.

        Values may be NumPy arrays, torch tensors (a torch model's ``state_dict()`` as it is, or
        ``safetensors.torch.load_file``), or anything ``manualbp.device.as_array`` reads; each is cast
        to the parameter's dtype and copied where the parameter is.  With ``strict=True`` missing or
        unexpected keys are an error (a torch BatchNorm's running statistics, if this model has no such
        buffer, are unexpected keys); a shape mismatch is always an error.  Nothing changes unless every
        value fits.  Returns ``(missing_keys, unexpected_keys)``, a named tuple as torch's.
        ``manualbp.load_safetensors(path)`` reads a file torch wrote with ``safetensors.torch.save_file``.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(f"load_state_dict expected a mapping of name -> array, got {type(state_dict).__name__}")
        own = OrderedDict((key, (m, name, is_buffer)) for key, m, name, is_buffer in self._state_entries())
        missing = [k for k in own if k not in state_dict]
        if missing and getattr(state_dict, "_metadata", None) is None:  # no torch version record: an old file
            optional = {k for k, (m, attr, _) in own.items() if attr in getattr(m, "_optional_in_old_files", ())}
            missing = [k for k in missing if k not in optional]  # kept as they are, as torch does
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise ValueError(
                f"Error loading state_dict into {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}")
        updates = []
        for name, (m, attr, is_buffer) in own.items():
            if name not in state_dict:
                continue
            old = m._buffers[attr] if is_buffer else m._parameters[attr].data
            value = np.asarray(host_array(state_dict[name], "load_state_dict", repr(name)))
            if value.shape != tuple(old.shape):
                raise ValueError(
                    f"Error loading state_dict into {type(self).__name__}: {name!r} expected shape "
                    f"{tuple(old.shape)}, got {tuple(value.shape)}")
            if value.dtype.kind not in "fiu":
                raise TypeError(f"Error loading state_dict: {name!r} has non-numeric dtype {value.dtype}")
            updates.append((m, attr, is_buffer, old, value))
        for m, attr, is_buffer, old, value in updates:  # checked everything first: no half-loaded model
            new = np.array(value, dtype=old.dtype, order="C", copy=True)
            if is_buffer:  # a buffer keeps its dtype (an int64 count stays int64) and its device
                m._buffers[attr] = move_keep(new, device_of(old))
            else:
                m._parameters[attr].data = kernels.like(old, new)  # stays put
        return IncompatibleKeys(missing, unexpected)

    # --- printing ---------------------------------------------------------
    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = []
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


class Sequential(Module):
    """Layers applied in order; backward applies their backwards in reverse.

    ``Sequential(l1, l2, l3)`` or ``Sequential(OrderedDict(name=layer, ...))``.
    Indexable (``model[0]``, ``model[1:3]``), iterable, and ``len(model)`` works.
    """

    def __init__(self, *args):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            items = list(args[0].items())
        else:
            items = [(str(i), layer) for i, layer in enumerate(args)]
        for name, layer in items:
            if not isinstance(layer, Module):
                raise TypeError(f"Sequential expected Module layers, got {type(layer).__name__} at position {name}")
            setattr(self, name, layer)

    def forward(self, input):
        x = input
        for layer in self._modules.values():
            x = layer(x)
        return x

    # Sequential's backward understands ``input_grad=False`` (see Conv2d and Linear, which do too).
    _skips_input_grad = True

    def backward(self, grad_output, input_grad=True):
        """Run the layers' backwards in reverse; return dL/d(input), or None when ``input_grad=False``.

        ``input_grad=False`` says that nobody needs dL/d(input): a training step's input is the images,
        which are data, not something we update (torch skips it the same way, because the images do
        not ``require_grad``).  The walk then stops at the first layer that has parameters: that layer
        still adds dL/d(its parameters) into ``.grad`` but skips its own dL/dx (for LeNet-5 that is
        about a fifth of a training step's arithmetic), and the layers in front of it, which have no
        parameters, are not visited at all.
        """
        layers = list(self._modules.values())
        first = 0  # the walk goes back to this layer (included)
        if not input_grad:
            first = next((i for i, layer in enumerate(layers) if any(True for _ in layer.parameters())),
                         len(layers))
        # The chain rule, one layer at a time: each layer turns dL/d(its output)
        # into dL/d(its input), which is dL/d(output) of the layer before it.
        for i in range(len(layers) - 1, first - 1, -1):
            layer = layers[i]
            if i == first and not input_grad:  # the last layer visited: its dL/dx is not wanted
                if getattr(layer, "_skips_input_grad", False):
                    layer.backward(grad_output, input_grad=False)
                else:
                    layer.backward(grad_output)  # a layer that cannot skip it: computed, then dropped
                return None
            grad_output = layer.backward(grad_output)
        return grad_output if input_grad else None

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return layers[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, layer):
        setattr(self, str(len(self)), layer)
        return self
