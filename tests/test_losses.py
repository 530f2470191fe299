"""The losses against torch.autograd: forward values and dL/d(input), every option, both dtypes."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from manualbp.gradcheck import numerical_grad
from manualbp.nn.loss_binary import BCELoss, BCEWithLogitsLoss
from manualbp.nn.loss_classification import CrossEntropyLoss, NLLLoss
from manualbp.nn.loss_regression import HuberLoss, L1Loss, MSELoss, SmoothL1Loss

DTYPES = [np.float64, np.float32]
REDUCTIONS = ["mean", "sum", "none"]
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
# (rtol, atol): relative agreement, plus a little absolute slack for values near 0
TOL = {np.float64: (1e-9, 1e-12), np.float32: (1e-4, 1e-6)}


def close(ours, theirs, dtype):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else theirs
    rtol, atol = TOL[dtype]
    np.testing.assert_allclose(np.asarray(ours), theirs, rtol=rtol, atol=atol)


def tt(a, dtype=None):
    """A torch tensor of a NumPy array (None stays None)."""
    if a is None:
        return None
    t = torch.tensor(np.asarray(a))
    return t if dtype is None else t.to(TORCH_DTYPE[dtype])


def check_against_torch(ours, theirs, x, target, target_t, dtype, reduction, seed=0):
    """Forward both; backward with a random upstream gradient ('none') or the default 1 and a multiplier."""
    loss = ours(x, target)
    xt = torch.tensor(x, requires_grad=True)
    loss_t = theirs(xt, target_t)
    close(loss, loss_t, dtype)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == tuple(loss_t.shape) and loss.dtype == dtype
        g = np.random.default_rng(seed).standard_normal(loss.shape).astype(dtype)
        gx = ours.backward(g)
        loss_t.backward(torch.tensor(g))
    else:
        assert type(loss) is dtype, type(loss)
        gx = ours.backward()
        loss_t.backward()
        close(ours.backward(-2.5), -2.5 * xt.grad, dtype)  # a scalar multiplier scales the gradient
    assert isinstance(gx, np.ndarray) and gx.dtype == dtype and gx.shape == x.shape
    close(gx, xt.grad, dtype)
    return loss, gx


# --- the tutorials' numbers ------------------------------------------------------------------------------

def test_tutorial_numbers():
    a = np.array([1.0, 2.0, 3.0]).reshape(1, 1, 1, 3)
    b = np.array([1.0, 2.0, 5.0]).reshape(1, 1, 1, 3)
    assert float(L1Loss(reduction="sum")(a, b)) == 2.0
    assert f"{MSELoss()(a, b):.4f}" == "1.3333"
    ce = CrossEntropyLoss()
    assert f"{ce(np.array([[0.1, 0.2, 0.3]]), np.array([1])):.4f}" == "1.1019"
    assert f"{ce(np.array([[2.0, 1.0, 0.1]]), np.array([0])):.4f}" == "0.4170"
    assert f"{ce(np.array([[2.0, 1.0, 0.1]], dtype=np.float32), np.array([0])).item():.4f}" == "0.4170"


# --- regression ---------------------------------------------------------------------------------------------

REGRESSION = {
    "l1": (lambda r, p: L1Loss(reduction=r), lambda r, p: torch.nn.L1Loss(reduction=r)),
    "mse": (lambda r, p: MSELoss(reduction=r), lambda r, p: torch.nn.MSELoss(reduction=r)),
    "smooth_l1": (lambda r, p: SmoothL1Loss(reduction=r, beta=p), lambda r, p: torch.nn.SmoothL1Loss(reduction=r, beta=p)),
    "huber": (lambda r, p: HuberLoss(reduction=r, delta=p), lambda r, p: torch.nn.HuberLoss(reduction=r, delta=p)),
}


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(REGRESSION)), shape=st.lists(st.integers(1, 4), min_size=0, max_size=4),
       reduction=st.sampled_from(REDUCTIONS), dtype=st.sampled_from(DTYPES),
       param=st.sampled_from([0.0, 0.5, 1.0, 2.0]), seed=st.integers(0, 2**16))
def test_regression_matches_torch(kind, shape, reduction, dtype, param, seed):
    if kind == "huber" and param == 0.0:
        param = 1.5
    rng = np.random.default_rng(seed)
    x = np.asarray(rng.standard_normal(shape) * 2, dtype=dtype)  # shape () too
    t = np.asarray(rng.standard_normal(shape) * 2, dtype=dtype)
    flat_x, flat_t = x.reshape(-1), t.reshape(-1)
    flat_t[:1] = flat_x[:1]  # d = 0: the kink of L1, sign(0) = 0
    if flat_x.size > 1:  # d = +-param exactly: the edge of the quadratic zone
        flat_t[1], flat_x[1] = 0.0, param * (1 if seed % 2 else -1)
    make_ours, make_theirs = REGRESSION[kind]
    check_against_torch(make_ours(reduction, param), make_theirs(reduction, param), x, t, tt(t), dtype, reduction,
                        seed)


def test_l1_gradient_at_zero_is_zero():
    loss = L1Loss(reduction="sum")
    loss(np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 4.0]))
    np.testing.assert_array_equal(loss.backward(), [0.0, 1.0, -1.0])


def test_float64_target_keeps_float32_computation():
    x = np.array([0.5, 1.5], dtype=np.float32)
    for loss in (MSELoss(), BCEWithLogitsLoss(weight=np.array([1.0, 2.0]))):
        value = loss(x, np.array([0.0, 1.0]))
        assert type(value) is np.float32
        assert loss.backward().dtype == np.float32
    for loss in (CrossEntropyLoss(weight=np.array([1.0, 2.0]), label_smoothing=0.1), NLLLoss(weight=[2, 1])):
        assert type(loss(x[None], np.array([1]))) is np.float32
        assert loss.backward().dtype == np.float32
    assert type(float(MSELoss()(x, x))) is float and MSELoss()(x, x).item() == 0.0


# --- binary cross-entropy -----------------------------------------------------------------------------------

def weight_of(rng, kind, shape):
    if kind == "none" or not shape:
        return None
    wshape = {"full": shape, "last": shape[-1:], "one": (1,)}[kind]
    return rng.uniform(0.1, 2.0, wshape)


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from(DTYPES), wkind=st.sampled_from(["none", "full", "last", "one"]),
       binary=st.booleans(), seed=st.integers(0, 2**16))
def test_bce_matches_torch(shape, reduction, dtype, wkind, binary, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 1.0, shape).astype(dtype)
    t = (rng.integers(0, 2, shape) if binary else rng.uniform(0, 1, shape)).astype(dtype)
    flat = x.reshape(-1)
    flat[::3] = 0.0  # log(0): the -100 clamp
    flat[1::4] = 1.0
    w = weight_of(rng, wkind, shape)
    ours = BCELoss(weight=w, reduction=reduction)
    theirs = torch.nn.BCELoss(weight=tt(w, dtype), reduction=reduction)
    check_against_torch(ours, theirs, x, t, tt(t), dtype, reduction, seed)


def test_bce_clamps_each_log_at_minus_100():
    x = np.array([0.0, 1.0, 0.0, 1.0])
    t = np.array([0.0, 1.0, 1.0, 0.0])
    loss = BCELoss(reduction="none")
    np.testing.assert_array_equal(loss(x, t), [0.0, 0.0, 100.0, 100.0])
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.BCELoss(reduction="none")(xt, torch.tensor(t)).backward(torch.ones(4, dtype=torch.float64))
    np.testing.assert_array_equal(loss.backward(np.ones(4)), xt.grad.numpy())  # +-1/float32(1e-12) as torch


@settings(max_examples=50, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), reduction=st.sampled_from(REDUCTIONS),
       dtype=st.sampled_from(DTYPES), wkind=st.sampled_from(["none", "full", "last", "one"]),
       pwkind=st.sampled_from(["none", "full", "last", "one"]), binary=st.booleans(), seed=st.integers(0, 2**16))
def test_bce_with_logits_matches_torch(shape, reduction, dtype, wkind, pwkind, binary, seed):
    rng = np.random.default_rng(seed)
    z = (rng.standard_normal(shape) * 4).astype(dtype)
    flat = z.reshape(-1)
    flat[::3] = 1000.0
    flat[1::4] = -1000.0
    t = (rng.integers(0, 2, shape) if binary else rng.uniform(0, 1, shape)).astype(dtype)
    w, pw = weight_of(rng, wkind, shape), weight_of(rng, pwkind, shape)
    ours = BCEWithLogitsLoss(weight=w, reduction=reduction, pos_weight=pw)
    theirs = torch.nn.BCEWithLogitsLoss(weight=tt(w, dtype), reduction=reduction, pos_weight=tt(pw, dtype))
    check_against_torch(ours, theirs, z, t, tt(t), dtype, reduction, seed)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_is_exact_at_plus_minus_1000(dtype):
    z = np.array([1000.0, -1000.0, 1000.0, -1000.0], dtype=dtype)
    t = np.array([0.0, 1.0, 1.0, 0.0], dtype=dtype)
    loss = BCEWithLogitsLoss(reduction="none")
    np.testing.assert_array_equal(loss(z, t), [1000.0, 1000.0, 0.0, 0.0])
    np.testing.assert_array_equal(loss.backward(np.ones(4, dtype=dtype)), [1.0, -1.0, 0.0, 0.0])


# --- classification -----------------------------------------------------------------------------------------

@st.composite
def classification_case(draw, cross_entropy):
    layout = draw(st.sampled_from(["C", "NC", "NCd", "NCdd"]))
    n_classes = draw(st.integers(1, 5))
    batch = {"C": (), "NC": (draw(st.integers(1, 4)),)}.get(layout)
    if batch is None:
        batch = (draw(st.integers(1, 3)),) + tuple(draw(st.integers(1, 3)) for _ in range(len(layout) - 2))
    probs = cross_entropy and draw(st.booleans())
    return {
        "layout": layout, "n_classes": n_classes, "batch": batch, "probs": probs,
        "weighted": draw(st.booleans()),
        "ignore": draw(st.sampled_from(["default", "present", "class", "all"])) if not probs else "default",
        "smoothing": draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])) if cross_entropy else 0.0,
        "normalized": draw(st.booleans()),
        "reduction": draw(st.sampled_from(REDUCTIONS)), "dtype": draw(st.sampled_from(DTYPES)),
        "seed": draw(st.integers(0, 2**16))}


def build_classification(case):
    """input, target (ours), target (torch), weight, ignore_index for a drawn case."""
    rng = np.random.default_rng(case["seed"])
    c, batch, dtype = case["n_classes"], case["batch"], case["dtype"]
    shape = (c,) if not batch else batch[:1] + (c,) + batch[1:]
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    w = rng.uniform(0.1, 2.0, c) if case["weighted"] else None
    if case["probs"]:
        p = rng.uniform(0, 1, shape)
        if case["normalized"]:
            p /= p.sum(axis=0 if not batch else 1, keepdims=True)
        p = p.astype(dtype)
        return x, p, torch.tensor(p), w, -100
    target = rng.integers(0, c, batch)  # shape () for unbatched input
    ignore_index = {"default": -100, "present": -100, "all": -100, "class": c - 1}[case["ignore"]]
    if case["ignore"] == "present":
        target.reshape(-1)[::2] = -100
    if case["ignore"] == "all":
        target = np.full(batch, -100)
    return x, target, torch.tensor(target), w, ignore_index


@settings(max_examples=120, deadline=None)
@given(case=classification_case(cross_entropy=True))
def test_cross_entropy_matches_torch(case):
    x, target, target_t, w, ignore_index = build_classification(case)
    dtype, reduction = case["dtype"], case["reduction"]
    kwargs = {"ignore_index": ignore_index, "reduction": reduction, "label_smoothing": case["smoothing"]}
    ours = CrossEntropyLoss(weight=w, **kwargs)
    theirs = torch.nn.CrossEntropyLoss(weight=tt(w, dtype), **kwargs)
    check_against_torch(ours, theirs, x, target, target_t, dtype, reduction, case["seed"])


@settings(max_examples=60, deadline=None)
@given(case=classification_case(cross_entropy=False))
def test_nll_matches_torch(case):
    x, target, target_t, w, ignore_index = build_classification(case)
    dtype, reduction = case["dtype"], case["reduction"]
    ours = NLLLoss(weight=w, ignore_index=ignore_index, reduction=reduction)
    theirs = torch.nn.NLLLoss(weight=tt(w, dtype), ignore_index=ignore_index, reduction=reduction)
    check_against_torch(ours, theirs, x, target, target_t, dtype, reduction, case["seed"])


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_all_ignored_mean_is_nan_with_zero_gradient(smoothing, weighted):
    w = np.array([1.0, 2.0, 3.0]) if weighted else None
    loss = CrossEntropyLoss(weight=w, label_smoothing=smoothing)
    assert np.isnan(loss(np.ones((2, 3)), np.array([-100, -100])))
    np.testing.assert_array_equal(loss.backward(), np.zeros((2, 3)))


def test_zero_weight_sum_gives_nan_like_torch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    t = np.array([0, 1, -100])
    w = np.array([0.0, 0.0, 1.0, 1.0])
    for smoothing in (0.0, 0.2):
        for ours, theirs in ((CrossEntropyLoss(weight=w, label_smoothing=smoothing),
                              torch.nn.CrossEntropyLoss(weight=torch.tensor(w), label_smoothing=smoothing)),
                             (NLLLoss(weight=w), torch.nn.NLLLoss(weight=torch.tensor(w)))):
            check_against_torch(ours, theirs, x, t, torch.tensor(t), np.float64, "mean")


def test_cross_entropy_gradient_is_softmax_minus_target():
    z = np.array([[2.0, 1.0, 0.1], [0.5, -1.0, 3.0]])
    loss = CrossEntropyLoss(reduction="sum")
    loss(z, np.array([0, 2]))
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(loss.backward(), p - np.eye(3)[[0, 2]], rtol=1e-12)


def test_cross_entropy_is_stable_for_huge_logits():
    loss = CrossEntropyLoss(reduction="none")
    np.testing.assert_allclose(loss(np.array([[1000.0, 0.0], [0.0, 1000.0]]), np.array([1, 1])), [1000.0, 0.0])
    np.testing.assert_allclose(loss.backward(np.ones(2)), [[1.0, -1.0], [0.0, 0.0]])


# --- finite differences -------------------------------------------------------------------------------------


FD_CASES = [
    ("cross_entropy", lambda: CrossEntropyLoss(weight=np.array([0.5, 1.0, 2.0]), label_smoothing=0.2), (4, 3, 2),
     np.array([[0, 2], [1, -100], [2, 2], [0, 1]])),
    ("cross_entropy_probs", lambda: CrossEntropyLoss(weight=np.array([0.5, 1.0, 2.0])), (4, 3),
     np.random.default_rng(5).uniform(0, 1, (4, 3))),
    ("nll", lambda: NLLLoss(weight=np.array([0.5, 1.0, 2.0]), reduction="sum"), (4, 3), np.array([0, 1, 2, 1])),
    ("bce_with_logits", lambda: BCEWithLogitsLoss(pos_weight=np.array([3.0, 0.5, 1.0])), (4, 3),
     np.random.default_rng(6).uniform(0, 1, (4, 3))),
    ("bce", lambda: BCELoss(weight=np.array([2.0, 1.0, 0.5])), None, np.random.default_rng(7).uniform(0, 1, (4, 3))),
    ("smooth_l1", lambda: SmoothL1Loss(beta=0.7), (4, 3), np.random.default_rng(8).standard_normal((4, 3))),
    ("huber", lambda: HuberLoss(delta=0.7, reduction="sum"), (4, 3), np.random.default_rng(9).standard_normal((4, 3))),
    ("mse", lambda: MSELoss(), (4, 3), np.random.default_rng(10).standard_normal((4, 3))),
]


@pytest.mark.parametrize("name,make,shape,target", FD_CASES, ids=[c[0] for c in FD_CASES])
def test_backward_matches_central_differences(name, make, shape, target):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.05, 0.95, target.shape) if shape is None else rng.standard_normal(shape)
    loss = make()
    loss(x, target)
    analytic = loss.backward()
    numeric = numerical_grad(lambda: loss(x, target), x)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


# --- outputs, repr, exports ---------------------------------------------------------------------------------

def test_reprs_match_torch():
    pairs = [(CrossEntropyLoss(), torch.nn.CrossEntropyLoss()), (SmoothL1Loss(beta=2.0), torch.nn.SmoothL1Loss(beta=2.0)),
             (BCEWithLogitsLoss(pos_weight=np.ones(2)), torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(2))),
             (NLLLoss(weight=np.ones(3)), torch.nn.NLLLoss(weight=torch.ones(3))), (L1Loss(), torch.nn.L1Loss()),
             (MSELoss(), torch.nn.MSELoss()), (HuberLoss(), torch.nn.HuberLoss()), (BCELoss(), torch.nn.BCELoss())]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_exported_from_manualbp_nn():
    from manualbp import nn
    for cls in (L1Loss, MSELoss, SmoothL1Loss, HuberLoss, BCELoss, BCEWithLogitsLoss, NLLLoss, CrossEntropyLoss):
        assert getattr(nn, cls.__name__) is cls


def test_unbatched_cross_entropy_returns_a_0d_array_for_none():
    loss = CrossEntropyLoss(reduction="none")
    value = loss(np.array([0.1, 0.2, 0.3]), 1)
    assert isinstance(value, np.ndarray) and value.shape == ()
    assert loss.backward(np.array(1.0)).shape == (3,)


# --- bad input ----------------------------------------------------------------------------------------------

def test_class_index_out_of_range_names_value_and_classes():
    for loss in (CrossEntropyLoss(), NLLLoss()):
        with pytest.raises(ValueError, match=r"target value 7 .*C=3"):
            loss(np.zeros((2, 3)), np.array([0, 7]))
        with pytest.raises(ValueError, match=r"target value -1 .*C=3"):
            loss(np.zeros((2, 3)), np.array([-1, 0]))
    with pytest.raises(ValueError, match=r"target value 3 .*C=3"):
        CrossEntropyLoss(ignore_index=1)(np.zeros((2, 3, 2)), np.array([[1, 1], [3, 0]]))


@pytest.mark.parametrize("bad", [-0.1, 1.5, np.nan])
def test_bce_input_outside_unit_interval(bad):
    with pytest.raises(ValueError, match=r"input must lie in \[0, 1\]"):
        BCELoss()(np.array([0.5, bad]), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\]"):
        BCELoss()(np.array([0.5, 0.5]), np.array([0.0, bad]))


def test_target_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 3\).*got \(3, 2\)"):
        MSELoss()(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 3\).*got \(2,\)"):
        BCEWithLogitsLoss()(np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"expected target of shape \(2, 4\), got \(2,\)"):
        CrossEntropyLoss()(np.zeros((2, 3, 4)), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match=r"expected target of shape \(\), got \(1,\)"):
        NLLLoss()(np.zeros(3), np.zeros(1, dtype=np.int64))
    with pytest.raises(ValueError, match=r"shape \(2, 3\), got \(2,\)"):
        CrossEntropyLoss()(np.zeros((2, 3)), np.zeros(2))  # a float target is a probability target
    with pytest.raises(TypeError, match="integer dtype"):
        NLLLoss()(np.zeros((2, 3)), np.zeros(2))


def test_integer_or_non_array_input_is_a_type_error():
    for loss, target in ((MSELoss(), np.zeros(3)), (BCELoss(), np.zeros(3)), (CrossEntropyLoss(), np.array(0)),
                         (NLLLoss(), np.array(0))):
        with pytest.raises(TypeError, match="float32 or float64"):
            loss(np.zeros(3, dtype=np.int64), target)
        with pytest.raises(TypeError, match="numpy array"):
            loss([0.0, 0.0, 0.0], target)


def test_bad_options():
    for cls in (L1Loss, MSELoss, SmoothL1Loss, HuberLoss, BCELoss, BCEWithLogitsLoss, NLLLoss, CrossEntropyLoss):
        with pytest.raises(ValueError, match="reduction"):
            cls(reduction="avg")
    with pytest.raises(ValueError, match="beta"):
        SmoothL1Loss(beta=-1.0)
    with pytest.raises(ValueError, match="delta"):
        HuberLoss(delta=0.0)
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError, match="label_smoothing"):
            CrossEntropyLoss(label_smoothing=eps)
    with pytest.raises(ValueError, match=r"one entry per class, shape \(3,\), got \(4,\)"):
        CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match="dimension"):
        NLLLoss(weight=np.ones((3, 1)))
    with pytest.raises(ValueError, match=r"weight of shape \(2,\) does not broadcast"):
        BCELoss(weight=np.ones(2))(np.full((2, 3), 0.5), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"pos_weight of shape \(2, 2, 3\) does not broadcast"):
        BCEWithLogitsLoss(pos_weight=np.ones((2, 2, 3)))(np.zeros((2, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="ignore_index"):
        CrossEntropyLoss(ignore_index=0)(np.zeros((2, 3)), np.full((2, 3), 1 / 3))
    with pytest.raises(TypeError, match="ignore_index"):
        NLLLoss(ignore_index=1.5)


def test_backward_before_forward_and_none_without_grad():
    for loss in (MSELoss(), BCELoss(), CrossEntropyLoss(), NLLLoss(reduction="none")):
        with pytest.raises(ValueError, match="before forward"):
            loss.backward()
    loss = MSELoss()
    with pytest.raises(ValueError):
        loss(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="before forward"):  # a failed forward leaves nothing to differentiate
        loss.backward()
    loss = CrossEntropyLoss(reduction="none")
    loss(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(ValueError, match=r"needs grad .*shape \(2,\)"):
        loss.backward()
    with pytest.raises(ValueError, match=r"expected grad of shape \(2,\)"):
        loss.backward(np.ones(3))
    loss = CrossEntropyLoss()
    loss(np.zeros((2, 3)), np.array([0, 1]))
    with pytest.raises(TypeError, match="scalar multiplier"):
        loss.backward(np.ones(2))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_cross_entropy_fused_path_equals_the_general_path(backend, dtype, reduction):
    """(N, C) logits with class indices take kernels.cross_entropy_index; the general NumPy path
    (_Loss.forward, which the other cases use) must give the same loss and gradient, ignored samples too."""
    import manualbp
    from manualbp.nn.loss import _Loss
    old = manualbp.get_backend()
    manualbp.set_backend(backend)
    try:
        rng = np.random.default_rng(1)
        x = (5 * rng.standard_normal((7, 10))).astype(dtype)
        t = rng.integers(0, 10, 7)
        t[2] = -100
        fused, general = CrossEntropyLoss(reduction=reduction), CrossEntropyLoss(reduction=reduction)
        loss = fused(x, t)
        assert fused._fused_grad is not None and isinstance(loss, dtype)
        ref = _Loss.forward(general, x, t)
        assert general._fused_grad is None
        rtol = TOL[dtype][0]
        np.testing.assert_allclose(loss, ref, rtol=rtol)
        for g in (None, 2.5):
            ours, theirs = fused.backward(g), general.backward(g)
            assert ours.dtype == dtype and ours.shape == x.shape and not ours[2].any()
            np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=TOL[dtype][1])
    finally:
        manualbp.set_backend(old)
