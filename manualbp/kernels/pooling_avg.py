"""Average pooling and adaptive (average and max) pooling, dispatched like every operation of
``kernels/__init__.py`` (NumPy arrays to ``cpu/pooling_avg.py`` or ``reference_pooling_avg.py``, device
arrays to ``cuda/pooling_avg.py``).

Derivation: derivations/16-average-pooling.md (V1)-(V10); the output size of AvgPool2d is (P5) of
derivations/05-maxpool.md.  Inputs are (N, C, H, W); pairs are (h, w) tuples of ints; ``divisor_override``
is a non-zero int or None.
"""
from . import _impl


def avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override):
    """y[n,c,i,j] = sum of x[n,c] over window (i, j) / d_ij  (V1), d_ij by (V2); OH, OW by (P5)."""
    return _impl("avgpool2d_forward", x).avgpool2d_forward(x, kernel_size, stride, padding, ceil_mode,
                                                           count_include_pad, divisor_override)


def avgpool2d_backward(grad_y, x_shape, kernel_size, stride, padding, ceil_mode, count_include_pad,
                       divisor_override):
    """dL/dx[n,c,h,w] = sum over the windows (i, j) holding (h, w) of dL/dy[n,c,i,j] / d_ij  (V4)."""
    return _impl("avgpool2d_backward", grad_y).avgpool2d_backward(grad_y, x_shape, kernel_size, stride, padding,
                                                                  ceil_mode, count_include_pad, divisor_override)


def adaptive_avgpool2d_forward(x, output_size):
    """y[n,c,i,j] = mean of x[n,c] over rows floor(iH/OH)..ceil((i+1)H/OH)-1 and the same for columns
    (V5), (V6).  -> (N, C, OH, OW)."""
    return _impl("adaptive_avgpool2d_forward", x).adaptive_avgpool2d_forward(x, output_size)


def adaptive_avgpool2d_backward(grad_y, x_shape):
    """dL/dx: each dL/dy[n,c,i,j] shared evenly by the inputs of its window  (V7)."""
    return _impl("adaptive_avgpool2d_backward", grad_y).adaptive_avgpool2d_backward(grad_y, x_shape)


def adaptive_maxpool2d_forward(x, output_size):
    """(y, indices): the maximum of each adaptive window and its flat position h*W + w  (V5), (V8)."""
    return _impl("adaptive_maxpool2d_forward", x).adaptive_maxpool2d_forward(x, output_size)


def adaptive_maxpool2d_backward(grad_y, indices, x_shape):
    """dL/dx: each dL/dy goes to the input that won its window  (V9)."""
    return _impl("adaptive_maxpool2d_backward", grad_y, indices).adaptive_maxpool2d_backward(grad_y, indices,
                                                                                             x_shape)
