"""A parameter group laid out flat on the GPU, so that one kernel launch updates all of it.

Derivation: derivations/09-sgd-momentum.md ((O3)-(O6) hold element by element, so they can run over every
parameter of a group at once).

Launching the update once per parameter costs the host one launch each (ResNet-20 has 59 parameters); the
arithmetic is the same for every element of every parameter of a group, so it can be one launch over one
array, if the parameters, their gradients and their state buffers (SGD's momentum; Adam's two moments, and
the largest second moment with amsgrad, derivations/12-adaptive-optimizers.md) each lie end to end in
memory.  A ``FlatGroup`` holds one such device array per kind; each parameter's ``data``, ``grad`` and
buffers become views of its stretch of them (the values copied over once).  The layers then write each new gradient
straight into its stretch (``Parameter.grad_buffer()``, passed to the kernel as ``out``), so a step needs no
copy to gather them.

Before every step the optimizer checks, by identity, that each view is still in place.  Anything that
replaces one -- moving the model, assigning ``p.data``, loading an optimizer state, a gradient made
elsewhere (a layer that does not write into ``grad_buffer()``) -- makes that step take the per-parameter
launches, which do the very same arithmetic, so results never depend on which way a step went.  A group
whose values or buffers were replaced is laid out again after the step (at most ``MAX_PACKS`` times); one
whose only stray arrays are gradients keeps its layout.  On the CPU, and for other dtypes, nothing is
flattened.
"""
import numpy as np

from ..device import is_cuda_array

MAX_PACKS = 4  # a group re-laid out more often than this (something keeps replacing its arrays) stays per-parameter


class FlatGroup:
    """A group's parameters, gradients and state buffers (``names``: SGD's ``momentum_buffer``, Adam's ``exp_avg``
    and ``exp_avg_sq``, ...), each kind in one device array."""

    def __init__(self, params, state, names):
        from numba import cuda

        names = _names(names)
        self.params = list(params)
        self.names = names
        total = sum(int(p.data.size) for p in self.params)
        self.data = cuda.device_array(total, dtype=np.float32)
        self.grad = cuda.device_array(total, dtype=np.float32)
        self.state = {name: cuda.device_array(total, dtype=np.float32) for name in names}
        self.views = []  # (data view, grad view, {name: state view}) per parameter
        offset = 0
        for p in self.params:
            n, shape = int(p.data.size), tuple(p.data.shape)
            data, grad = (a[offset:offset + n].reshape(shape) for a in (self.data, self.grad))
            bufs = {name: self.state[name][offset:offset + n].reshape(shape) for name in names}
            if n:  # the values copied over once, device to device
                data.copy_to_device(p.data)
                grad.copy_to_device(p.grad)
                for name in names:
                    bufs[name].copy_to_device(state[id(p)][name])
            p.data, p.grad = data, grad
            p._slot = (data, grad)  # where the layers write the next gradient (Parameter.grad_buffer)
            if names:
                state[id(p)].update(bufs)
            self.views.append((data, grad, bufs))
            offset += n

    @property
    def buf(self):
        """SGD's flat momentum buffer (None without momentum)."""
        return self.state.get("momentum_buffer")

    def in_place(self, params, state, grads=True):
        """True when the group still holds exactly these parameters, each with its views as data, grad (unless
        ``grads`` is False) and state buffers: then one update over the flat arrays is an update of every
        parameter."""
        if len(params) != len(self.params):
            return False
        for p, q, (data, grad, bufs) in zip(params, self.params, self.views):
            if p is not q or p.data is not data or (grads and p.grad is not grad) or not p.requires_grad:
                return False
            if bufs:
                entry = state.get(id(p), {})
                for name, buf in bufs.items():
                    if entry.get(name) is not buf:
                        return False
        return True


def _names(names):
    """The state buffers' names: a tuple of names, or (SGD) a bool, True for its momentum buffer."""
    if isinstance(names, bool):
        return ("momentum_buffer",) if names else ()
    return tuple(names)


def can_pack(params, state, names):
    """Whether a group can be laid out flat now: every parameter a float32 device array with a gradient of its
    shape, trainable, and past its first step, so that its state buffers (``names``) exist."""
    names = _names(names)
    if not params:
        return False
    for p in params:
        if not (is_cuda_array(p.data) and p.data.dtype == np.float32 and p.requires_grad and p.grad is not None
                and is_cuda_array(p.grad) and tuple(p.grad.shape) == tuple(p.data.shape)):
            return False
        entry = state.get(id(p), {})
        for name in names:
            buf = entry.get(name)
            if not (buf is not None and is_cuda_array(buf) and buf.dtype == np.float32
                    and tuple(buf.shape) == tuple(p.data.shape)):
                return False
    return True


def after_step(flats, index, params, state, names):
    """After a step of group ``index`` that went parameter by parameter: keep its layout if only gradients
    strayed, else lay it out (again) for the next step, at most MAX_PACKS times.  ``flats`` maps a group's
    index to (FlatGroup or None, times laid out)."""
    flat, packs = flats.get(index, (None, 0))
    if flat is not None and flat.in_place(params, state, grads=False):
        return  # laid out still; a gradient came from elsewhere this time
    flats.pop(index, None)  # (its device memory goes with it)
    if packs < MAX_PACKS and can_pack(params, state, names):
        flats[index] = (FlatGroup(params, state, names), packs + 1)  # from the next step on
    elif packs:
        flats[index] = (None, packs)  # remember how often, so that a group that keeps changing stops
