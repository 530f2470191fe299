"""Element-by-element kernels on the GPU: activations, bias, the SGD update; and the block reduction.

Derivations: derivations/06-activations.md (A1-A8), derivations/09-sgd-momentum.md (O3-O6),
derivations/03-linear.md (the bias), derivations/11-gpu-tiled-matmul.md (syncthreads).

One thread per element, ``i = cuda.grid(1)``, for everything but the reductions.  Those (the bias
gradient here, the losses in ``cuda_loss.py``) use a fixed block of THREADS threads: thread t adds
the elements t, t + THREADS, t + 2*THREADS, ... in that order, then ``tree_sum`` halves the THREADS
partial sums in shared memory.  The order of every addition depends on the array's size only, never
on timing, so the result is the same bit for bit on every run (no float atomics anywhere).

Every literal is a float32 (``float32(1.0)``): a bare ``1.0`` is a float64 and drags the
arithmetic around it into float64, which a GPU runs many times slower.
"""
import math

import numpy as np
from numba import cuda, float32

from .cuda_launch import THREADS, blocks, device_f32, flat, output

# --- the block reduction --------------------------------------------------------------------------------


@cuda.jit(device=True, inline=True)
def tree_sum(buf):
    """Sum the THREADS values buf[0..THREADS-1] of a shared array; every thread gets the total.

    Call it from all THREADS threads of the block (it synchronises them), after each thread t has
    written its partial sum to buf[t].
    """
    t = cuda.threadIdx.x
    stride = THREADS // 2
    while stride > 0:
        # Protects the partial sums: every thread's previous write to buf (its own partial sum, or
        # the previous halving round) is finished before anyone reads it.
        cuda.syncthreads()
        if t < stride:
            buf[t] += buf[t + stride]
        stride //= 2
    # Protects buf[0]: the last round's write is finished before every thread reads the total.
    cuda.syncthreads()
    total = buf[0]
    # Protects the total: nobody writes buf again (a second reduction) before everyone has read it.
    cuda.syncthreads()
    return total


# --- activations (derivations/06-activations.md) -----------------------------------------------------------

def _relu_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = max(float32(0.0), v)  # (A1)


def _relu_backward(gy, x, gx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        gx[i] = gy[i] if x[i] > float32(0.0) else float32(0.0)  # (A2)


def _leaky_relu_forward(x, slope, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        y[i] = v if v > float32(0.0) else v * slope  # (A3)


def _leaky_relu_backward(gy, x, slope, gx):
    i = cuda.grid(1)
    if i < x.shape[0]:
        gx[i] = gy[i] if x[i] > float32(0.0) else gy[i] * slope  # (A4)


def _sigmoid_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        e = math.exp(-abs(v))  # e^-|x| <= 1: no overflow for any x
        one = float32(1.0)
        y[i] = one / (one + e) if v >= float32(0.0) else e / (one + e)  # (A5)


def _sigmoid_backward(gy, y, gx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        s = y[i]
        gx[i] = gy[i] * s * (float32(1.0) - s)  # (A6), from the saved output s


def _tanh_forward(x, y):
    i = cuda.grid(1)
    if i < x.shape[0]:
        y[i] = math.tanh(x[i])  # (A7)


def _tanh_backward(gy, y, gx):
    i = cuda.grid(1)
    if i < y.shape[0]:
        t = y[i]
        gx[i] = gy[i] * (float32(1.0) - t * t)  # (A8), from the saved output t


relu_forward_kernel = cuda.jit(_relu_forward)
relu_backward_kernel = cuda.jit(_relu_backward)
leaky_relu_forward_kernel = cuda.jit(_leaky_relu_forward)
leaky_relu_backward_kernel = cuda.jit(_leaky_relu_backward)
sigmoid_forward_kernel = cuda.jit(_sigmoid_forward)
sigmoid_backward_kernel = cuda.jit(_sigmoid_backward)
tanh_forward_kernel = cuda.jit(_tanh_forward)
tanh_backward_kernel = cuda.jit(_tanh_backward)


def _pointwise(kernel, who, arrays, scalars=(), out=None):
    """Check same-shape float32 device arrays, launch ``kernel`` on their flat views, return the output."""
    first = arrays[0][1]
    for name, a in arrays:
        device_f32(a, who, name, shape=first.shape)
    y = output(out, first.shape, who)
    if y.size:
        args = [flat(a) for _, a in arrays] + [np.float32(s) for s in scalars] + [flat(y)]
        kernel[blocks(y.size), THREADS](*args)
    return y


def relu_forward(x, out=None):
    """max(x, 0) elementwise (A1).  NumPy twin: ``manualbp.nn.ReLU.forward``.  ``out=x`` works in place."""
    return _pointwise(relu_forward_kernel, "cuda relu_forward", [("x", x)], out=out)


def relu_backward(grad_y, x, out=None):
    """grad_y where x > 0, else 0 (A2).  NumPy twin: ``manualbp.nn.ReLU.backward``."""
    return _pointwise(relu_backward_kernel, "cuda relu_backward", [("grad_y", grad_y), ("x", x)], out=out)


def leaky_relu_forward(x, negative_slope=0.01, out=None):
    """x if x > 0 else negative_slope * x (A3).  NumPy twin: ``manualbp.nn.LeakyReLU.forward``."""
    return _pointwise(leaky_relu_forward_kernel, "cuda leaky_relu_forward", [("x", x)], (negative_slope,), out)


def leaky_relu_backward(grad_y, x, negative_slope=0.01, out=None):
    """grad_y if x > 0 else negative_slope * grad_y (A4).  NumPy twin: ``manualbp.nn.LeakyReLU.backward``."""
    return _pointwise(leaky_relu_backward_kernel, "cuda leaky_relu_backward", [("grad_y", grad_y), ("x", x)],
                      (negative_slope,), out)


def sigmoid_forward(x, out=None):
    """1 / (1 + e^-x), computed from e^-|x| (A5).  NumPy twin: ``manualbp.nn.Sigmoid.forward``."""
    return _pointwise(sigmoid_forward_kernel, "cuda sigmoid_forward", [("x", x)], out=out)


def sigmoid_backward(grad_y, y, out=None):
    """grad_y * s * (1 - s) from the saved output s = y (A6).  NumPy twin: ``manualbp.nn.Sigmoid.backward``."""
    return _pointwise(sigmoid_backward_kernel, "cuda sigmoid_backward", [("grad_y", grad_y), ("y", y)], out=out)


def tanh_forward(x, out=None):
    """tanh(x) (A7).  NumPy twin: ``manualbp.nn.Tanh.forward``."""
    return _pointwise(tanh_forward_kernel, "cuda tanh_forward", [("x", x)], out=out)


def tanh_backward(grad_y, y, out=None):
    """grad_y * (1 - t^2) from the saved output t = y (A8).  NumPy twin: ``manualbp.nn.Tanh.backward``."""
    return _pointwise(tanh_backward_kernel, "cuda tanh_backward", [("grad_y", grad_y), ("y", y)], out=out)


# --- bias (derivations/03-linear.md) ---------------------------------------------------------------------

def _bias_add(y, b, inner):
    """y[n, c, r] += b[c] on the flat view of (N, C, *) with inner = prod(*)."""
    i = cuda.grid(1)
    if i < y.shape[0]:
        c = (i // inner) % b.shape[0]
        y[i] += b[c]


def _bias_grad(gy, inner, out, accumulate):
    """Block c: out[c] (+)= sum over n and r of gy[n, c, r]; a fixed-order reduction, one block per channel."""
    buf = cuda.shared.array(THREADS, float32)
    c = cuda.blockIdx.x
    t = cuda.threadIdx.x
    channels = out.shape[0]
    count = (gy.shape[0] // (channels * inner)) * inner  # N * inner elements belong to channel c
    part = float32(0.0)
    for e in range(t, count, THREADS):  # trips depend on the shapes only, not on the grid
        n = e // inner
        r = e - n * inner
        part += gy[(n * channels + c) * inner + r]
    buf[t] = part
    total = tree_sum(buf)  # every thread of the block calls it: it synchronises them
    if t == 0:
        if accumulate:
            total += out[c]
        out[c] = total


bias_add_kernel = cuda.jit(_bias_add)
bias_grad_kernel = cuda.jit(_bias_grad)


def bias_add(y, b):
    """y[:, c, ...] += b[c] in place, for y (N, C) or (N, C, H, W); returns y.

    NumPy twin: ``y + b`` (Linear) or ``y + b[:, None, None]`` (Conv2d).
    """
    who = "cuda bias_add"
    device_f32(y, who, "y", ndim=(2, 3, 4))
    device_f32(b, who, "bias", shape=(y.shape[1],))
    inner = int(np.prod(y.shape[2:], dtype=np.int64))
    if y.size:
        bias_add_kernel[blocks(y.size), THREADS](flat(y), b, inner)
    return y


def bias_grad(grad_y, out=None, accumulate=False):
    """dL/db[c] = sum of grad_y[:, c, ...] over the batch and positions -> (C,).

    NumPy twin: ``grad_y.sum(axis=0)`` (Linear) or ``grad_y.sum(axis=(0, 2, 3))`` (Conv2d).  ``out``
    receives it, or it is added to ``out`` when ``accumulate``.  One block per channel, fixed order.
    """
    who = "cuda bias_grad"
    device_f32(grad_y, who, "grad_y", ndim=(2, 3, 4))
    channels = grad_y.shape[1]
    db = output(out, (channels,), who)
    inner = int(np.prod(grad_y.shape[2:], dtype=np.int64))
    if channels:
        bias_grad_kernel[channels, THREADS](flat(grad_y), inner, db, bool(accumulate))
    return db


# --- the SGD update (derivations/09-sgd-momentum.md) -----------------------------------------------------

def _sgd_update(p, g, buf, lr, mu, one_minus_tau, wd, nesterov, first_step):
    """One torch.optim.SGD step for one element; ``buf`` is not touched when mu == 0."""
    i = cuda.grid(1)
    if i < p.shape[0]:
        d = g[i]
        if wd != float32(0.0):
            d += wd * p[i]  # (O3)
        if mu != float32(0.0):
            if first_step:
                b = d  # the first buffer is the gradient itself, undamped (O4)
            else:
                b = mu * buf[i] + one_minus_tau * d  # (O4)
            buf[i] = b
            if nesterov:
                d = d + mu * b  # (O5)
            else:
                d = b
        p[i] -= lr * d  # (O6)


sgd_update_kernel = cuda.jit(_sgd_update)


def sgd_update(param, grad, momentum_buffer, lr, momentum=0.0, dampening=0.0, nesterov=False,
               weight_decay=0.0, first_step=False):
    """theta <- theta - lr * d in place, with torch.optim.SGD's momentum, dampening, Nesterov, weight decay.

    NumPy twin: ``manualbp.optim.SGD.step`` for one parameter.  ``momentum_buffer`` (same shape,
    float32 device array) is updated in place; it may be None when momentum == 0.  Pass
    ``first_step=True`` on the parameter's first update: the buffer then becomes the gradient,
    whatever it held (torch's undamped first buffer).  Returns ``param``.
    """
    who = "cuda sgd_update"
    device_f32(param, who, "param")
    device_f32(grad, who, "grad", shape=param.shape)
    if momentum != 0:
        device_f32(momentum_buffer, who, "momentum_buffer", shape=param.shape)
        buf = momentum_buffer
    else:
        buf = param  # never read or written when momentum == 0
    if param.size:
        sgd_update_kernel[blocks(param.size), THREADS](
            flat(param), flat(grad), flat(buf), np.float32(lr), np.float32(momentum), np.float32(1.0 - dampening),
            np.float32(weight_decay), bool(nesterov), bool(first_step))
    return param
