"""How an operation that takes ``out`` honours it.

Derivation: derivations/11-gpu-tiled-matmul.md (why a gradient is written into a flat buffer on the GPU).

The operations that make a parameter's gradient (``matmul``, ``bias_grad``, ``conv2d_grad_params``,
``batch_norm_backward``, ``batch_norm_relu_backward``, ``layer_norm_backward``) take ``out``: the array the
gradient should land in, which is the parameter's place in its optimizer's flat gradient buffer on the GPU
(``Parameter.grad_buffer()``), None everywhere else. The GPU kernels write there directly; the NumPy twins and
the CPU kernels compute as always and copy the result in, so all three agree on what ``out`` means.
"""


def written(out, value):
    """``value``, or, when ``out`` is given, ``value`` copied into ``out``, which is returned."""
    if out is None:
        return value
    out[...] = value
    return out
