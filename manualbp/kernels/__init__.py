"""The heavy arithmetic, behind one interface with two implementations.

Layers call the functions below; each one forwards to the NumPy reference
(``reference.py``, the readable specification) or to the Numba kernels
(``cpu.py``), depending on ``manualbp.set_backend``.  Both take and return
C-contiguous float32/float64 arrays and never validate: the layers check
shapes and dtypes before they get here.

Dimension letters used in every kernel file:
  N batch, C input channels, H/W input height/width, O output channels,
  KH/KW kernel height/width, OH/OW output height/width, SH/SW stride,
  PH/PW zero padding.
"""
from ..backend import get_backend
from . import reference

_cpu = None


def _impl():
    global _cpu
    if get_backend() == "numpy":
        return reference
    if _cpu is None:
        from . import cpu as _cpu_module
        from .heap import keep_freed_memory
        keep_freed_memory()  # reuse the last step's memory rather than fault in fresh pages (heap.py)
        _cpu = _cpu_module
    return _cpu


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b) for 2-D arrays, op = transpose when asked. Shapes (M, K) @ (K, N) -> (M, N)."""
    return _impl().matmul(a, b, transpose_a, transpose_b)


def conv2d_forward(x, w, b, stride, padding):
    """y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*SH+p,j*SW+q].  (N,C,H,W) -> (N,O,OH,OW)."""
    return _impl().conv2d_forward(x, w, b, stride, padding)


def conv2d_grad_input(grad_y, w, x_shape, stride, padding):
    """dL/dx from dL/dy: each gradient flows back along the weight that carried it. -> (N,C,H,W)."""
    return _impl().conv2d_grad_input(grad_y, w, x_shape, stride, padding)


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding):
    """dL/dw[o,c,p,q] = sum_{n,i,j} grad_y[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]. -> (O,C,KH,KW)."""
    return _impl().conv2d_grad_weight(grad_y, x, w_shape, stride, padding)


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias):
    """(dL/dw, dL/db or None): the weight gradient and, if ``with_bias``, the bias's (sum of grad_y over
    all but the channel axis)."""
    return _impl().conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias)


def maxpool2d_forward(x, kernel_size, stride, padding):
    """Window maxima and, per output, the flat index h*W+w of the (first) maximum in its plane."""
    return _impl().maxpool2d_forward(x, kernel_size, stride, padding)


def maxpool2d_backward(grad_y, indices, x_shape):
    """Route each output gradient to the input position that won the max (adding where windows overlap)."""
    return _impl().maxpool2d_backward(grad_y, indices, x_shape)


def cross_entropy_index(z, t, ignore_index):
    """Softmax-cross-entropy of logits (N, C) with int64 class indices (N,), forward and backward at once:
    (sum of the losses, how many counted, first out-of-range sample or -1, dL/dz of each loss (N, C))."""
    return _impl().cross_entropy_index(z, t, ignore_index)


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One torch.optim.SGD step on parameter values p, in place (buf: the momentum buffer, or None)."""
    return _impl().sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first)
