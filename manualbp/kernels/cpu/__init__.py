"""The kernels on the CPU, compiled by Numba: the same operations, under the same names, as
``kernels/reference.py`` (their readable twins) and ``kernels/cuda/`` (the GPU's).

Derivations: derivations/03-linear.md (matmul), derivations/04-conv2d.md (convolution),
derivations/05-maxpool.md (max-pooling), derivations/06-activations.md (activations),
derivations/02-softmax-cross-entropy.md, 07-regression-losses.md and 08-binary-cross-entropy.md
(the losses), derivations/09-sgd-momentum.md (the update).  ``tests/test_kernels.py`` and
``tests/test_packed.py`` hold every kernel equal to its twin.

Files, by op family:
  gemm.py          ``matmul``: picks the dot-product kernels of ``gemm_dot.py`` for short products, or
                   the packed panels of ``gemm_packed.py`` on the 8 x 32 register tile of ``tile.py``
  conv.py          the convolution wrappers: the tile (``conv_packed.py``), shifted rows of the padded
                   image (``conv_direct.py``) or im2col (``conv_im2col.py``), chosen from the shapes;
                   ``conv_pad.py``: the padding modes (reflect, replicate, circular) as a gather
  pool.py          max-pooling
  elementwise.py   activations, softmax, bias (NumPy: one pass each, nothing to fuse yet)
  loss.py          the fused softmax-cross-entropy of a training step; the other losses' element math
  optim.py         the SGD update
  common.py        workspaces and the thread count of a job; heap.py: keep freed memory for the next step

Each public function is a thin Python wrapper: it makes the arrays C-contiguous, allocates the output
and passes plain ints, so each kernel compiles exactly one specialisation per dtype (float32 and
float64) and caches it on disk.  The kernels themselves never check anything: the layers validated
shapes and dtypes before calling here, and a Numba kernel indexing out of bounds corrupts memory
rather than raising.

Parallelism: ``prange`` only over loops where each iteration writes its own outputs (matmul blocks,
conv images, grad-weight tiles, pooling (n, c) planes).  No float is ever summed across threads, so
results are bit-identical whatever NUMBA_NUM_THREADS is.  Every parallel kernel has a serial twin that
runs the same tasks in order; the wrappers pick it for small problems (below ``PARALLEL_MIN_MACS``
multiply-adds or ``PARALLEL_MIN_ELEMENTS`` elements; from the shapes only), where waking the thread pool
costs more than the work (a training step at batch 1).

Speed habits:
- inner loops run over contiguous memory with an index starting at 0 (a row or slice is taken first),
  so Numba can drop its negative-index check and LLVM can vectorize;
- products keep a block of outputs in registers for the whole sum: outer products of packed panels
  (``tile.py``), or dot products of contiguous rows for short products (``gemm_dot.py``);
- accumulators start as ``x.dtype.type(0)``, so a float32 kernel stays float32 (a bare ``0.0`` would
  promote the sum to float64).

Legend: N batch, C input channels, H/W input size, O output channels, KH/KW kernel, OH/OW output,
SH/SW stride, PH/PW padding.
"""
from .conv import conv2d_forward, conv2d_grad_input, conv2d_grad_params, conv2d_grad_weight
from .conv_pad import pad2d, pad2d_backward
from .elementwise import *
from .gemm import matmul
from .loss import *
from .optim import sgd_update
from .pool import maxpool2d_backward, maxpool2d_forward, pool_index_dtype

__all__ = ["conv2d_forward", "conv2d_grad_input", "conv2d_grad_params", "conv2d_grad_weight", "matmul",
           "maxpool2d_backward", "maxpool2d_forward", "pad2d", "pad2d_backward", "pool_index_dtype", "sgd_update"]

from .activation_extra import *  # GELU, SiLU, ELU, Softplus (derivations/17-gelu-silu-elu.md)
from .adaptive import *
from .pooling_avg import *  # AvgPool2d, adaptive pooling (derivations/16-average-pooling.md)

__all__ += ["adagrad_update", "adam_update", "rmsprop_update"]

from .norm import (
    batch_norm_backward,
    batch_norm_forward,
    dropout_backward,
    dropout_forward,
    layer_norm_backward,
    layer_norm_forward,
)

__all__ += ["batch_norm_backward", "batch_norm_forward", "dropout_backward", "dropout_forward", "layer_norm_backward",
            "layer_norm_forward"]

from .residual import add, shortcut_a_backward, shortcut_a_forward  # a residual block's join and shortcut

__all__ += ["add", "shortcut_a_backward", "shortcut_a_forward"]

from .norm_relu import batch_norm_relu_backward, batch_norm_relu_forward  # BatchNorm + (shortcut) + ReLU, one pass

__all__ += ["batch_norm_relu_backward", "batch_norm_relu_forward"]
