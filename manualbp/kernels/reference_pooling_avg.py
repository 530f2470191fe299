"""Average pooling and adaptive pooling in plain NumPy: the readable twins of ``cpu/pooling_avg.py`` and
``cuda/pooling_avg.py`` (imported by ``reference.py``, so each is ``reference.<name>``).

Derivation: derivations/16-average-pooling.md (V1)-(V10); the output size with ``ceil_mode`` is (P5) of
derivations/05-maxpool.md.

Legend: N batch, C channels, H/W input size, OH/OW output size, KH/KW window, SH/SW stride, PH/PW padding.
Each function loops over the output positions (i, j) and handles all N*C planes at once with a slice.
"""
import numpy as np

from .reference import pool_out_size


def avgpool_window(i, size, kernel, stride, padding, count_include_pad):
    """(start, end, count) of window i along one axis: its clipped rows start..end-1 of the input, and what
    it counts towards the divisor: the rows of the padded input it covers (count_include_pad), or only
    the input rows.  A window that hangs past the right padding (ceil_mode) is cut at the padding's edge
    first, so its count_include_pad count is the clipped size, as torch's (V2)."""
    start = i * stride - padding
    end = min(start + kernel, size + padding)  # the padded input ends at size + padding
    padded = end - start
    start, end = max(start, 0), min(end, size)
    return start, end, (padded if count_include_pad else end - start)


def avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """y[n,c,i,j] = (sum of x[n,c] over window (i, j)) / d_ij  (V1), d_ij by (V2), OH and OW by (P5).

    Inputs: x (N, C, H, W); kernel_size, stride, padding (h, w) pairs of ints; ceil_mode, count_include_pad
    bools; divisor_override a non-zero int or None.  Returns y (N, C, OH, OW), of x's dtype.
    """
    N, C, H, W = x.shape
    OH = pool_out_size(H, kernel_size[0], stride[0], padding[0], 1, ceil_mode)  # (P5)
    OW = pool_out_size(W, kernel_size[1], stride[1], padding[1], 1, ceil_mode)
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        h0, h1, ch = avgpool_window(i, H, kernel_size[0], stride[0], padding[0], count_include_pad)
        for j in range(OW):
            w0, w1, cw = avgpool_window(j, W, kernel_size[1], stride[1], padding[1], count_include_pad)
            d = divisor_override or ch * cw  # (V2)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3), dtype=np.float64) / d  # (V1)
    return y


def avgpool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    """dL/dx: each dL/dy[n,c,i,j] / d_ij added to every input of window (i, j)  (V4).  -> (N, C, H, W)."""
    N, C, H, W = x_shape
    OH, OW = grad_y.shape[2], grad_y.shape[3]
    grad_x = np.zeros((N, C, H, W), dtype=np.float64)
    for i in range(OH):
        h0, h1, ch = avgpool_window(i, H, kernel_size[0], stride[0], padding[0], count_include_pad)
        for j in range(OW):
            w0, w1, cw = avgpool_window(j, W, kernel_size[1], stride[1], padding[1], count_include_pad)
            d = divisor_override or ch * cw  # (V2)
            grad_x[:, :, h0:h1, w0:w1] += grad_y[:, :, i:i + 1, j:j + 1] / d  # (V4), broadcast over the window
    return grad_x.astype(grad_y.dtype)


def adaptive_window(i, size, out):
    """(start, end) of adaptive window i of ``out`` along an axis of ``size``: floor(i*size/out) and
    ceil((i+1)*size/out)  (V5)."""
    return (i * size) // out, -((-(i + 1) * size) // out)


def adaptive_avgpool2d_forward(x, output_size):
    """y[n,c,i,j] = mean of x[n,c] over the adaptive window (i, j)  (V5), (V6).  -> (N, C, OH, OW)."""
    N, C, H, W = x.shape
    OH, OW = output_size
    y = np.zeros((N, C, OH, OW), dtype=x.dtype)
    for i in range(OH):
        h0, h1 = adaptive_window(i, H, OH)
        for j in range(OW):
            w0, w1 = adaptive_window(j, W, OW)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].sum(axis=(2, 3), dtype=np.float64) / ((h1 - h0) * (w1 - w0))
    return y


def adaptive_avgpool2d_backward(grad_y, x_shape):
    """dL/dx: dL/dy[n,c,i,j] / (window size) added to every input of window (i, j)  (V7)."""
    N, C, H, W = x_shape
    OH, OW = grad_y.shape[2], grad_y.shape[3]
    grad_x = np.zeros((N, C, H, W), dtype=np.float64)
    for i in range(OH):
        h0, h1 = adaptive_window(i, H, OH)
        for j in range(OW):
            w0, w1 = adaptive_window(j, W, OW)
            grad_x[:, :, h0:h1, w0:w1] += grad_y[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))  # (V7)
    return grad_x.astype(grad_y.dtype)


def adaptive_maxpool2d_forward(x, output_size):
    """(y, indices): the maximum of each adaptive window (V5), (V8) and its flat position h*W + w in the
    plane, int64.  Scanned row by row, a value wins if greater than the best so far or NaN (so the first
    of equal maxima wins, and the last NaN); a window of -inf reports its first position, as torch."""
    N, C, H, W = x.shape
    OH, OW = output_size
    y = np.full((N, C, OH, OW), -np.inf, dtype=x.dtype)
    indices = np.zeros((N, C, OH, OW), dtype=np.int64)
    for i in range(OH):
        h0, h1 = adaptive_window(i, H, OH)
        for j in range(OW):
            w0, w1 = adaptive_window(j, W, OW)
            indices[:, :, i, j] = h0 * W + w0
            for h in range(h0, h1):
                for w in range(w0, w1):
                    v = x[:, :, h, w]
                    take = (v > y[:, :, i, j]) | np.isnan(v)  # (V8)
                    y[:, :, i, j] = np.where(take, v, y[:, :, i, j])
                    indices[:, :, i, j] = np.where(take, h * W + w, indices[:, :, i, j])
    return y, indices


def adaptive_maxpool2d_backward(grad_y, indices, x_shape):
    """dL/dx: each dL/dy goes to the input that won its window, summed where windows overlap  (V9)."""
    N, C, H, W = x_shape
    grad_x = np.zeros((N * C, H * W), dtype=grad_y.dtype)
    P = grad_y.shape[2] * grad_y.shape[3]
    np.add.at(grad_x, (np.arange(N * C)[:, None], indices.reshape(N * C, P)), grad_y.reshape(N * C, P))  # (V9)
    return grad_x.reshape(N, C, H, W)


__all__ = ["adaptive_avgpool2d_backward", "adaptive_avgpool2d_forward", "adaptive_maxpool2d_backward",
           "adaptive_maxpool2d_forward", "avgpool2d_backward", "avgpool2d_forward"]
