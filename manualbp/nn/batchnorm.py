"""BatchNorm1d and BatchNorm2d: each channel normalised by the batch's mean and variance, then scaled and shifted.

Derivation: derivations/14-batchnorm.md; ``relu_after`` (BatchNorm, a residual and ReLU in one pass):
derivations/18-residual.md and derivations/06-activations.md (ReLU's backward).

Shapes: BatchNorm1d takes x (N, C) or (N, C, L), BatchNorm2d x (N, C, H, W); both compute on the (N, C, L)
view (L = 1 for (N, C), H*W for images), where each channel has M = N*L values.
"""

import numpy as np

from .. import kernels
from .._checks import float_array, float_dtype, positive_int, real_number
from ..device import assign, to_numpy
from .module import Module
from .parameter import Parameter


class _BatchNorm(Module):
    r"""y = (x - E[x]) / sqrt(Var[x] + eps) * gamma + beta, per channel   (BN1)-(BN4).

    Args (torch's, in torch's order):
        num_features: C, the number of channels.
        eps: added to the variance for numerical stability (default 1e-5).
        momentum: the running statistics' factor, running = (1 - momentum) running + momentum batch (default
            0.1); None: a cumulative moving average (the factor is 1 / num_batches_tracked)   (BN8), (BN9).
        affine: learn gamma (``weight``, ones) and beta (``bias``, zeros) (default True).
        track_running_stats: keep ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked``
            (an int64 count) as buffers, used in eval mode (default True); False: always the batch's statistics.
        device, dtype: where the parameters and buffers live and their dtype (float32 by default), as torch.
        bias (keyword only): with ``affine``, learn beta too (default True); False: gamma alone, as torch.

    Training mode normalises with the batch's mean and biased variance (divided by M) and, with running
    statistics, updates them with the unbiased variance (divided by M - 1) (BN9); eval mode normalises with
    the running statistics (BN10).  Backward (derivations/14-batchnorm.md):
        dL/dbeta = sum g  (BN5),  dL/dgamma = sum g x_hat  (BN6),
        dL/dx = (invstd / M) (M g_hat - sum g_hat - x_hat sum(g_hat x_hat)),  g_hat = gamma g   (BN7),
    or gamma invstd g when the statistics were the running ones (constants, (BN11)).

    As torch: a batch with one value per channel (M = 1) is refused in training (after ``num_batches_tracked``
    has counted it, as torch's module counts before it checks); an empty one (M = 0) gives an empty output and,
    in training, counts in ``num_batches_tracked`` but leaves the running statistics as they were; its backward
    gives an empty dL/dx and zero dL/dgamma, dL/dbeta (sums over no values).
    """

    _dims = (4,)
    _backward_methods = ("backward", "backward_relu")  # both use up what forward saved (Module wraps them)
    # torch added num_batches_tracked in its state_dict version 2: a mapping without torch's version record
    # (a safetensors file, a hand-made dict) may lack it, and loading then keeps the current count
    _optional_in_old_files = ("num_batches_tracked",)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        who = type(self).__name__
        self.num_features = positive_int(num_features, who, "num_features")
        self.eps = real_number(eps, who, "eps", low=0)
        if momentum is not None:
            momentum = real_number(momentum, who, "momentum")
        self.momentum = momentum
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = float_dtype(dtype, who)
        C = self.num_features
        self.weight = Parameter(np.ones(C, dtype=dt)) if self.affine else None
        self.bias = Parameter(np.zeros(C, dtype=dt)) if self.affine and bias else None
        if self.track_running_stats:
            self.register_buffer("running_mean", np.zeros(C, dtype=dt))
            self.register_buffer("running_var", np.ones(C, dtype=dt))
            self.register_buffer("num_batches_tracked", np.array(0, dtype=np.int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        if device is not None:
            self.to(device)
        self._x = None  # the (N, C, L) input: x_hat in (BN6), (BN7)
        self._mean = self._invstd = None  # the statistics forward used, (BN3)
        self._batch_stats = True  # whether they were the batch's (then they depend on x: (BN7)) or constants (BN11)
        self._shape = None
        self._relu_out = None  # after relu_after: its output, whose sign is ReLU's mask (A2)
        self._with_residual = False  # whether that call added a residual (backward_relu returns its gradient)
        self._fused_call = None  # (residual,) while relu_after runs forward

    def reset_running_stats(self):
        """running_mean = 0, running_var = 1, num_batches_tracked = 0, in place (where they are), as torch."""
        if self.track_running_stats:
            assign(self.running_mean, 0)
            assign(self.running_var, 1)
            assign(self.num_batches_tracked, 0)

    def reset_parameters(self):
        """The running statistics reset, gamma = 1 and beta = 0, as torch."""
        self.reset_running_stats()
        if self.weight is not None:
            assign(self.weight.data, 1)
        if self.bias is not None:
            assign(self.bias.data, 0)

    def _dtype_now(self):
        """The dtype the input must have: its parameters' or buffers'; None (either float) when it has neither."""
        if self.weight is not None:
            return self.weight.dtype
        return self.running_mean.dtype if self.running_mean is not None else None

    def _like(self):
        if self.weight is not None:
            return self.weight.data
        return self.running_mean

    def _check_input(self, x):
        who = type(self).__name__
        if x.ndim not in self._dims:
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"{who}: expected {want} input (got {x.ndim}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{who}({self.num_features}): expected input with {self.num_features} channels "
                             f"(dimension 1), got shape {tuple(x.shape)}")

    def forward(self, input):
        """y = BN(x)  (BN1)-(BN4), (BN8)-(BN10); inside ``relu_after``, relu(BN(x) + residual) in one pass."""
        who = type(self).__name__
        fused = self.__dict__.get("_fused_call")  # (residual,) while relu_after runs this forward, else None
        x = float_array(input, who, min_ndim=2, dtype=self._dtype_now(), like=self._like(), allow_empty=True)
        self._check_input(x)
        shape = tuple(x.shape)
        N, C, L = shape[0], shape[1], int(np.prod(shape[2:], dtype=np.int64))
        x3 = x.reshape((N, C, L))  # a view
        r3 = None
        if fused is not None and fused[0] is not None:
            r = float_array(fused[0], f"{who}.relu_after", "residual", dtype=x.dtype, like=x, allow_empty=True)
            if tuple(r.shape) != shape:
                raise ValueError(f"{who}.relu_after: expected a residual of the input's shape {shape}, got "
                                 f"{tuple(r.shape)}")
            r3 = r.reshape((N, C, L))
        batch_stats = self.training or self.running_mean is None
        update = self.training and self.track_running_stats and self.running_mean is not None
        if update and N * L <= 1:  # the kernel would count it; torch's module counts it before any check
            assign(self.num_batches_tracked, int(to_numpy(self.num_batches_tracked)) + 1)
        if batch_stats and N * L == 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got input size {shape}")
        self._relu_out, self._with_residual = None, r3 is not None
        if N * L == 0:  # an empty batch, as torch: an empty output, the statistics as they were
            self._x, self._mean, self._invstd, self._batch_stats, self._shape = x3, None, None, batch_stats, shape
            y = kernels.empty_like(x)
            if fused is not None:
                self._relu_out = y.reshape((N, C, L))
            return y
        momentum = self.momentum
        w = self.weight.data if self.weight is not None else None
        b = self.bias.data if self.bias is not None else None
        stats = (self.running_mean if update or not batch_stats else None,
                 self.running_var if update or not batch_stats else None,
                 self.num_batches_tracked if update else None, batch_stats, momentum, self.eps)
        if fused is None:
            y, mean, invstd = kernels.batch_norm_forward(x3, w, b, *stats)  # (BN1)-(BN4), (BN8)-(BN10)
        else:  # relu(BN(x) + r): the same arithmetic, one pass (derivations/18-residual.md, (Q7))
            y, mean, invstd = kernels.batch_norm_relu_forward(x3, r3, w, b, *stats)
            self._relu_out = y  # its sign is ReLU's mask (A2)
        self._x, self._mean, self._invstd, self._batch_stats, self._shape = x3, mean, invstd, batch_stats, shape
        return y.reshape(shape)

    def relu_after(self, input, residual=None):
        """relu(self(input) + residual) -- what ``F.relu(bn(x) + r)`` computes in torch (residual None: relu(bn(x)))
        -- as one pass over the activations instead of three (derivations/18-residual.md, (Q7)).

        It is an ordinary call of this module (its forward, its saved state); the backward is ``backward`` (the
        gradient of the input) or, with a residual, ``backward_relu`` (that of the input and of the residual)."""
        self._fused_call = (residual,)
        try:
            return self(input)
        finally:
            self._fused_call = None

    def backward(self, grad_output):
        """dL/dx from dL/dy  (BN5)-(BN7), (BN11); after ``relu_after(x)``, dL/dx from dL/d(its output)."""
        if self.__dict__.get("_with_residual"):
            raise TypeError(f"{type(self).__name__}.backward(): the forward was relu_after(x, residual), whose "
                            f"residual needs a gradient too: call backward_relu(grad_output), which returns both")
        return self._backward(grad_output)[0]

    def backward_relu(self, grad_output):
        """(dL/dx, dL/dresidual) after ``relu_after(x, residual)``: ReLU's mask read off the output (A2), then
        BatchNorm's backward (BN5)-(BN7); dL/dresidual is dL/d(BN(x) + residual), the gradient before BatchNorm
        (Q2)."""
        if self.__dict__.get("_relu_out") is None or not self.__dict__.get("_with_residual"):
            raise TypeError(f"{type(self).__name__}.backward_relu(): the forward was not relu_after(x, residual); "
                            f"call backward(grad_output)")
        return self._backward(grad_output)

    def _backward(self, grad_output):
        who = type(self).__name__
        x = self._saved(self._x, "the input")
        g = float_array(grad_output, f"{who}.backward", "grad_output", dtype=x.dtype, like=x, allow_empty=True)
        if tuple(g.shape) != self._shape:
            raise ValueError(f"{who}.backward: expected grad_output of shape {self._shape}, got {tuple(g.shape)}")
        w = self.weight.data if self.weight is not None else None
        g3 = g.reshape(tuple(x.shape))
        relu_out, gz = self._relu_out, None
        if x.size == 0:  # an empty batch: sums over no values, so dL/dgamma = dL/dbeta = 0 (BN5), (BN6), as torch
            gx, dgamma, dbeta = kernels.empty_like(g3), _zeros_like(w), _zeros_like(w)
            gz = kernels.empty_like(g3) if self._with_residual else None
        elif relu_out is None:
            out = Parameter.grad_buffers(self.weight, self.bias)  # (the flat gradient buffer on the GPU, or None)
            gx, dgamma, dbeta = kernels.batch_norm_backward(g3, x, w, self._mean, self._invstd, self._batch_stats,
                                                            out=out)  # (BN5)-(BN7), (BN11)
        else:  # ReLU's backward (A2), then BatchNorm's, in one pass
            out = Parameter.grad_buffers(self.weight, self.bias)
            gx, dgamma, dbeta, gz = kernels.batch_norm_relu_backward(g3, relu_out, x, w, self._mean, self._invstd,
                                                                     self._batch_stats, self._with_residual, out=out)
        if self.weight is not None:
            self.weight.accumulate_grad(dgamma)  # (BN6)
        if self.bias is not None:
            self.bias.accumulate_grad(dbeta)  # (BN5)
        return gx.reshape(self._shape), (None if gz is None else gz.reshape(self._shape))

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


def _zeros_like(a):
    """A new array of zeros of a's shape and dtype, where a is; None for None."""
    return None if a is None else assign(kernels.empty_like(a), 0)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation over (N, C) or (N, C, L) inputs (derivations/14-batchnorm.md; see ``_BatchNorm``)."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation over (N, C, H, W) inputs (derivations/14-batchnorm.md; see ``_BatchNorm``)."""

    _dims = (4,)


