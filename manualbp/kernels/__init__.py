"""The arithmetic of every layer, loss and optimizer: one function per operation, and the one place that
decides where it runs.

Layers call the functions below (``kernels.conv2d_forward(x, w, b, stride, padding)``) and never ask
where they are running.  Each function looks at the arrays it is given:

- NumPy arrays run on the CPU: the Numba kernels of ``kernels/cpu/``, or, after
  ``manualbp.set_backend("numpy")``, the plain NumPy twins of ``kernels/reference.py`` (the readable
  specification, the same names and signatures: step through them in a debugger);
- numba.cuda device arrays run on the GPU: the kernels of ``kernels/cuda/`` (imported on first use, so
  the CPU framework never imports numba.cuda);
- a mix of the two is refused with a TypeError that says how to move the batch: nothing is copied behind
  your back, since a hidden copy per layer would cost more than the layer.

Every implementation takes C-contiguous arrays of one float dtype (float32 or float64 on the CPU,
float32 on the GPU) and never validates: the layers check shapes and dtypes before they get here.
Each docstring gives the operation's equation and the derivation label it computes, from
derivations/01-chain-rule.md (C*), derivations/03-linear.md (L*), derivations/04-conv2d.md (K*),
derivations/05-maxpool.md (P*), derivations/06-activations.md (A*) and derivations/09-sgd-momentum.md (O*);
the losses' operations are in ``losses.py``.

Dimension letters used in every kernel file:
  N batch, C input channels (or classes), H/W input height/width, O output channels, KH/KW kernel
  height/width, OH/OW output height/width, SH/SW stride, PH/PW zero padding, DH/DW dilation, G groups;
  S the positions of a sample beyond the class axis (d1*d2*...) in the class losses.
"""
import numpy as np

from ..backend import get_backend
from ..device import is_cuda_array, move
from . import reference

_modules = {}


def _cpu():
    cpu = _modules.get("cpu")
    if cpu is None:
        from . import cpu
        from .cpu.heap import keep_freed_memory
        keep_freed_memory()  # reuse the last step's memory rather than fault in fresh pages (cpu/heap.py)
        _modules["cpu"] = cpu
    return cpu


def _cuda():
    gpu = _modules.get("cuda")
    if gpu is None:
        from . import cuda as gpu
        _modules["cuda"] = gpu
    return gpu


def _impl(op, *arrays):
    """The module that runs ``op`` on these arrays: kernels.cuda, kernels.cpu or kernels.reference.

    Called for every operation of every step, so it only looks at types: NumPy arrays (and scalars,
    None, Python numbers, which go anywhere) say nothing more; a device array says GPU.
    """
    for a in arrays:  # the common case first: NumPy arrays only, on the CPU
        if type(a) is not np.ndarray:
            break
    else:
        if get_backend() == "numpy":
            return reference
        return _modules.get("cpu") or _cpu()
    on_gpu = on_cpu = False
    for a in arrays:
        kind = type(a)
        if kind is np.ndarray:
            on_cpu = True
        elif a is None or kind in _ANYWHERE or isinstance(a, np.generic):
            continue
        elif is_cuda_array(a):
            on_gpu = True
        else:
            on_cpu = True
    if on_gpu:
        if on_cpu:
            raise TypeError(
                f"kernels.{op}: some arrays are numba.cuda device arrays on the GPU and some are NumPy arrays "
                f"on the CPU; keep a step on one device: move the batch with manualbp.to_device(x) (Network.fit "
                f"does it for you), or bring the model back with model.to('cpu')")
        return _modules.get("cuda") or _cuda()
    if get_backend() == "numpy":
        return reference
    return _modules.get("cpu") or _cpu()


_ANYWHERE = (bool, int, float, str, tuple)  # scalars and shapes: not arrays


def like(ref, a):
    """``a`` on the device of ``ref``: a loss's class weights or an optimizer's buffer go up to the GPU
    (float32) or come back to the CPU; an array already there is returned as it is.  None stays None."""
    if a is None or is_cuda_array(a) == is_cuda_array(ref):
        return a
    if is_cuda_array(ref):
        return move(np.ascontiguousarray(a, dtype=np.float32), "cuda")
    return move(a, "cpu")


def empty_like(a):
    """An uninitialised array of a's shape and dtype, where a is (an optimizer's buffer)."""
    return _impl("empty_like", a).empty_like(a) if is_cuda_array(a) else np.empty_like(a)


# --- products, convolution, pooling (derivations 03, 04, 05) ---------------------------------------------

def matmul(a, b, transpose_a=False, transpose_b=False, out=None):
    """op(a) @ op(b) for 2-D arrays, op = transpose when asked. (M, K) @ (K, N) -> (M, N).  (L1)-(L3)

    ``out``: where to write it on the GPU (a parameter's slot in its optimizer's flat gradient buffer,
    ``Parameter.grad_buffer()``); None, always on the CPU, makes a new array."""
    if out is None:
        return _impl("matmul", a, b).matmul(a, b, transpose_a, transpose_b)
    return _impl("matmul", a, b, out).matmul(a, b, transpose_a, transpose_b, out=out)


def linear_forward(x, w, b):
    """y = x W^T + b: x (N, in), w (out, in), b (out,) or None -> (N, out).  (L1)"""
    return _impl("linear_forward", x, w, b).linear_forward(x, w, b)


def bias_grad(grad_y, out=None):
    """dL/db[o] = sum of grad_y over every axis but 1 (the output features or channels).  (L4), (K3)
    ``out`` as ``matmul``'s."""
    if out is None:
        return _impl("bias_grad", grad_y).bias_grad(grad_y)
    return _impl("bias_grad", grad_y, out).bias_grad(grad_y, out=out)


def conv2d_forward(x, w, b, stride, padding, dilation=(1, 1), groups=1):
    """y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,g(o)*C/G+c,i*SH+p*DH,j*SW+q*DW].
    (N,C,H,W), w (O,C/G,KH,KW) -> (N,O,OH,OW).  (K1), (K10)"""
    return _impl("conv2d_forward", x, w, b).conv2d_forward(x, w, b, stride, padding, dilation, groups)


def conv2d_grad_input(grad_y, w, x_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dx from dL/dy: each gradient flows back along the weight that carried it. -> (N,C,H,W).  (K5), (K13)"""
    return _impl("conv2d_grad_input", grad_y, w).conv2d_grad_input(grad_y, w, x_shape, stride, padding,
                                                                    dilation, groups)


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding, dilation=(1, 1), groups=1):
    """dL/dw[o,c,p,q] = sum_{n,i,j} grad_y[n,o,i,j] * xpad[n,g(o)*C/G+c,i*SH+p*DH,j*SW+q*DW]. -> (O,C/G,KH,KW).
    (K4), (K12)"""
    return _impl("conv2d_grad_weight", grad_y, x).conv2d_grad_weight(grad_y, x, w_shape, stride, padding,
                                                                      dilation, groups)


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias, dilation=(1, 1), groups=1, out=(None, None)):
    """(dL/dw, dL/db or None): the weight gradient (K4), (K12) and, if ``with_bias``, the bias's (K3).
    ``out``: (where dL/dw goes, where dL/db goes), each as ``matmul``'s ``out``."""
    if out[0] is None and out[1] is None:
        return _impl("conv2d_grad_params", grad_y, x).conv2d_grad_params(grad_y, x, w_shape, stride, padding,
                                                                          with_bias, dilation, groups)
    return _impl("conv2d_grad_params", grad_y, x).conv2d_grad_params(grad_y, x, w_shape, stride, padding,
                                                                      with_bias, dilation, groups, out=out)


def pad2d(x, pads, mode):
    """x padded by pads = (left, right, top, bottom) with mode 'zeros', 'reflect', 'replicate' or 'circular':
    xpad[n,c,u,v] = x[n,c,rho_H(u),rho_W(v)], a gather.  (N,C,H,W) -> (N,C,top+H+bottom,left+W+right).  (K15)"""
    return _impl("pad2d", x).pad2d(x, pads, mode)


def pad2d_backward(grad_y, x_shape, pads, mode):
    """dL/dx of ``pad2d``: each padded pixel's gradient added back into the pixel it copied. -> x_shape.  (K16)"""
    return _impl("pad2d_backward", grad_y).pad2d_backward(grad_y, x_shape, pads, mode)


def maxpool2d_forward(x, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False):
    """(y, indices): window maxima (P1), (P6) and, per output, the flat index h*W+w of the first maximum (P3);
    OH, OW by (P5)."""
    return _impl("maxpool2d_forward", x).maxpool2d_forward(x, kernel_size, stride, padding, dilation, ceil_mode)


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size, stride, padding, dilation=(1, 1), ceil_mode=False):
    """Each output gradient goes to the input that won its max, summed where windows overlap.  (P4)"""
    return _impl("maxpool2d_backward", grad_y, indices).maxpool2d_backward(grad_y, indices, x_shape, kernel_size,
                                                                           stride, padding, dilation, ceil_mode)


# --- element by element (derivations 06, 01) ---------------------------------------------------------------

def relu_forward(x):
    """y = max(x, 0).  (A1)"""
    return _impl("relu_forward", x).relu_forward(x)


def relu_backward(grad_y, x):
    """dL/dx = dL/dy where x > 0, else 0.  (A2)"""
    return _impl("relu_backward", grad_y, x).relu_backward(grad_y, x)


def leaky_relu_forward(x, negative_slope):
    """y = x where x > 0, else slope * x.  (A3)"""
    return _impl("leaky_relu_forward", x).leaky_relu_forward(x, negative_slope)


def leaky_relu_backward(grad_y, x, negative_slope):
    """dL/dx = dL/dy where x > 0, else slope * dL/dy.  (A4)"""
    return _impl("leaky_relu_backward", grad_y, x).leaky_relu_backward(grad_y, x, negative_slope)


def sigmoid_forward(x):
    """s = 1 / (1 + e^-x).  (A5)"""
    return _impl("sigmoid_forward", x).sigmoid_forward(x)


def sigmoid_backward(grad_y, s):
    """dL/dx = dL/dy * s (1 - s), from the output s alone.  (A6)"""
    return _impl("sigmoid_backward", grad_y, s).sigmoid_backward(grad_y, s)


def tanh_forward(x):
    """t = tanh(x).  (A7)"""
    return _impl("tanh_forward", x).tanh_forward(x)


def tanh_backward(grad_y, t):
    """dL/dx = dL/dy * (1 - t^2).  (A8)"""
    return _impl("tanh_backward", grad_y, t).tanh_backward(grad_y, t)


def softmax_forward(x, axis):
    """p_i = e^{x_i} / sum_j e^{x_j} along ``axis``.  (A9)"""
    return _impl("softmax_forward", x).softmax_forward(x, axis)


def softmax_backward(grad_y, p, axis):
    """dL/dx = p * (g - sum_j g_j p_j) along ``axis``.  (A11)"""
    return _impl("softmax_backward", grad_y, p).softmax_backward(grad_y, p, axis)


def log_softmax_forward(x, axis):
    """log p_i = x_i - m - log sum_j e^{x_j - m} along ``axis``, m the maximum.  (A12)"""
    return _impl("log_softmax_forward", x).log_softmax_forward(x, axis)


def log_softmax_backward(grad_y, y, axis):
    """dL/dx = g - e^y sum_j g_j along ``axis``, from the output y = log p.  (A13)"""
    return _impl("log_softmax_backward", grad_y, y).log_softmax_backward(grad_y, y, axis)


def add_(a, b):
    """a += b in place; returns a.  Gradients of a value used twice add.  (C3)"""
    return _impl("add_", a, b).add_(a, b)


def scale(a, s):
    """s * a, s a scalar (a (1,) device array on the GPU) or an array of a's shape."""
    return _impl("scale", a, s).scale(a, s)


# --- the optimizer (derivation 09) -------------------------------------------------------------------------

def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One torch.optim.SGD step on parameter values p, in place (buf: the momentum buffer, or None).  (O3)-(O6)"""
    return _impl("sgd_update", p, g, buf).sgd_update(p, g, buf, lr, momentum, dampening, weight_decay,
                                                     nesterov, first)


from .activation_extra import *
from .adaptive import *
from .losses import *
from .norm import *
from .norm_relu import *
from .pooling_avg import *
from .residual import *
