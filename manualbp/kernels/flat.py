"""A parameter group laid out flat on the GPU, so that one kernel launch updates all of it.

Derivation: derivations/09-sgd-momentum.md ((O3)-(O6) hold element by element, so they can run over every
parameter of a group at once).

Launching the update once per parameter costs the host one launch each (ResNet-20 has 59 parameters); the
arithmetic is the same for every element of every parameter of a group, so it can be one launch over one
array, if the parameters, their gradients and their momentum buffers each lie end to end in memory.  A
``FlatGroup`` holds three such device arrays; each parameter's ``data``, ``grad`` and momentum buffer become
views of its stretch of them (the values copied over once).  The layers then write each new gradient
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
    """A group's parameters, gradients and (when ``momentum``) momentum buffers, each in one device array."""

    def __init__(self, params, state, momentum):
        from numba import cuda

        self.params = list(params)
        total = sum(int(p.data.size) for p in self.params)
        self.data = cuda.device_array(total, dtype=np.float32)
        self.grad = cuda.device_array(total, dtype=np.float32)
        self.buf = cuda.device_array(total, dtype=np.float32) if momentum else None
        self.views = []  # (data view, grad view, buffer view or None) per parameter
        offset = 0
        for p in self.params:
            n, shape = int(p.data.size), tuple(p.data.shape)
            views = [a[offset:offset + n].reshape(shape) for a in (self.data, self.grad)]
            views.append(self.buf[offset:offset + n].reshape(shape) if momentum else None)
            old = (p.data, p.grad, state[id(p)]["momentum_buffer"] if momentum else None)
            for view, values in zip(views, old):
                if view is not None and n:
                    view.copy_to_device(values)  # once, device to device
            p.data, p.grad = views[0], views[1]
            p._slot = (views[0], views[1])  # where the layers write the next gradient (Parameter.grad_buffer)
            if momentum:
                state[id(p)]["momentum_buffer"] = views[2]
            self.views.append(tuple(views))
            offset += n

    def in_place(self, params, state, grads=True):
        """True when the group still holds exactly these parameters, each with its views as data, grad (unless
        ``grads`` is False) and momentum buffer: then one update over the flat arrays is an update of every
        parameter."""
        if len(params) != len(self.params):
            return False
        for p, q, (data, grad, buf) in zip(params, self.params, self.views):
            if p is not q or p.data is not data or (grads and p.grad is not grad) or not p.requires_grad:
                return False
            if buf is not None and state.get(id(p), {}).get("momentum_buffer") is not buf:
                return False
        return True


def can_pack(params, state, momentum):
    """Whether a group can be laid out flat now: every parameter a float32 device array with a gradient of its
    shape, trainable, and (with momentum) past its first step, so that its buffer exists."""
    if not params:
        return False
    for p in params:
        if not (is_cuda_array(p.data) and p.data.dtype == np.float32 and p.requires_grad and p.grad is not None
                and is_cuda_array(p.grad) and tuple(p.grad.shape) == tuple(p.data.shape)):
            return False
        buf = state.get(id(p), {}).get("momentum_buffer") if momentum else None
        if momentum and not (buf is not None and is_cuda_array(buf) and buf.dtype == np.float32
                             and tuple(buf.shape) == tuple(p.data.shape)):
            return False
    return True
