"""AvgPool2d, AdaptiveAvgPool2d and AdaptiveMaxPool2d against torch.autograd in float64: forward values and
dL/dx for hypothesis configurations (every option of AvgPool2d, ceil_mode windows that hang past the
padding, output sizes with None, larger than the input, 0; unbatched inputs; empty batches); NaN, ties and
infinities in the adaptive max (its indices too); float32; the Numba kernels against their NumPy twins
(serial and parallel drivers); torch's repr; bad options refused with torch's conditions."""
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from manualbp import nn
from manualbp.kernels import cpu, reference
from manualbp.kernels.reference import pool_out_size


def run_both(ours, theirs, x, dtype=np.float64, seed=0):
    """(y, dx, torch y, torch dx), and the indices of both when the layers return them."""
    x = np.asarray(x, dtype)
    out = ours(x)
    y, idx = out if isinstance(out, tuple) else (out, None)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype(dtype)
    dx = ours.backward(g)
    tx = torch.tensor(x, requires_grad=True)
    tout = theirs(tx)
    ty, tidx = tout if isinstance(tout, tuple) else (tout, None)
    if ty.numel() == 0:  # torch's adaptive backwards refuse an empty gradient; dL/dx is 0
        tdx = torch.zeros_like(tx)
    else:
        (tdx,) = torch.autograd.grad(ty, tx, torch.tensor(g))
    return y, dx, ty.detach().numpy(), tdx.numpy(), idx, (None if tidx is None else tidx.numpy())


@st.composite
def avg_configs(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sh, sw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    ceil_mode, include = draw(st.booleans()), draw(st.booleans())
    divisor = draw(st.sampled_from([None, None, 1, 3, 7, -2]))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    assume(pool_out_size(h, kh, sh, ph, 1, ceil_mode) >= 1 and pool_out_size(w, kw, sw, pw, 1, ceil_mode) >= 1)
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    shape = (c, h, w) if draw(st.booleans()) else (n, c, h, w)
    square = draw(st.booleans()) and kh == kw and sh == sw and ph == pw  # ints, as torch prints them
    args = (kh, sh, ph) if square else ((kh, kw), (sh, sw), (ph, pw))
    return args + (ceil_mode, include, divisor), shape


@settings(max_examples=80, deadline=None)
@given(config=avg_configs(), seed=st.integers(0, 2**16))
def test_avgpool2d_matches_torch_in_float64(config, seed):
    args, shape = config
    x = np.random.default_rng(seed).standard_normal(shape)
    y, dx, ty, tdx, _, _ = run_both(nn.AvgPool2d(*args), torch.nn.AvgPool2d(*args), x, seed=seed)
    assert y.shape == ty.shape and dx.shape == x.shape
    np.testing.assert_allclose(y, ty, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, tdx, rtol=1e-13, atol=1e-15)


def test_ceil_mode_window_past_the_padding_divides_by_its_clipped_size():
    """H = W = 6, kernel 3, stride 2, padding 1, ceil_mode: the last window starts at row 5 and would run to
    row 7, past the padded input's last row 6; with count_include_pad its divisor counts 2 rows (V2), not 3."""
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    for include in (True, False):
        y, dx, ty, tdx, _, _ = run_both(nn.AvgPool2d(3, 2, 1, True, include), torch.nn.AvgPool2d(3, 2, 1, True, include), x)
        np.testing.assert_allclose(y, ty, rtol=1e-14)
        np.testing.assert_allclose(dx, tdx, rtol=1e-14)
    corner = nn.AvgPool2d(3, 2, 1, ceil_mode=True)(np.ones((1, 1, 6, 6)))[0, 0, 3, 3]
    assert corner == 0.25  # one pixel of ones in a 2 x 2 cut window
    pool = nn.AvgPool2d(2, 2, 0, ceil_mode=True)
    assert pool(np.ones((1, 1, 3, 3))).tolist() == [[[[1.0, 1.0], [1.0, 1.0]]]]  # clipped windows average to 1


@st.composite
def adaptive_configs(draw):
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    oh = draw(st.one_of(st.none(), st.integers(0, 11)))
    ow = draw(st.one_of(st.none(), st.integers(0, 11)))
    size = draw(st.sampled_from([(oh, ow), [oh, ow]])) if (oh is None or ow is None or oh != ow) else draw(
        st.sampled_from([oh, (oh, ow)]))
    n, c = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    shape = (c, h, w) if draw(st.booleans()) else (n, c, h, w)
    return size, shape


@settings(max_examples=80, deadline=None)
@given(config=adaptive_configs(), seed=st.integers(0, 2**16), ties=st.booleans())
def test_adaptive_pooling_matches_torch_in_float64(config, seed, ties):
    size, shape = config
    rng = np.random.default_rng(seed)
    x = rng.integers(-2, 3, shape).astype(np.float64) if ties else rng.standard_normal(shape)
    y, dx, ty, tdx, _, _ = run_both(nn.AdaptiveAvgPool2d(size), torch.nn.AdaptiveAvgPool2d(size), x, seed=seed)
    np.testing.assert_allclose(y, ty, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(dx, tdx, rtol=1e-13, atol=1e-15)
    y, dx, ty, tdx, idx, tidx = run_both(nn.AdaptiveMaxPool2d(size, True), torch.nn.AdaptiveMaxPool2d(size, True), x,
                                         seed=seed)
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(idx, tidx)
    assert idx.dtype == np.int64
    np.testing.assert_allclose(dx, tdx, rtol=1e-14, atol=1e-15)


def test_adaptive_max_nan_and_infinities_as_torch():
    nan, inf = np.nan, np.inf
    x = np.array([[[[nan, 1.0, nan, 2.0], [-inf, -inf, 0.5, inf]],
                   [[-inf, -inf, -inf, -inf], [3.0, 3.0, 3.0, nan]]]])
    for size in (1, (1, 2), (2, 3), (2, 4), (3, 5)):
        y, dx, ty, tdx, idx, tidx = run_both(nn.AdaptiveMaxPool2d(size, True), torch.nn.AdaptiveMaxPool2d(size, True), x)
        np.testing.assert_array_equal(y, ty)
        np.testing.assert_array_equal(idx, tidx)
        np.testing.assert_array_equal(dx, tdx)


@pytest.mark.parametrize("make", [lambda m: m.AvgPool2d(3, 2, 1, True, False), lambda m: m.AvgPool2d(2, 1, 1, False, True, 3),
                                  lambda m: m.AdaptiveAvgPool2d((3, 2)), lambda m: m.AdaptiveAvgPool2d((5, 7))])
def test_average_of_nan_and_infinities_as_torch(make):
    x = np.random.default_rng(4).standard_normal((1, 2, 5, 6))
    x[0, 0, 1, 1], x[0, 0, 3, 4], x[0, 1, 0, 0], x[0, 1, 4, 5] = np.nan, np.inf, -np.inf, np.inf
    y, dx, ty, tdx, _, _ = run_both(make(nn), make(torch.nn), x)
    np.testing.assert_allclose(y, ty, rtol=1e-13, equal_nan=True)
    np.testing.assert_allclose(dx, tdx, rtol=1e-13)  # the gradient does not read x: finite


@pytest.mark.parametrize("make", [lambda m: m.AvgPool2d(3, 2, 1, True, False), lambda m: m.AdaptiveAvgPool2d((3, 2)),
                                  lambda m: m.AdaptiveMaxPool2d(3)])
def test_float32_matches_torch_float32(make):
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 7)).astype(np.float32)
    y, dx, ty, tdx, _, _ = run_both(make(nn), make(torch.nn), x, np.float32)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_allclose(y, ty, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dx, tdx, rtol=1e-5, atol=1e-6)


# --- kernels against their NumPy twins ---------------------------------------------------------------

AVG_OPTIONS = [((3, 3), (2, 2), (1, 1), True, True, None), ((3, 2), (1, 2), (1, 0), False, False, None),
               ((2, 2), (2, 2), (0, 0), True, False, 3), ((4, 3), (3, 1), (2, 1), True, True, -5)]


@pytest.mark.parametrize("options", AVG_OPTIONS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (8, 16, 20, 20)])  # the second runs the parallel drivers
def test_avgpool2d_kernels_match_reference(options, dtype, shape):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    y = cpu.avgpool2d_forward(x, *options)
    y_ref = reference.avgpool2d_forward(x, *options)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    assert y.dtype == y_ref.dtype == dtype
    np.testing.assert_allclose(y, y_ref, rtol=rtol, atol=rtol)
    g = rng.standard_normal(y.shape).astype(dtype)
    gx = cpu.avgpool2d_backward(g, x.shape, *options)
    assert gx.dtype == dtype
    np.testing.assert_allclose(gx, reference.avgpool2d_backward(g, x.shape, *options), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("size", [(1, 1), (3, 4), (7, 5), (13, 21), (0, 3)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (8, 16, 20, 20)])
def test_adaptive_kernels_match_reference(size, dtype, shape):
    rng = np.random.default_rng(6)
    x = rng.integers(-3, 4, shape).astype(dtype)  # ties
    x[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    y = cpu.adaptive_avgpool2d_forward(x, size)
    np.testing.assert_allclose(y, reference.adaptive_avgpool2d_forward(x, size), rtol=rtol, atol=rtol, equal_nan=True)
    g = rng.standard_normal(y.shape).astype(dtype)
    np.testing.assert_allclose(cpu.adaptive_avgpool2d_backward(g, x.shape),
                               reference.adaptive_avgpool2d_backward(g, x.shape), rtol=rtol, atol=rtol)
    (y, idx), (y_ref, idx_ref) = cpu.adaptive_maxpool2d_forward(x, size), reference.adaptive_maxpool2d_forward(x, size)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    np.testing.assert_allclose(cpu.adaptive_maxpool2d_backward(g, idx, x.shape),
                               reference.adaptive_maxpool2d_backward(g, idx, x.shape), rtol=rtol, atol=rtol)


def test_numpy_backend_gives_the_same_layers():
    import manualbp

    x = np.random.default_rng(3).standard_normal((2, 2, 6, 5))
    layers = [nn.AvgPool2d(3, 2, 1, True, False, None), nn.AdaptiveAvgPool2d((4, 3)), nn.AdaptiveMaxPool2d(4)]
    got = [(m(x), m.backward(np.ones(m(x).shape))) for m in layers]
    manualbp.set_backend("numpy")
    try:
        for m, (y, dx) in zip(layers, got):
            np.testing.assert_allclose(m(x), y, rtol=1e-14)
            np.testing.assert_allclose(m.backward(np.ones(y.shape)), dx, rtol=1e-14)
    finally:
        manualbp.set_backend("numba")


# --- construction, repr, refusals ----------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda m: m.AvgPool2d(2), lambda m: m.AvgPool2d((2, 3), (1, 2), 1, True, False, 5), lambda m: m.AvgPool2d(3, 1, 1),
    lambda m: m.AdaptiveAvgPool2d(3), lambda m: m.AdaptiveAvgPool2d((None, 3)), lambda m: m.AdaptiveMaxPool2d((2, 4)),
    lambda m: m.AdaptiveMaxPool2d(5, True),
])
def test_repr_is_torchs(make):
    assert repr(make(nn)) == repr(make(torch.nn))


@pytest.mark.parametrize("make,error,match", [
    (lambda: nn.AvgPool2d(3, padding=2), ValueError, "pad should be at most half of effective kernel size"),
    (lambda: nn.AvgPool2d(0), ValueError, "kernel_size > 0"),
    (lambda: nn.AvgPool2d(2, stride=0), ValueError, "stride > 0"),
    (lambda: nn.AvgPool2d(2, divisor_override=0), ValueError, "divisor_override must not be zero"),
    (lambda: nn.AvgPool2d(2, divisor_override=2.5), TypeError, "divisor_override to be an int or None"),
    (lambda: nn.AdaptiveAvgPool2d(-1), ValueError, "output_size >= 0"),
    (lambda: nn.AdaptiveAvgPool2d((1, 2, 3)), ValueError, "output_size to be an int or a pair"),
    (lambda: nn.AdaptiveMaxPool2d(None), TypeError, "output_size to be an int or a pair whose entries are ints or None"),
    (lambda: nn.AdaptiveMaxPool2d(2.5), TypeError, "output_size to be an int or a pair whose entries are ints or None"),
])
def test_bad_options_are_refused(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_bad_inputs_and_backward_checks():
    with pytest.raises(ValueError, match=r"kernel \(6, 6\) is larger than the padded input \(5, 5\)"):
        nn.AvgPool2d(6)(np.ones((1, 1, 5, 5)))
    with pytest.raises(ValueError, match="expected input with \\(3, 4\\) dimensions"):
        nn.AdaptiveAvgPool2d(2)(np.ones((4, 4)))
    with pytest.raises(ValueError, match="non-zero channels, height and width"):
        nn.AdaptiveMaxPool2d(2)(np.ones((1, 2, 0, 4)))
    for layer in (nn.AvgPool2d(2), nn.AdaptiveAvgPool2d(2), nn.AdaptiveMaxPool2d(2)):
        with pytest.raises(ValueError, match="before forward"):
            layer.backward(np.ones((1, 1, 2, 2)))
        layer(np.ones((3, 4, 4)))  # unbatched: grad_output (3, 2, 2)
        with pytest.raises(ValueError, match=r"expected grad_output of shape \(3, 2, 2\), got \(1, 3, 2, 2\)"):
            layer.backward(np.ones((1, 3, 2, 2)))
        with pytest.raises(TypeError, match="dtype float64"):
            layer.backward(np.ones((3, 2, 2), np.float32))


_THREADS_SCRIPT = r"""
import sys
import numpy as np
from manualbp.kernels import cpu

rng = np.random.default_rng(0)
x = rng.standard_normal((8, 16, 21, 19))
g = rng.standard_normal((8, 16, 11, 10))
out = {}
for dtype in (np.float32, np.float64):
    xd, gd = x.astype(dtype), g.astype(dtype)
    opts = ((3, 3), (2, 2), (1, 1), True, True, None)
    out[f"avg_{dtype.__name__}"] = cpu.avgpool2d_forward(xd, *opts)
    out[f"avg_back_{dtype.__name__}"] = cpu.avgpool2d_backward(gd, x.shape, *opts)
    out[f"adaptive_{dtype.__name__}"] = cpu.adaptive_avgpool2d_forward(xd, (11, 10))
    out[f"adaptive_back_{dtype.__name__}"] = cpu.adaptive_avgpool2d_backward(gd, x.shape)
    out[f"adaptive_max_{dtype.__name__}"] = cpu.adaptive_maxpool2d_forward(xd, (11, 10))[0]
    out[f"gelu_{dtype.__name__}"] = cpu.gelu_forward(xd, "none")
    out[f"gelu_back_{dtype.__name__}"] = cpu.gelu_backward(xd, xd, "tanh")
    out[f"softplus_back_{dtype.__name__}"] = cpu.softplus_backward(xd, xd, 2.0, 3.0)
np.savez(sys.argv[1], **out)
"""


def test_parallel_kernels_give_the_same_bits_on_one_and_two_threads(tmp_path):
    """The pooling and activation kernels of this family, large enough to run their parallel drivers."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    results = []
    for threads in (1, 2):
        path = tmp_path / f"threads{threads}.npz"
        env = dict(os.environ, NUMBA_NUM_THREADS=str(threads))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
        subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(path)], env=env, check=True, cwd=root, timeout=300)
        results.append(dict(np.load(path)))
    one, two = results
    assert one.keys() == two.keys() and len(one) == 16
    for key in one:
        assert one[key].tobytes() == two[key].tobytes(), f"{key} differs between 1 and 2 threads"


NOT_INT = [2.5, "3", None, [3], (), b"3", 1 + 2j, np.float32(2.0), object(), True]
PAIR = NOT_INT + [0, -1, (1, 2, 3), (0, 1), (2, -1), (2.5, 2), ("3", 3), [1, 1, 1]]
BAD_OPTIONS = [
    (nn.AvgPool2d, {"kernel_size": 2}, {"kernel_size": PAIR, "stride": [s for s in PAIR if s is not None],
                                        "padding": [p for p in PAIR if repr(p) not in ("0", "(0, 1)")] + [2, (0, 2), "same"],
                                        "divisor_override": [0, 2.5, "3", True, [2], np.float64(2.0)]}),
    (nn.AdaptiveAvgPool2d, {"output_size": 2}, {"output_size": [p for p in PAIR if repr(p) not in ("0", "(0, 1)")] + [None]}),
    (nn.AdaptiveMaxPool2d, {"output_size": 2}, {"output_size": [p for p in PAIR if repr(p) not in ("0", "(0, 1)")] + [None]}),
]


@settings(max_examples=150, deadline=None, derandomize=True, database=None)
@given(st.data())
def test_every_option_refuses_bad_values(draw):
    factory, valid, bad = draw.draw(st.sampled_from(BAD_OPTIONS))
    arg = draw.draw(st.sampled_from(sorted(bad)))
    value = draw.draw(st.sampled_from(bad[arg]))
    with pytest.raises((TypeError, ValueError)):
        factory(**{**valid, arg: value})


@pytest.mark.parametrize("make", [lambda: nn.AvgPool2d(3, 2, 1), lambda: nn.AdaptiveAvgPool2d((2, 3)),
                                  lambda: nn.AdaptiveMaxPool2d(3), lambda: nn.GELU(), lambda: nn.SiLU(),
                                  lambda: nn.ELU(0.5), lambda: nn.Softplus(2.0)])
def test_a_look_under_no_grad_leaves_the_saved_state_alone(make):
    """The saved-state bookkeeping of nn/saved.py holds for the new layers: a forward under no_grad (another
    batch) saves nothing, so backward still belongs to the training forward."""
    import manualbp

    rng = np.random.default_rng(9)
    x1, x2 = rng.standard_normal((2, 3, 6, 7)), rng.standard_normal((2, 3, 4, 5))
    layer, fresh = make(), make()
    y = layer(x1)
    g = rng.standard_normal(np.shape(y[0] if isinstance(y, tuple) else y))
    with manualbp.no_grad():
        layer(x2)
    fresh(x1)
    np.testing.assert_array_equal(layer.backward(g), fresh.backward(g))
