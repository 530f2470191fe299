"""The kernels in plain NumPy: the readable specification.

Derivations: derivations/03-linear.md (matmul), derivations/04-conv2d.md (convolution),
derivations/05-maxpool.md (max-pooling), derivations/06-activations.md (activations, softmax),
derivations/09-sgd-momentum.md (the update), derivations/01-chain-rule.md (gradients add, (C3)); the
losses' twins are in ``reference_loss.py`` and are imported here, so every operation of
``kernels/__init__.py`` is ``reference.<name>``.

Every optimized kernel in ``kernels/cpu/`` and ``kernels/cuda/`` has a twin here with the same name and
signature, and ``tests/test_kernels.py`` (and the simulator tests of ``tests/cuda/``) hold them equal.
These versions are written to be read (and stepped through in a debugger with
``manualbp.set_backend("numpy")``), not to be fast.

Legend (as in ``kernels/__init__.py``): N batch, C input channels, H/W input height/width,
O output channels, KH/KW kernel height/width, OH/OW output height/width, SH/SW stride,
PH/PW zero padding.  ``stride``, ``padding`` and ``kernel_size`` are (h, w) pairs of ints.

Equation labels cited in the comments:
  (L1) y = x W^T + b                       Linear forward           derivations/03-linear.md
  (L2) dL/dx = dL/dy W                     Linear grad-input
  (L3) dL/dW = (dL/dy)^T x                 Linear grad-weight
  (K1) y[n,o,i,j] = b[o] + sum_{c,p,q} w[o,c,p,q] * xpad[n,c,i*SH+p,j*SW+q]
                                           conv forward, xpad = x zero-padded by PH/PW on each side
                                                                    derivations/04-conv2d.md
  (K2) OH = (H + 2*PH - KH) // SH + 1,  OW = (W + 2*PW - KW) // SW + 1
                                           conv output size
  (K3) dL/db[o] = sum_{n,i,j} dL/dy[n,o,i,j]
                                           conv grad-bias
  (K4) dL/dw[o,c,p,q] = sum_{n,i,j} dL/dy[n,o,i,j] * xpad[n,c,i*SH+p,j*SW+q]
                                           conv grad-weight: correlate the input with dL/dy
  (K5) dL/dxpad[n,c,i*SH+p,j*SW+q] += w[o,c,p,q] * dL/dy[n,o,i,j]   (summed over o,i,j,p,q),
       dL/dx = dL/dxpad without its padding border
                                           conv grad-input: each gradient flows back along the weight
                                           that carried it (for stride 1: a "full" convolution of
                                           dL/dy with the flipped kernel)
  (P1) y[n,c,i,j] = max_{p,q} xpad[n,c,i*SH+p,j*SW+q]
                                           max-pool forward, xpad = x padded with -inf
                                                                    derivations/05-maxpool.md
  (P2) OH = (H + 2*PH - KH) // SH + 1,  OW = (W + 2*PW - KW) // SW + 1
                                           max-pool output size
  (P3) a[n,c,i,j] = h*W + w of the first maximum of the window, scanning p then q
       (a NaN counts as a maximum, as in torch); h, w index the unpadded input
                                           max-pool argmax (torch's return_indices)
  (P4) dL/dx[n,c,h,w] = sum_{i,j : a[n,c,i,j] = h*W+w} dL/dy[n,c,i,j]
                                           max-pool backward: the gradient goes to the winner only
"""
import numpy as np

# --- matrix product ----------------------------------------------------------------------------------


def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(a) @ op(b), where op transposes when asked.

    Inputs:
    - a: (M, K) array, or (K, M) when transpose_a
    - b: (K, N) array, or (N, K) when transpose_b
    - transpose_a, transpose_b: bools

    Returns:
    - c: (M, N) C-contiguous array of a's dtype, c[m, n] = sum_k op(a)[m, k] * op(b)[k, n]

    Linear uses it three ways: x @ W^T (L1), dL/dy @ W (L2), (dL/dy)^T @ x (L3).
    """
    a = a.T if transpose_a else a  # (M, K)
    b = b.T if transpose_b else b  # (K, N)
    return np.ascontiguousarray(a @ b)


# --- convolution -------------------------------------------------------------------------------------


def _out_size(size, kernel, stride, padding):
    """(K2)/(P2): how many window positions fit in the padded input along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def _window(p, q, OH, OW, stride):
    """The index tuple that picks xpad[:, :, i*SH + p, j*SW + q] for all i < OH, j < OW.

    Sliding the kernel over the image and looking at its (p, q) tap gives, for all output positions at
    once, a strided slice of the padded input of shape (N, C, OH, OW).
    """
    SH, SW = stride
    return (slice(None), slice(None), slice(p, p + SH * (OH - 1) + 1, SH), slice(q, q + SW * (OW - 1) + 1, SW))


def _pad(x, padding, value=0.0):
    PH, PW = padding
    return np.pad(x, ((0, 0), (0, 0), (PH, PH), (PW, PW)), constant_values=value)


def conv2d_forward(x, w, b, stride, padding):
    """Forward pass of a 2-D convolution (cross-correlation, as in every deep-learning library).

    Inputs:
    - x: input images, (N, C, H, W)
    - w: filters, (O, C, KH, KW)
    - b: biases, (O,), or None
    - stride: (SH, SW) ints
    - padding: (PH, PW) ints, zeros added on each side of each image

    Returns:
    - y: (N, O, OH, OW), with OH = (H + 2*PH - KH) // SH + 1 and OW = (W + 2*PW - KW) // SW + 1  (K2)
    """
    N, _, H, W = x.shape  # (N, C, H, W)
    O, _, KH, KW = w.shape
    OH = _out_size(H, KH, stride[0], padding[0])  # (K2)
    OW = _out_size(W, KW, stride[1], padding[1])
    xpad = _pad(x, padding)  # (N, C, H + 2*PH, W + 2*PW)
    y = np.zeros((N, O, OH, OW), dtype=x.dtype)
    # One kernel tap (p, q) at a time: every output position looks at xpad[n, c, i*SH+p, j*SW+q],
    # which for all (i, j) is one strided slice; the tap's weights w[:, :, p, q] mix C channels into O.
    for p in range(KH):
        for q in range(KW):
            patch = xpad[_window(p, q, OH, OW, stride)]  # (N, C, OH, OW)
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, p, q])  # sum over c of w * xpad, eq. (K1)
    if b is not None:
        y += b[None, :, None, None]  # + b[o], eq. (K1)
    return y


def conv2d_grad_input(grad_y, w, x_shape, stride, padding):
    """dL/dx of a 2-D convolution.

    Inputs:
    - grad_y: dL/dy, (N, O, OH, OW)
    - w: filters, (O, C, KH, KW)
    - x_shape: (N, C, H, W), the shape of the forward input
    - stride, padding: (h, w) int pairs, as in the forward pass

    Returns:
    - grad_x: dL/dx, (N, C, H, W)
    """
    N, C, H, W = x_shape
    _, _, KH, KW = w.shape
    _, _, OH, OW = grad_y.shape
    PH, PW = padding
    grad_xpad = np.zeros((N, C, H + 2 * PH, W + 2 * PW), dtype=grad_y.dtype)
    # Input xpad[n, c, i*SH+p, j*SW+q] reached y[n, o, i, j] through w[o, c, p, q], so it receives
    # w[o, c, p, q] * dL/dy[n, o, i, j]; one tap at a time, that is a strided slice again.  Where
    # windows overlap (stride < kernel), an input receives from several taps: the += adds them.
    for p in range(KH):
        for q in range(KW):
            grad_xpad[_window(p, q, OH, OW, stride)] += np.einsum(
                "nohw,oc->nchw", grad_y, w[:, :, p, q])  # eq. (K5)
    # The padding border was not an input: its gradient is dropped, eq. (K5).
    return np.ascontiguousarray(grad_xpad[:, :, PH:PH + H, PW:PW + W])


def conv2d_grad_weight(grad_y, x, w_shape, stride, padding):
    """dL/dw of a 2-D convolution.

    Inputs:
    - grad_y: dL/dy, (N, O, OH, OW)
    - x: the forward input, (N, C, H, W)
    - w_shape: (O, C, KH, KW)
    - stride, padding: (h, w) int pairs, as in the forward pass

    Returns:
    - grad_w: dL/dw, (O, C, KH, KW)
    """
    _, _, KH, KW = w_shape  # (O, C, KH, KW)
    _, _, OH, OW = grad_y.shape
    xpad = _pad(x, padding)  # (N, C, H + 2*PH, W + 2*PW)
    grad_w = np.zeros(w_shape, dtype=grad_y.dtype)
    # w[o, c, p, q] multiplied xpad[n, c, i*SH+p, j*SW+q] into every y[n, o, i, j]: its gradient sums
    # dL/dy times that input over the batch and over all output positions.
    for p in range(KH):
        for q in range(KW):
            patch = xpad[_window(p, q, OH, OW, stride)]  # (N, C, OH, OW)
            grad_w[:, :, p, q] = np.einsum("nohw,nchw->oc", grad_y, patch)  # eq. (K4)
    return grad_w


def conv2d_grad_params(grad_y, x, w_shape, stride, padding, with_bias):
    """(dL/dw, dL/db) of a 2-D convolution: ``conv2d_grad_weight`` and, if ``with_bias``, the bias
    gradient, dL/db[o] = sum over n, i, j of grad_y[n, o, i, j] (eq. (K3)); else (dL/dw, None)."""
    grad_w = conv2d_grad_weight(grad_y, x, w_shape, stride, padding)
    return grad_w, (grad_y.sum(axis=(0, 2, 3)) if with_bias else None)  # eq. (K3)


def linear_forward(x, w, b):
    """y = x W^T + b  (L1).  x (N, in), w (out, in), b (out,) or None -> y (N, out)."""
    y = matmul(x, w, transpose_b=True)  # x W^T
    if b is not None:
        y += b  # broadcast b over the rows
    return y


def bias_grad(grad_y):
    """dL/db: grad_y summed over every axis but 1, the channel (or feature) axis  (L4), (K3).
    (N, O) -> (O,);  (N, O, OH, OW) -> (O,)."""
    return grad_y.sum(axis=(0,) + tuple(range(2, grad_y.ndim)))


# --- max-pooling -------------------------------------------------------------------------------------


def maxpool2d_forward(x, kernel_size, stride, padding):
    """Forward pass of 2-D max-pooling, with torch's argmax indices.

    Inputs:
    - x: (N, C, H, W)
    - kernel_size: (KH, KW) ints
    - stride: (SH, SW) ints
    - padding: (PH, PW) ints, -inf added on each side (it never wins), PH <= KH // 2

    Returns a tuple of:
    - y: window maxima, (N, C, OH, OW), OH = (H + 2*PH - KH) // SH + 1, OW likewise  (P2)
    - indices: int64 (N, C, OH, OW), the flat position h*W + w of each maximum in its (unpadded)
      H x W plane; on ties the first in window order (p, then q) wins, and a NaN beats everything  (P3)
    """
    N, C, H, W = x.shape
    KH, KW = kernel_size
    PH, PW = padding
    OH = _out_size(H, KH, stride[0], PH)  # (P2)
    OW = _out_size(W, KW, stride[1], PW)
    xpad = _pad(x, padding, value=-np.inf)  # (N, C, H + 2*PH, W + 2*PW)
    # Flat index h*W + w of every padded position (meaningless, and never chosen, in the border).
    hh = np.arange(-PH, H + PH)[:, None]
    ww = np.arange(-PW, W + PW)[None, :]
    flat = np.broadcast_to(hh * W + ww, xpad.shape)
    inside = np.broadcast_to((hh >= 0) & (hh < H) & (ww >= 0) & (ww < W), xpad.shape)

    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    indices = np.full((N, C, OH, OW), -1, dtype=np.int64)
    # Visit the window's taps in order, p then q, keeping the best so far (P1).  A tap takes over when
    # it is strictly greater (so the first of equal maxima stays, (P3)), or is NaN (torch lets NaN win),
    # or when nothing real has been seen yet (a window of -inf values reports its first real position).
    for p in range(KH):
        for q in range(KW):
            win = _window(p, q, OH, OW, stride)
            val, pos, real = xpad[win], flat[win], inside[win]  # each (N, C, OH, OW)
            take = real & ((val > y) | np.isnan(val) | (indices < 0))
            y = np.where(take, val, y)  # eq. (P1)
            indices = np.where(take, pos, indices)  # eq. (P3)
    return y, indices


def maxpool2d_backward(grad_y, indices, x_shape, kernel_size=None, stride=None, padding=None):
    """Backward pass of 2-D max-pooling.

    Inputs:
    - grad_y: dL/dy, (N, C, OH, OW)
    - indices: int64 (N, C, OH, OW), the argmax positions returned by ``maxpool2d_forward``
    - x_shape: (N, C, H, W)
    - kernel_size, stride, padding: the window geometry; not needed here, since the indices say where
      each gradient goes (the GPU's kernel, a gather, uses it to find the windows of an input)

    Returns:
    - grad_x: dL/dx, (N, C, H, W): each dL/dy goes to the input that won the max; an input that won
      several overlapping windows receives the sum (P4), everything else gets 0
    """
    N, C, H, W = x_shape
    grad_x = np.zeros((N * C, H * W), dtype=grad_y.dtype)  # one row per (n, c) plane
    rows = np.arange(N * C)[:, None]  # (N*C, 1)
    # np.add.at adds repeated indices one by one (a plain += would keep only one of them), in order.
    np.add.at(grad_x, (rows, indices.reshape(N * C, -1)), grad_y.reshape(N * C, -1))  # eq. (P4)
    return grad_x.reshape(N, C, H, W)


# --- the optimizer step (twin of cpu/optim.py) -------------------------------------------------------


def sgd_update(p, g, buf, lr, momentum, dampening, weight_decay, nesterov, first):
    """One step of SGD on a parameter, in place, as torch.optim.SGD computes it (O3)-(O6).

    Derivation: derivations/09-sgd-momentum.md.

    Inputs:
    - p: the parameter's values, any shape, updated in place
    - g: dL/dp, p's shape (not modified)
    - buf: the momentum buffer, p's shape, updated in place (written at the first step); None when
      momentum is 0
    - lr, momentum, dampening, weight_decay: floats; nesterov, first: bools

    Every scalar is cast to p's dtype first, so a float32 parameter is updated in float32.
    """
    t = p.dtype.type
    if weight_decay != 0:
        g = g + t(weight_decay) * p  # (O3)
    if momentum != 0:
        if first:
            buf[...] = g  # the first buffer is the gradient itself, undamped (O4)
        else:
            buf *= t(momentum)
            buf += t(1 - dampening) * g  # (O4)
        g = g + t(momentum) * buf if nesterov else buf  # (O5)
    p -= t(lr) * g  # (O6)


def add_(a, b):
    """a += b in place (gradients accumulate: a parameter used twice gets the sum, (C3)); returns a."""
    a += b
    return a


def scale(a, s):
    """s * a: s is a scalar (a NumPy scalar, or a 1-element array) or an array of a's shape."""
    return s * a


# --- activations and softmax (derivations/06-activations.md) ----------------------------------------


def relu_forward(x):
    """y = max(x, 0)  (A1)."""
    return np.where(x > 0, x, x.dtype.type(0))


def relu_backward(grad_y, x):
    """dL/dx = dL/dy where x > 0, else 0  (A2) (torch's choice at x = 0)."""
    return np.where(x > 0, grad_y, grad_y.dtype.type(0))


def leaky_relu_forward(x, negative_slope):
    """y = x where x > 0, else slope * x  (A3)."""
    return np.where(x > 0, x, x * x.dtype.type(negative_slope))


def leaky_relu_backward(grad_y, x, negative_slope):
    """dL/dx = dL/dy where x > 0, else slope * dL/dy  (A4)."""
    return np.where(x > 0, grad_y, grad_y * grad_y.dtype.type(negative_slope))


def sigmoid_forward(x):
    """s = 1 / (1 + e^-x)  (A5), evaluating e^-|x| only, so no exponent overflows: for x < 0 the
    same value is written e^x / (1 + e^x)."""
    e = np.exp(-np.abs(x))
    one = x.dtype.type(1)
    return np.where(x >= 0, one / (one + e), e / (one + e))


def sigmoid_backward(grad_y, s):
    """dL/dx = dL/dy * s (1 - s)  (A6): only the output s is needed."""
    return grad_y * s * (s.dtype.type(1) - s)


def tanh_forward(x):
    """t = tanh(x)  (A7)."""
    return np.tanh(x)


def tanh_backward(grad_y, t):
    """dL/dx = dL/dy * (1 - t^2)  (A8)."""
    return grad_y * (t.dtype.type(1) - t * t)


def softmax_forward(x, axis):
    """p = e^x / sum e^x along ``axis``  (A9), with the maximum subtracted first (it cancels)."""
    z = np.exp(x - x.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def softmax_backward(grad_y, p, axis):
    """dL/dx = p * (g - sum_j g_j p_j) along ``axis``  (A11): the Jacobian (A10) applied without building it."""
    return p * (grad_y - (grad_y * p).sum(axis=axis, keepdims=True))


from .reference_loss import *
