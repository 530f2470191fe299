"""Conv2d's and MaxPool2d's options against torch.autograd: dilation, groups, padding='same'/'valid', the
padding modes, unbatched inputs, empty batches; ceil_mode, return_indices and NaN for max-pooling; torch's
signatures and positional order; the padding kernels against their twin and torch's F.pad."""
import inspect

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import manualbp
from manualbp import nn
from manualbp.kernels import cpu, reference

MODES = ("zeros", "reflect", "replicate", "circular")
BACKENDS = ("numpy", "numba")
TOL = {np.float64: 1e-9, np.float32: 1e-4}


@pytest.fixture(autouse=True)
def _restore_backend():
    old = manualbp.get_backend()
    yield
    manualbp.set_backend(old)


def torch_pads(padding, kernel, dilation):
    """(left, right, top, bottom) as torch pads: 'same' puts the odd row below, the odd column right."""
    if padding == "valid":
        return 0, 0, 0, 0
    if padding == "same":
        th, tw = dilation[0] * (kernel[0] - 1), dilation[1] * (kernel[1] - 1)
        return tw // 2, tw - tw // 2, th // 2, th - th // 2
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    return pw, pw, ph, ph


def smallest_side(kernel, dilation, before, after, mode):
    """The smallest input side the padded, dilated kernel fits and the padding mode accepts."""
    side = max(1, dilation * (kernel - 1) + 1 - before - after)
    if mode == "reflect":
        side = max(side, max(before, after) + 1)  # a mirror does not repeat the edge
    if mode == "circular":
        side = max(side, max(before, after))  # wraps around at most once
    return side


@st.composite
def conv_options(draw):
    groups = draw(st.integers(1, 3))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dilation = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = draw(st.one_of(st.sampled_from(["same", "valid"]), st.integers(0, 2),
                             st.tuples(st.integers(0, 2), st.integers(0, 3))))
    stride = 1 if padding == "same" else draw(st.one_of(st.integers(1, 3),
                                                        st.tuples(st.integers(1, 3), st.integers(1, 2))))
    mode = draw(st.sampled_from(MODES))
    left, right, top, bottom = torch_pads(padding, kernel, dilation)
    h0 = smallest_side(kernel[0], dilation[0], top, bottom, mode)
    w0 = smallest_side(kernel[1], dilation[1], left, right, mode)
    return {"c": groups * draw(st.integers(1, 2)), "o": groups * draw(st.integers(1, 2)), "kernel": kernel,
            "stride": stride, "padding": padding, "dilation": dilation, "groups": groups,
            "bias": draw(st.booleans()), "padding_mode": mode, "n": draw(st.integers(0, 2)),
            "h": draw(st.integers(h0, h0 + 4)), "w": draw(st.integers(w0, w0 + 4)),
            "unbatched": draw(st.booleans())}


def twin_conv(cfg, dtype):
    args = (cfg["c"], cfg["o"], cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["groups"],
            cfg["bias"], cfg["padding_mode"])
    theirs = torch.nn.Conv2d(*args, dtype=torch.float64 if dtype == np.float64 else torch.float32)
    ours = nn.Conv2d(*args, dtype=dtype)
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def run_both(ours, theirs, x, seed):
    """Forward and backward through both with one random upstream gradient: (ours y, dL/dx), (torch's)."""
    y = ours(x)
    g = np.random.default_rng(seed).standard_normal(np.shape(y)).astype(x.dtype)
    gx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    return (y, gx), (yt, xt.grad)


@settings(max_examples=60, deadline=None)
@given(cfg=conv_options(), seed=st.integers(0, 2**16))
def test_conv2d_options_match_torch_autograd(cfg, seed, assert_close):
    dtype = np.float64
    shape = (cfg["c"], cfg["h"], cfg["w"]) if cfg["unbatched"] else (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    x = np.random.default_rng(seed).standard_normal(shape)
    for name in BACKENDS:
        manualbp.set_backend(name)
        ours, theirs = twin_conv(cfg, dtype)
        (y, gx), (yt, gxt) = run_both(ours, theirs, x, seed)
        assert y.dtype == dtype and gx.dtype == dtype and gx.shape == x.shape
        assert_close(y, yt, TOL[dtype], f"{name} forward")
        assert_close(gx, gxt, TOL[dtype], f"{name} grad_input")
        assert_close(ours.weight.grad, theirs.weight.grad, TOL[dtype], f"{name} weight.grad")
        if cfg["bias"]:
            assert_close(ours.bias.grad, theirs.bias.grad, TOL[dtype], f"{name} bias.grad")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", BACKENDS)
def test_conv2d_options_in_float32(name, mode, assert_close):
    manualbp.set_backend(name)
    cfg = {"c": 4, "o": 6, "kernel": (3, 2), "stride": 1, "padding": "same", "dilation": (2, 3), "groups": 2,
           "bias": True, "padding_mode": mode}
    ours, theirs = twin_conv(cfg, np.float32)
    x = np.random.default_rng(3).standard_normal((3, 4, 9, 8)).astype(np.float32)
    (y, gx), (yt, gxt) = run_both(ours, theirs, x, 3)
    assert y.shape == (3, 6, 9, 8) and y.dtype == np.float32  # 'same': the input's size
    assert_close(y, yt, TOL[np.float32])
    assert_close(gx, gxt, TOL[np.float32])
    assert_close(ours.weight.grad, theirs.weight.grad, TOL[np.float32])
    assert_close(ours.bias.grad, theirs.bias.grad, TOL[np.float32])


def test_conv2d_empty_batch_gives_empty_output_and_zero_weight_gradients():
    for name in BACKENDS:
        manualbp.set_backend(name)
        for mode in MODES:
            conv = nn.Conv2d(4, 6, 3, padding=1, groups=2, padding_mode=mode)
            y = conv(np.zeros((0, 4, 5, 5), np.float32))
            assert y.shape == (0, 6, 5, 5) and y.dtype == np.float32
            gx = conv.backward(np.zeros((0, 6, 5, 5), np.float32))
            assert gx.shape == (0, 4, 5, 5)
            assert conv.weight.grad.shape == (6, 2, 3, 3) and not conv.weight.grad.any()
            assert conv.bias.grad.shape == (6,) and not conv.bias.grad.any()


def test_conv2d_backward_without_input_gradient_through_the_padding_gather(assert_close):
    cfg = {"c": 2, "o": 3, "kernel": (3, 3), "stride": 1, "padding": 2, "dilation": 1, "groups": 1,
           "bias": True, "padding_mode": "reflect"}
    ours, theirs = twin_conv(cfg, np.float64)
    x = np.random.default_rng(0).standard_normal((2, 2, 5, 4))
    y = ours(x)
    assert ours.backward(np.ones_like(y), input_grad=False) is None
    theirs(torch.tensor(x)).sum().backward()
    assert_close(ours.weight.grad, theirs.weight.grad, 1e-9)


# --- torch's signature, positional order, defaults, dtype and device ------------------------------------


def parameters_of(cls):
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize("name", ["Conv2d", "MaxPool2d"])
def test_signature_is_torchs(name):
    assert parameters_of(getattr(nn, name)) == parameters_of(getattr(torch.nn, name))


def test_sixth_positional_argument_is_dilation_as_in_torch(assert_close):
    ours = nn.Conv2d(3, 4, 3, 1, 0, 2).double()
    theirs = torch.nn.Conv2d(3, 4, 3, 1, 0, 2).double()
    assert ours.dilation == (2, 2) and ours.bias is not None
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 9))
    y = ours(x)
    assert y.shape == (2, 4, 5, 5)
    assert_close(y, theirs(torch.tensor(x)), 1e-9)
    assert repr(ours) == repr(theirs)


def test_all_eight_positional_arguments():
    conv = nn.Conv2d(3, 4, (3, 2), 1, 0, 1, 1, False)
    assert conv.bias is None and conv.weight.shape == (4, 3, 3, 2)
    assert [k for k, _ in conv.named_parameters()] == ["weight"]
    assert conv(np.zeros((1, 3, 5, 5), np.float32)).shape == (1, 4, 3, 4)
    grouped = nn.Conv2d(6, 4, 3, 1, 1, 1, 2, True, "circular")
    assert grouped.weight.shape == (4, 3, 3, 3) and grouped.padding_mode == "circular"


def test_default_initialisation_uses_the_group_fan_in():
    """torch's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) with fan_in = C/G * KH * KW, weight and bias."""
    manualbp.manual_seed(0)
    conv = nn.Conv2d(16, 64, 3, groups=4)
    bound = 1 / np.sqrt(16 / 4 * 9)
    for p in (conv.weight.data, conv.bias.data):
        assert np.abs(p).max() <= bound
    assert np.abs(conv.weight.data).max() > 0.95 * bound
    assert abs(conv.weight.data.std() - bound / np.sqrt(3)) < 0.05 * bound


@pytest.mark.parametrize("dtype", [None, np.float32, "float64", np.dtype(np.float64), torch.float64, torch.float32])
def test_dtype_argument(dtype):
    conv = nn.Conv2d(2, 3, 3, dtype=dtype)
    expected = np.float64 if "64" in str(dtype) else np.float32
    assert conv.weight.dtype == expected and conv.bias.dtype == expected
    assert conv(np.zeros((1, 2, 4, 4), expected)).dtype == expected


def test_dtype_and_device_refused_by_name():
    with pytest.raises(TypeError, match="Conv2d: expected dtype float32 or float64.*int32"):
        nn.Conv2d(2, 3, 3, dtype=torch.int32)
    with pytest.raises(TypeError, match="Conv2d: expected dtype float32 or float64"):
        nn.Conv2d(2, 3, 3, dtype=np.float16)
    with pytest.raises(ValueError, match="unknown device"):
        nn.Conv2d(2, 3, 3, device="tpu")
    assert nn.Conv2d(2, 3, 3, device="cpu").weight.dtype == np.float32
    assert nn.Conv2d(2, 3, 3, device=torch.device("cpu")).weight.dtype == np.float32


def test_device_cuda_moves_the_parameters_or_says_why_not():
    from manualbp.device import is_cuda_array
    try:
        conv = nn.Conv2d(2, 3, 3, device="cuda")
    except RuntimeError as err:  # no GPU here
        assert "cuda" in str(err).lower() or "gpu" in str(err).lower()
    else:
        assert is_cuda_array(conv.weight.data)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"groups": 2}, ValueError, "in_channels must be divisible by groups"),
    ({"groups": 0}, ValueError, "groups must be a positive integer"),
    ({"groups": 1.5}, TypeError, "groups to be an int"),
    ({"padding": "same", "stride": 2}, ValueError, "padding='same' is not supported for strided convolutions"),
    ({"padding": "full"}, ValueError, "Invalid padding string 'full'"),
    ({"padding_mode": "mirror"}, ValueError, "padding_mode must be one of"),
    ({"dilation": 0}, ValueError, "dilation"),
])
def test_conv2d_constructor_errors_as_torch(kwargs, error, message):
    with pytest.raises(error, match=message):
        nn.Conv2d(3, 4, 3, **kwargs)
    if error is ValueError and "dilation" not in kwargs:
        with pytest.raises(ValueError, match=message.split("'")[0]):
            torch.nn.Conv2d(3, 4, 3, **kwargs)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 3, 3, groups=2)


def test_conv2d_input_errors():
    with pytest.raises(ValueError, match=r"padding_mode='reflect' needs a padding smaller than the input"):
        nn.Conv2d(1, 1, 1, padding=3, padding_mode="reflect")(np.zeros((1, 1, 3, 3), np.float32))
    nn.Conv2d(1, 1, 1, padding=2, padding_mode="reflect")(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"padding_mode='circular'.*more than once"):
        nn.Conv2d(1, 1, 1, padding=4, padding_mode="circular")(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match=r"kernel size \(3, 3\) with dilation \(3, 3\) \(spanning \(7, 7\)\) is "
                                         r"larger than the padded input \(6, 6\)"):
        nn.Conv2d(1, 1, 3, dilation=3)(np.zeros((1, 1, 6, 6), np.float32))
    with pytest.raises(ValueError, match="non-zero height and width"):
        nn.Conv2d(1, 1, 1)(np.zeros((2, 1, 0, 3), np.float32))
    conv = nn.Conv2d(2, 3, 3, padding="same")
    conv(np.zeros((2, 4, 4), np.float32))  # unbatched: grad_output (O, OH, OW)
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(3, 4, 4\), got \(1, 3, 4, 4\)"):
        conv.backward(np.zeros((1, 3, 4, 4), np.float32))


@pytest.mark.parametrize("args,kwargs", [
    ((3, 4, 3), {"dilation": 2}),
    ((4, 8, (3, 5)), {"groups": 4, "padding": "same", "padding_mode": "replicate"}),
    ((4, 4, 3), {"padding": "valid", "bias": False, "padding_mode": "circular", "stride": (2, 1)}),
    ((2, 2, 1), {"padding": (1, 2), "padding_mode": "reflect"}),
])
def test_conv2d_repr_with_options_matches_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


# --- max-pooling: dilation, ceil_mode, return_indices, NaN -----------------------------------------------


def reads_the_image(size, k, s, p, d, ceil_mode):
    out = reference.pool_out_size(size, k, s, p, d, ceil_mode)
    return out >= 1 and all(any(0 <= i * s - p + t * d < size for t in range(k)) for i in range(out))


@st.composite
def pool_options(draw):
    k = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 4))))
    kh, kw = (k, k) if isinstance(k, int) else k
    padding = draw(st.one_of(st.integers(0, min(kh, kw) // 2), st.tuples(st.integers(0, kh // 2),
                                                                           st.integers(0, kw // 2))))
    ph, pw = (padding, padding) if isinstance(padding, int) else padding
    dilation = draw(st.one_of(st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 2))))
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    sh, sw = (kh, kw) if stride is None else ((stride, stride) if isinstance(stride, int) else stride)
    cfg = {"kernel": k, "stride": stride, "padding": padding, "dilation": dilation,
           "return_indices": draw(st.booleans()), "ceil_mode": draw(st.booleans()),
           "n": draw(st.integers(0, 2)), "c": draw(st.integers(1, 3)), "unbatched": draw(st.booleans()),
           "h": draw(st.integers(max(1, dh * (kh - 1) + 1 - 2 * ph), max(9, dh * (kh - 1) + 1))),
           "w": draw(st.integers(max(1, dw * (kw - 1) + 1 - 2 * pw), max(9, dw * (kw - 1) + 1)))}
    assume(reads_the_image(cfg["h"], kh, sh, ph, dh, cfg["ceil_mode"]))
    assume(reads_the_image(cfg["w"], kw, sw, pw, dw, cfg["ceil_mode"]))
    return cfg


@settings(max_examples=60, deadline=None)
@given(cfg=pool_options(), values=st.sampled_from(["normal", "ties", "nan"]), dtype=st.sampled_from([np.float64,
                                                                                                    np.float32]),
       seed=st.integers(0, 2**16))
def test_maxpool2d_options_match_torch_autograd(cfg, values, dtype, seed, assert_close):
    rng = np.random.default_rng(seed)
    shape = (cfg["c"], cfg["h"], cfg["w"]) if cfg["unbatched"] else (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    x = (rng.integers(-1, 2, shape) if values == "ties" else rng.standard_normal(shape)).astype(dtype)
    if values == "nan":
        x[rng.random(shape) < 0.2] = np.nan  # torch lets a NaN win its window (the last NaN of it)
    args = (cfg["kernel"], cfg["stride"], cfg["padding"], cfg["dilation"], cfg["return_indices"], cfg["ceil_mode"])
    theirs = torch.nn.MaxPool2d(*args)
    xt = torch.tensor(x, requires_grad=True)
    out_t = theirs(xt)
    yt, it = out_t if cfg["return_indices"] else (out_t, None)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))
    for name in BACKENDS:
        manualbp.set_backend(name)
        ours = nn.MaxPool2d(*args)
        out = ours(x)
        if cfg["return_indices"]:
            y, idx = out
            assert idx.dtype == np.int64 and idx.shape == tuple(it.shape)
            np.testing.assert_array_equal(idx, it.numpy(), err_msg=f"{name} indices")
        else:
            y = out
        assert y.dtype == dtype and y.shape == tuple(yt.shape)
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=f"{name} forward")
        gx = ours.backward(g)
        assert gx.dtype == dtype and gx.shape == x.shape
        assert_close(gx, xt.grad, TOL[dtype], f"{name} grad_input")


def test_maxpool2d_refuses_a_window_of_padding_alone():
    """torch returns -inf with an index outside the image there, and its backward writes out of bounds."""
    with pytest.raises(ValueError, match="window 0 along the height reads only padding"):
        nn.MaxPool2d(2, 1, 1, dilation=3)(np.zeros((1, 1, 2, 2), np.float32))
    nn.MaxPool2d(2, 1, 1, dilation=3)(np.zeros((1, 1, 3, 4), np.float32))  # row 2 is inside: fine
    with pytest.raises(ValueError, match="MaxPool2d.*larger than the padded input"):
        nn.MaxPool2d(2, dilation=3)(np.zeros((1, 1, 3, 3), np.float32))
    with pytest.raises(ValueError, match="non-zero channels"):
        nn.MaxPool2d(2)(np.zeros((2, 0, 4, 4), np.float32))


def test_maxpool2d_ceil_mode_output_sizes_as_torch():
    for size, k, s, p, d in [(5, 2, 2, 0, 1), (6, 3, 2, 1, 1), (5, 3, 3, 1, 1), (4, 2, 3, 1, 1), (7, 2, 2, 1, 2),
                             (1, 2, 2, 1, 1), (10, 3, 4, 1, 2)]:
        for ceil_mode in (False, True):
            theirs = torch.nn.functional.max_pool2d(torch.zeros(1, 1, size, size), k, s, p, d, ceil_mode).shape[-1]
            assert reference.pool_out_size(size, k, s, p, d, ceil_mode) == theirs, (size, k, s, p, d, ceil_mode)


def test_maxpool2d_empty_batch_and_repr():
    for name in BACKENDS:
        manualbp.set_backend(name)
        pool = nn.MaxPool2d(3, 2, 1, 2, True, True)
        y, idx = pool(np.zeros((0, 2, 9, 9), np.float32))
        assert y.shape == idx.shape == (0, 2, 4, 4) and idx.dtype == np.int64
        assert pool.backward(np.zeros((0, 2, 4, 4), np.float32)).shape == (0, 2, 9, 9)
    assert repr(nn.MaxPool2d(3, 2, 1, 2, True, True)) == repr(torch.nn.MaxPool2d(3, 2, 1, 2, True, True))
    assert repr(nn.MaxPool2d((2, 3), dilation=(1, 2))) == repr(torch.nn.MaxPool2d((2, 3), dilation=(1, 2)))


# --- the padding kernels: a gather and its scatter-add ------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(mode=st.sampled_from(MODES), pads=st.tuples(*[st.integers(0, 4)] * 4), n=st.integers(0, 2),
       h=st.integers(1, 6), w=st.integers(1, 6), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_pad2d_kernels_match_reference_and_torch(mode, pads, n, h, w, dtype, seed, assert_close):
    left, right, top, bottom = pads
    if mode == "reflect":
        assume(max(left, right) < w and max(top, bottom) < h)
    if mode == "circular":
        assume(max(left, right) <= w and max(top, bottom) <= h)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, h, w)).astype(dtype)
    x[rng.random(x.shape) < 0.1] = np.nan  # copied like any other value
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.pad(xt, pads, mode="constant" if mode == "zeros" else mode)
    g = rng.standard_normal(tuple(yt.shape)).astype(dtype)
    yt.backward(torch.tensor(g))
    for impl in (reference, cpu):
        y = impl.pad2d(x, pads, mode)
        assert y.dtype == dtype
        np.testing.assert_array_equal(y, yt.detach().numpy(), err_msg=impl.__name__)
        gx = impl.pad2d_backward(g, x.shape, pads, mode)
        assert gx.dtype == dtype and gx.shape == x.shape
        assert_close(gx, xt.grad, TOL[dtype], impl.__name__)


def test_pad2d_backward_adds_every_copy():
    """replicate: the corner pixel is copied into the whole corner block, and collects all of it (K16)."""
    g = np.ones((1, 1, 2 + 3 + 1, 1 + 4 + 2))
    gx = cpu.pad2d_backward(g, (1, 1, 3, 4), (1, 2, 2, 1), "replicate")
    assert gx[0, 0, 0, 0] == (2 + 1) * (1 + 1)  # rows 0..2 copy row 0; columns 0..1 copy column 0
    assert gx.sum() == g.sum()
    assert np.array_equal(gx, reference.pad2d_backward(g, (1, 1, 3, 4), (1, 2, 2, 1), "replicate"))
