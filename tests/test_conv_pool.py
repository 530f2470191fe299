"""Conv2d and MaxPool2d against torch.autograd, on both kernel backends; bad inputs; reprs."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import manualbp
from manualbp import nn

TOL = {np.float64: 1e-9, np.float32: 1e-4}
BACKENDS = ("numpy", "numba")


@pytest.fixture(params=BACKENDS)
def backend(request):
    old = manualbp.get_backend()
    manualbp.set_backend(request.param)
    yield request.param
    manualbp.set_backend(old)


@pytest.fixture(autouse=True)
def _restore_backend():
    old = manualbp.get_backend()
    yield
    manualbp.set_backend(old)


def torch_dtype(dtype):
    return torch.float64 if dtype == np.float64 else torch.float32


def twin_conv(c, o, kernel, stride, padding, bias, dtype):
    """A torch Conv2d and ours with the same weights."""
    theirs = torch.nn.Conv2d(c, o, kernel, stride=stride, padding=padding, bias=bias).to(torch_dtype(dtype))
    ours = nn.Conv2d(c, o, kernel, stride=stride, padding=padding, bias=bias)
    ours = ours.double() if dtype == np.float64 else ours
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def forward_backward(ours, theirs, x, seed=0):
    """Run both; return (ours y, ours dL/dx), (torch y, torch dL/dx) for a random upstream gradient."""
    y = ours(x)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(x.dtype)
    gx = ours.backward(g)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    yt.backward(torch.tensor(g))
    return (y, gx), (yt, xt.grad)


@st.composite
def conv_config(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh)), draw(st.integers(0, kw))
    return {"n": draw(st.integers(1, 3)), "c": draw(st.integers(1, 3)), "o": draw(st.integers(1, 4)),
                "h": draw(st.integers(max(1, kh - 2 * ph), 7)), "w": draw(st.integers(max(1, kw - 2 * pw), 7)),
                "kernel": (kh, kw), "stride": (draw(st.integers(1, 3)), draw(st.integers(1, 3))), "padding": (ph, pw),
                "bias": draw(st.booleans())}


@settings(max_examples=25, deadline=None)
@given(cfg=conv_config(), dtype=st.sampled_from([np.float64, np.float32]), seed=st.integers(0, 2**16))
def test_conv2d_matches_torch(cfg, dtype, seed, assert_close):
    x = np.random.default_rng(seed).standard_normal((cfg["n"], cfg["c"], cfg["h"], cfg["w"])).astype(dtype)
    for name in BACKENDS:
        manualbp.set_backend(name)
        ours, theirs = twin_conv(cfg["c"], cfg["o"], cfg["kernel"], cfg["stride"], cfg["padding"], cfg["bias"],
                                 dtype)
        (y, gx), (yt, gxt) = forward_backward(ours, theirs, x, seed)
        assert y.dtype == dtype and gx.dtype == dtype
        assert_close(y, yt, TOL[dtype], f"{name} forward")
        assert_close(gx, gxt, TOL[dtype], f"{name} grad_input")
        assert_close(ours.weight.grad, theirs.weight.grad, TOL[dtype], f"{name} weight.grad")
        if cfg["bias"]:
            assert_close(ours.bias.grad, theirs.bias.grad, TOL[dtype], f"{name} bias.grad")
        else:
            assert ours.bias is None and [k for k, _ in ours.named_parameters()] == ["weight"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_conv2d_lenet_shapes_and_accumulation(backend, dtype, assert_close):
    """A LeNet-sized layer; a second backward adds into .grad, as in torch."""
    ours, theirs = twin_conv(3, 6, 5, 1, 2, True, dtype)
    x = np.random.default_rng(1).standard_normal((4, 3, 12, 10)).astype(dtype)
    (y, gx), (yt, gxt) = forward_backward(ours, theirs, x)
    assert_close(y, yt, TOL[dtype])
    assert_close(gx, gxt, TOL[dtype])
    first = ours.weight.grad.copy()
    ours(x)
    ours.backward(np.ones(y.shape, dtype=dtype))
    theirs.zero_grad()
    theirs(torch.tensor(x)).backward(torch.ones(y.shape, dtype=torch_dtype(dtype)))
    assert_close(ours.weight.grad - first, theirs.weight.grad, TOL[dtype])
    assert list(ours.state_dict()) == list(theirs.state_dict())


@st.composite
def pool_config(draw):
    square = draw(st.booleans())  # int arguments (kernel_size=3), or (h, w) pairs
    kh = draw(st.integers(1, 4))
    kw = kh if square else draw(st.integers(1, 4))
    ph = draw(st.integers(0, kh // 2))
    pw = ph if square else draw(st.integers(0, kw // 2))
    return {"n": draw(st.integers(1, 3)), "c": draw(st.integers(1, 3)),
                "h": draw(st.integers(max(1, kh - 2 * ph), 7)), "w": draw(st.integers(max(1, kw - 2 * pw), 7)),
                "kernel": kh if square else (kh, kw), "padding": ph if square else (ph, pw),
                "stride": draw(st.one_of(st.none(), st.integers(1, 3)))}


@settings(max_examples=25, deadline=None)
@given(cfg=pool_config(), dtype=st.sampled_from([np.float64, np.float32]), ties=st.booleans(),
       unbatched=st.booleans(), seed=st.integers(0, 2**16))
def test_maxpool2d_matches_torch(cfg, dtype, ties, unbatched, seed, assert_close):
    rng = np.random.default_rng(seed)
    shape = (cfg["c"], cfg["h"], cfg["w"]) if unbatched else (cfg["n"], cfg["c"], cfg["h"], cfg["w"])
    x = (rng.integers(-1, 2, shape) if ties else rng.standard_normal(shape)).astype(dtype)
    theirs = torch.nn.MaxPool2d(cfg["kernel"], cfg["stride"], cfg["padding"])
    for name in BACKENDS:
        manualbp.set_backend(name)
        ours = nn.MaxPool2d(cfg["kernel"], cfg["stride"], cfg["padding"])
        (y, gx), (yt, gxt) = forward_backward(ours, theirs, x, seed)
        assert y.dtype == dtype and gx.dtype == dtype and gx.shape == x.shape
        assert_close(y, yt, TOL[dtype], f"{name} forward")
        assert_close(gx, gxt, TOL[dtype], f"{name} grad_input")


# --- bad inputs --------------------------------------------------------------------------------------


def test_conv2d_wrong_channel_count_names_layer_and_shapes():
    layer = nn.Conv2d(3, 8, 5)
    with pytest.raises(ValueError, match=r"Conv2d\(3, 8.*\(N, 3, H, W\).*\(2, 4, 32, 32\)"):
        layer(np.zeros((2, 4, 32, 32), dtype=np.float32))


def test_conv2d_integer_image_is_a_type_error():
    with pytest.raises(TypeError, match="Conv2d.*uint8"):
        nn.Conv2d(3, 8, 5)(np.zeros((1, 3, 32, 32), dtype=np.uint8))


def test_conv2d_needs_3d_or_4d_input():
    with pytest.raises(ValueError, match=r"Conv2d.*\(3, 4\) dimensions.*\(32, 32\)"):
        nn.Conv2d(3, 8, 5)(np.zeros((32, 32), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Conv2d.*dimensions.*\(1, 1, 3, 32, 32\)"):
        nn.Conv2d(3, 8, 5)(np.zeros((1, 1, 3, 32, 32), dtype=np.float32))
    assert nn.Conv2d(3, 8, 5)(np.zeros((3, 32, 32), dtype=np.float32)).shape == (8, 28, 28)  # unbatched


def test_conv2d_kernel_larger_than_padded_input():
    with pytest.raises(ValueError, match=r"Conv2d.*larger than the padded input \(5, 6\)"):
        nn.Conv2d(1, 2, (7, 3), padding=1)(np.zeros((1, 1, 3, 4), dtype=np.float32))
    nn.Conv2d(1, 2, (5, 3), padding=1)(np.zeros((1, 1, 3, 4), dtype=np.float32))  # exactly fits: fine


def test_conv2d_dtype_mismatch():
    with pytest.raises(TypeError, match="Conv2d.*float32.*float64"):
        nn.Conv2d(1, 2, 3)(np.zeros((1, 1, 5, 5), dtype=np.float64))


def test_backward_before_forward():
    with pytest.raises(ValueError, match=r"Conv2d\.backward\(\) called before forward"):
        nn.Conv2d(1, 2, 3).backward(np.zeros((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d\.backward\(\) called before forward"):
        nn.MaxPool2d(2).backward(np.zeros((1, 2, 3, 3), dtype=np.float32))


def test_backward_with_wrong_grad_shape():
    conv, pool = nn.Conv2d(1, 2, 3), nn.MaxPool2d(2)
    x = np.zeros((1, 1, 6, 6), dtype=np.float32)
    conv(x)
    pool(x)
    with pytest.raises(ValueError, match=r"Conv2d.*\(1, 2, 4, 4\).*\(1, 2, 3, 3\)"):
        conv.backward(np.zeros((1, 2, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"MaxPool2d.*\(1, 1, 3, 3\).*\(1, 1, 2, 2\)"):
        pool.backward(np.zeros((1, 1, 2, 2), dtype=np.float32))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        nn.Conv2d(1, 2, 3, padding="full")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 2, 0)
    with pytest.raises(TypeError, match="stride"):
        nn.Conv2d(1, 2, 3, stride=1.5)
    with pytest.raises(ValueError, match="pad should be at most half"):
        nn.MaxPool2d(3, padding=2)
    with pytest.raises(ValueError, match="pad should be at most half"):
        nn.MaxPool2d((2, 4), padding=(1, 3))


def test_maxpool2d_bad_inputs():
    with pytest.raises(ValueError, match="MaxPool2d.*dimensions"):
        nn.MaxPool2d(2)(np.zeros((4, 4), dtype=np.float32))
    with pytest.raises(TypeError, match="MaxPool2d"):
        nn.MaxPool2d(2)(np.zeros((1, 1, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="MaxPool2d.*larger than the padded input"):
        nn.MaxPool2d(3)(np.zeros((1, 1, 2, 4), dtype=np.float32))


# --- printing ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args,kwargs", [
    ((3, 32, 5), {"padding": 2}),
    ((3, 6, 5), {}),
    ((1, 4, (3, 2)), {"stride": (2, 1), "padding": (1, 0), "bias": False}),
    ((6, 16, 5), {"stride": 2, "bias": False}),
])
def test_conv2d_repr_matches_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


@pytest.mark.parametrize("args,kwargs", [((2,), {}), ((3,), {"stride": 1, "padding": 1}), (((2, 3),), {"stride": (1, 2)})])
def test_maxpool2d_repr_matches_torch(args, kwargs):
    assert repr(nn.MaxPool2d(*args, **kwargs)) == repr(torch.nn.MaxPool2d(*args, **kwargs))


def test_sequential_repr_matches_torch():
    ours = nn.Sequential(nn.Conv2d(3, 6, 5), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.MaxPool2d(2, 2))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 5), torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 16, 5),
                                 torch.nn.MaxPool2d(2, 2))
    assert repr(ours) == repr(theirs)
