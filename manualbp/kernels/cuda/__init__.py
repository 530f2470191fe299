"""The GPU kernels: numba.cuda versions of every heavy operation of a training step.

Derivation: derivations/11-gpu-tiled-matmul.md (the tiled matrix product and what each
``cuda.syncthreads()`` protects); each kernel file names the derivations of its formulas.

    from numba import cuda
    from manualbp.kernels import cuda as gpu
    a, b = cuda.to_device(a_host), cuda.to_device(b_host)   # float32, C-contiguous
    c = gpu.matmul(a, b)                                     # a device array; stays on the GPU
    c_host = c.copy_to_host()

Every wrapper below takes numba device arrays, checks their dtype (float32; class targets and
max-pool indices int64) and shapes on the host, computes the launch grid, launches and returns
device arrays, so that parameters, activations and gradients stay on the GPU across a whole step.
Each operation of ``kernels/__init__.py`` is here under the same name, with the same positional
arguments as its NumPy twin ``kernels.reference.<name>``, which is the specification the tests hold
it to.  Scalar-like arguments (a loss's divisor, the upstream gradient) may be numbers or float32
device arrays of shape (1,), read on the GPU; a reduced loss comes back as a (1,) device array.

The layers, losses and SGD call these wrappers themselves when the model is on the GPU
(``model.to("cuda")``; see ``manualbp/device.py``): most users never call them directly.

Importing this module needs no GPU: every kernel is compiled lazily, on its first launch (an eager
signature would need a driver at import).  ``import manualbp`` never imports it.  Without a GPU the
kernels still run under numba's simulator (``NUMBA_ENABLE_CUDASIM=1`` set before numba is imported)
and compile to PTX with ``numba.cuda.compile_ptx``: that is how ``tests/cuda/`` checks them.

Files, by op family (the same families, and the same function names, as ``kernels/cpu/``):
  gemm.py         the tiled matrix product (shared-memory tiles + a register tile per thread)
  conv.py         conv2d forward / grad-input / grad-weight as implicit GEMM (dilation, groups), grad-params;
                  the padding modes (pad2d and its backward, both gathers)
  pool.py         max-pooling
  elementwise.py  activations, softmax, add / scale, linear, bias add / bias gradient, the block reduction
  loss.py         the reduction, the regression losses and binary cross-entropy
  loss_class.py   NLL and softmax-cross-entropy (class indices or probabilities)
  optim.py        the optimizer's update, empty_like
  launch.py       host-side checks, grid sizes, scalar-like arguments

Rules every kernel follows (the Numba habits of the design notes): float32 literals only
(``float32(0.5)``, never a bare ``0.5``, which is float64); loops around ``cuda.syncthreads()`` have
trip counts that do not depend on the launch grid, and no thread returns before a
``cuda.syncthreads()``; tiles are zero-filled outside the matrix; every sum is taken in an order
fixed by the shapes (no float atomics), so gradients are bit-for-bit reproducible.

Legend: N batch, C input channels, H/W input height/width, O output channels, KH/KW kernel size,
OH/OW output size, SH/SW stride, PH/PW padding, DH/DW dilation, G groups; M, N, K the sizes of a
matrix product.
"""
from . import conv, elementwise, gemm, loss, loss_class, optim, pool
from .conv import conv2d_forward, conv2d_grad_input, conv2d_grad_params, conv2d_grad_weight, pad2d, pad2d_backward
from .elementwise import (
    add_,
    bias_add,
    bias_grad,
    leaky_relu_backward,
    leaky_relu_forward,
    linear_forward,
    log_softmax_backward,
    log_softmax_forward,
    relu_backward,
    relu_forward,
    scale,
    sigmoid_backward,
    sigmoid_forward,
    softmax_backward,
    softmax_forward,
    tanh_backward,
    tanh_forward,
)
from .gemm import LARGE, SMALL, TileConfig, matmul
from .loss import (
    bce_loss,
    bce_loss_backward,
    bce_with_logits_loss,
    bce_with_logits_loss_backward,
    huber_loss,
    huber_loss_backward,
    l1_loss,
    l1_loss_backward,
    loss_reduce,
    loss_upstream,
    mse_loss,
    mse_loss_backward,
    smooth_l1_loss,
    smooth_l1_loss_backward,
)
from .loss_class import (
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_index,
    cross_entropy_probs,
    cross_entropy_probs_backward,
    nll_loss,
    nll_loss_backward,
)
from .optim import empty_like, sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward

FAMILIES = (gemm, conv, pool, elementwise, loss, loss_class, optim)  # the files that hold kernels

__all__ = [
    "LARGE",
    "SMALL",
    "TileConfig",
    "add_",
    "bce_loss",
    "bce_loss_backward",
    "bce_with_logits_loss",
    "bce_with_logits_loss_backward",
    "benchmark_matmul",
    "bias_add",
    "bias_grad",
    "conv2d_forward",
    "conv2d_grad_input",
    "conv2d_grad_params",
    "conv2d_grad_weight",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_index",
    "cross_entropy_probs",
    "cross_entropy_probs_backward",
    "empty_like",
    "huber_loss",
    "huber_loss_backward",
    "kernels",
    "l1_loss",
    "l1_loss_backward",
    "leaky_relu_backward",
    "leaky_relu_forward",
    "linear_forward",
    "log_softmax_backward",
    "log_softmax_forward",
    "loss_reduce",
    "loss_upstream",
    "matmul",
    "maxpool2d_backward",
    "maxpool2d_forward",
    "mse_loss",
    "mse_loss_backward",
    "nll_loss",
    "nll_loss_backward",
    "pad2d",
    "pad2d_backward",
    "relu_backward",
    "relu_forward",
    "scale",
    "sgd_update",
    "sigmoid_backward",
    "sigmoid_forward",
    "smooth_l1_loss",
    "smooth_l1_loss_backward",
    "softmax_backward",
    "softmax_forward",
    "tanh_backward",
    "tanh_forward",
]


def kernels():
    """Every kernel as {name: dispatcher}; ``dispatcher.py_func`` is the Python function behind it.

    The PTX tests compile each one for real with ``numba.cuda.compile_ptx(k.py_func, signature)``.
    """
    found = {}
    for module in FAMILIES:
        for name, obj in vars(module).items():
            if name.endswith("_kernel") and hasattr(obj, "py_func"):
                found[name] = obj
    for (cfg, ta, tb), k in gemm.MATMUL_KERNELS.items():
        found[f"matmul_{cfg}_{'t' if ta else 'n'}{'t' if tb else 'n'}_kernel"] = k
    for cfg, k in gemm.LINEAR_KERNELS.items():
        found[f"linear_{cfg}_kernel"] = k
    return found


def benchmark_matmul(n, repeats=10, compare_torch=True):
    """GFLOP/s of ``matmul`` on two n x n float32 matrices, and of torch (cuBLAS, TF32 off) on the same GPU.

    Needs a CUDA GPU.  Times ``repeats`` products with CUDA events after one warm-up call (which
    compiles the kernel).  Returns a dict: n, device, ours_gflops, and, when torch sees the GPU,
    torch_gflops, ratio (ours / torch) and max_abs_diff between the two products.  The issue's
    target: ratio >= 0.5 at n = 4096 on an H100.
    """
    import numpy as np
    from numba import cuda

    if not cuda.is_available():
        raise RuntimeError("benchmark_matmul needs a CUDA GPU, and numba.cuda sees none")
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    da, db = cuda.to_device(a), cuda.to_device(b)
    dc = cuda.device_array((n, n), dtype=np.float32)
    matmul(da, db, out=dc)  # compiles the kernel
    cuda.synchronize()
    start, stop = cuda.event(), cuda.event()
    start.record()
    for _ in range(repeats):
        matmul(da, db, out=dc)
    stop.record()
    stop.synchronize()
    seconds = start.elapsed_time(stop) / 1e3 / repeats  # milliseconds -> seconds per product
    name = getattr(cuda.get_current_device(), "name", "CUDA simulator")
    result = {"n": n, "device": name.decode() if isinstance(name, bytes) else str(name),
              "ours_gflops": 2.0 * n ** 3 / seconds / 1e9}
    if not compare_torch:
        return result
    try:
        import torch
    except ImportError:
        return result
    if not torch.cuda.is_available():
        return result
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False  # full float32, as our kernel computes
    try:
        ta, tb = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        tc = ta @ tb
        torch.cuda.synchronize()
        t_start, t_stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t_start.record()
        for _ in range(repeats):
            tc = ta @ tb
        t_stop.record()
        t_stop.synchronize()
        t_seconds = t_start.elapsed_time(t_stop) / 1e3 / repeats
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    result["torch_gflops"] = 2.0 * n ** 3 / t_seconds / 1e9
    result["ratio"] = result["ours_gflops"] / result["torch_gflops"]
    result["max_abs_diff"] = float(np.abs(dc.copy_to_host() - tc.cpu().numpy()).max())
    return result


# The families added since: GELU, SiLU, ELU, Softplus; AvgPool2d and adaptive pooling; Adam/AdamW, RMSprop, Adagrad
from . import activation_extra, adaptive, pooling_avg
from .activation_extra import *
from .adaptive import adagrad_update, adam_update, rmsprop_update
from .pooling_avg import *

FAMILIES = (*FAMILIES, activation_extra, pooling_avg, adaptive)
__all__ += ["adagrad_update", "adam_update", "rmsprop_update"]

from . import norm
from .norm import (
    batch_norm_backward,
    batch_norm_forward,
    dropout_backward,
    dropout_forward,
    layer_norm_backward,
    layer_norm_forward,
)

FAMILIES += (norm,)
__all__ += ["batch_norm_backward", "batch_norm_forward", "dropout_backward", "dropout_forward",
            "layer_norm_backward", "layer_norm_forward"]

from . import residual  # a residual block's join and option-A shortcut
from .residual import add, shortcut_a_backward, shortcut_a_forward

FAMILIES += (residual,)
__all__ += ["add", "shortcut_a_backward", "shortcut_a_forward"]

from .norm_relu import batch_norm_relu_backward, batch_norm_relu_forward  # BatchNorm + (shortcut) + ReLU

__all__ += ["batch_norm_relu_backward", "batch_norm_relu_forward"]
