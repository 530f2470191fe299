"""The float32 signatures each kernel of manualbp.kernels.cuda is launched with (for compile_ptx).

Written as numba type strings; they must match what the wrappers pass: float32 device arrays,
C-contiguous (``[::1]`` last), int64 classes and indices, Python ints (int64), np.float32 scalars
and Python bools.
"""
F1 = "float32[::1]"
F2 = "float32[:, ::1]"
F3 = "float32[:, :, ::1]"
F4 = "float32[:, :, :, ::1]"
I1 = "int64[::1]"
I2 = "int64[:, ::1]"
I4 = "int64[:, :, :, ::1]"
GEOM = "UniTuple(int64, 15)"  # the plain matmul's (unused) geometry
CONV_GEOM = "UniTuple(int64, 20)"  # a convolution's: sizes, stride, padding, plane, dilation, group offsets
SCALAR = (F1, "int64", "float32")  # a scalar-like argument: rows, step, scale (launch.scalar_like)


def _sig(*args):
    return "void(" + ", ".join(args) + ")"


def _gemm(a, b, c, geom=GEOM):
    return _sig(a, b, c, F1, geom, "int64", "int64", "int64", "int64", "boolean")


SIGNATURES = {
    "conv2d_forward_kernel": _gemm(F2, F4, F1, CONV_GEOM),
    "conv2d_grad_input_kernel": _gemm(F4, F4, F1, CONV_GEOM),
    "conv2d_grad_weight_kernel": _gemm(F4, F4, F1, CONV_GEOM),
    "pad2d_forward_kernel": _sig(F4, I1, I1, F4),
    "pad2d_backward_kernel": _sig(F4, I2, I2, F4),
    "sum_splits_kernel": _sig(F2, F1, "boolean"),
    "maxpool2d_forward_kernel": _sig(F4, F4, I4, *["int64"] * 8),
    "maxpool2d_backward_kernel": _sig(F4, I4, F4, *["int64"] * 6),
    "relu_forward_kernel": _sig(F1, F1),
    "relu_backward_kernel": _sig(F1, F1, F1),
    "leaky_relu_forward_kernel": _sig(F1, "float32", F1),
    "leaky_relu_backward_kernel": _sig(F1, F1, "float32", F1),
    "sigmoid_forward_kernel": _sig(F1, F1),
    "sigmoid_backward_kernel": _sig(F1, F1, F1),
    "tanh_forward_kernel": _sig(F1, F1),
    "tanh_backward_kernel": _sig(F1, F1, F1),
    "bias_add_kernel": _sig(F1, F1, "int64"),
    "bias_grad_kernel": _sig(F1, "int64", F1, "boolean"),
    "softmax_forward_kernel": _sig(F1, F1, "int64", "int64"),
    "softmax_backward_kernel": _sig(F1, F1, "int64", "int64", F1),
    "log_softmax_forward_kernel": _sig(F1, F1, "int64", "int64"),
    "log_softmax_backward_kernel": _sig(F1, F1, "int64", "int64", F1),
    "add_kernel": _sig(F1, F1),
    "scale_kernel": _sig(F1, *SCALAR, F1),
    "sgd_update_kernel": _sig(F1, F1, F1, *["float32"] * 4, "boolean", "boolean"),
    # loss.py
    "loss_sum_kernel": _sig(F1, F1, "float32", "boolean", F1),
    "scalar_divide_kernel": _sig(F1, "float32", F1, "float32", F1),
    "regression_forward_kernel": _sig(F1, F1, "int64", "float32", F1),
    "regression_backward_kernel": _sig(*SCALAR, F1, F1, "int64", "float32", F1),
    "bce_forward_kernel": _sig(F1, F1, F1, F1, "int64", F1),
    "bce_backward_kernel": _sig(*SCALAR, F1, F1, F1, F1, "int64", F1),
    # loss_class.py
    "class_weight_sum_kernel": _sig(I1, F1, "int64", "boolean", F1),
    "nll_forward_kernel": _sig(F3, I1, F1, "int64", F1),
    "nll_backward_kernel": _sig(*SCALAR, I1, F1, "int64", F3),
    "cross_entropy_forward_kernel": _sig(F3, I1, F1, "int64", "boolean", "float32", "float32", F1, F3),
    "cross_entropy_backward_kernel": _sig(*SCALAR, F3, I1, F1, "int64", "float32", "float32", F3),
    "cross_entropy_probs_forward_kernel": _sig(F3, F3, F1, "float32", "float32", F1, F3),
    "cross_entropy_probs_backward_kernel": _sig(*SCALAR, F3, F3, F1, "float32", "float32", F3),
    "cross_entropy_index_kernel": _sig(F2, I1, "int64", F1, F2),
}
for _cfg in ("small", "large"):
    for _t in ("nn", "nt", "tn", "tt"):
        SIGNATURES[f"matmul_{_cfg}_{_t}_kernel"] = _gemm(F2, F2, F1)
    SIGNATURES[f"linear_{_cfg}_kernel"] = _gemm(F2, F2, F1)  # x (N, in), w (out, in), y flat; bias F1

# activation_extra.py: GELU, SiLU, ELU, Softplus (kind, a, b)
SIGNATURES["activation_forward_kernel"] = _sig(F1, "int64", "float32", "float32", F1)
SIGNATURES["activation_backward_kernel"] = _sig(F1, F1, "int64", "float32", "float32", F1)

# pooling_avg.py: AvgPool2d (geometry, count_include_pad, divisor or 0), adaptive pooling (max or mean)
SIGNATURES["avgpool2d_forward_kernel"] = _sig(F4, F4, *["int64"] * 6, "boolean", "int64")
SIGNATURES["avgpool2d_backward_kernel"] = _sig(F4, F4, *["int64"] * 6, "boolean", "int64")
SIGNATURES["adaptive_pool2d_forward_kernel"] = _sig(F4, F4, I4, "boolean")
SIGNATURES["adaptive_pool2d_backward_kernel"] = _sig(F4, I4, F4, "boolean")
# adaptive.py: Adam/AdamW, RMSprop, Adagrad
SIGNATURES.update({
    "adam_update_kernel": _sig(F1, F1, F1, F1, F1, *["float32"] * 3, "boolean", *["float32"] * 5, "boolean",
                               "boolean"),
    "rmsprop_update_kernel": _sig(F1, F1, F1, F1, F1, *["float32"] * 3, "boolean", *["float32"] * 3, "boolean",
                                  "boolean"),
    "adagrad_update_kernel": _sig(F1, F1, F1, *["float32"] * 3),
})

# norm.py: BatchNorm, LayerNorm, Dropout
U1 = "uint8[::1]"
SIGNATURES.update({
    "bn_stats_kernel": _sig(F1, F1, F1, F1, F1, I1, "int64", "int64", "boolean", "boolean", "float32", "boolean",
                            "float32"),
    "bn_normalise_kernel": _sig(F1, F1, F1, F1, F1, F1, F1, I1, "int64", "int64", *["boolean"] * 5),
    "bn_backward_sums_kernel": _sig(F1, F1, F1, F1, F1, F1, F1, "int64", "int64", "boolean"),
    "bn_backward_dx_kernel": _sig(F1, F1, F1, F1, F1, F1, F1, F1, F1, F1, "int64", "int64", *["boolean"] * 4),
    "ln_forward_kernel": _sig(F1, F1, F1, F1, F1, F1, "int64", "boolean", "boolean", "float32"),
    "ln_backward_dx_kernel": _sig(F1, F1, F1, F1, F1, F1, "int64", "boolean"),
    "ln_backward_params_kernel": _sig(F1, F1, F1, F1, F1, F1, "int64"),
    "dropout_forward_kernel": _sig(F1, F1, U1, "uint64", "int64", "float32", "int64"),
    "dropout_backward_kernel": _sig(F1, U1, "float32", "int64", F1),
})

# residual.py: a residual block's join y = a + b and option-A shortcut
SIGNATURES.update({
    "residual_add_kernel": _sig(F1, F1, F1),
    "shortcut_forward_kernel": _sig(F1, F1, *["int64"] * 7),
    "shortcut_backward_kernel": _sig(F1, F1, *["int64"] * 7),
})
