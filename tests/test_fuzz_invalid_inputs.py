"""Random invalid inputs thrown at every public constructor and call: each must raise TypeError or
ValueError -- never another exception, a crash or a hang (a SIGALRM watchdog turns a hang into a
failure).  A corrupted checkpoint must be refused with ValueError, or, when the damaged byte is one
nothing reads (a zip timestamp), load exactly the weights that were saved.
"""
import contextlib
import math
import os
import signal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

import manualbp
from manualbp import Network, checkpoint, data, nn, optim

SETTINGS = {"deadline": None, "derandomize": True, "database": None, "suppress_health_check": list(HealthCheck)}
NAN, INF = float("nan"), float("inf")


class _Hang(Exception):
    pass


@contextlib.contextmanager
def watchdog(seconds=20):
    """Turn a call that runs longer than ``seconds`` into a test failure instead of a stuck CI job."""
    def alarm(signum, frame):
        raise _Hang(f"no answer after {seconds}s")
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def must_refuse(call):
    with watchdog(), pytest.raises((TypeError, ValueError)):
        call()


# --- pools of bad values, by what the argument should have been -------------------------------------------

NOT_INT = [2.5, "3", None, [3], (), b"3", 1 + 2j, np.float32(2.0), object(), True]
POSITIVE_INT = NOT_INT + [0, -1, -(10 ** 9)]
NON_NEGATIVE_INT = NOT_INT + [-1, -(10 ** 6)]
PAIR = POSITIVE_INT + [(1, 2, 3), (0, 1), (2, -1), (2.5, 2), ("3", 3), [1, 1, 1]]
PADDING = NON_NEGATIVE_INT + [(1, 2, 3), (-1, 0), (1.5, 1), "full", "SAME"]  # 'same'/'valid' are Conv2d's
NOT_REAL = ["0.1", None, [0.1], object(), 1 + 2j, np.array([0.1, 0.2]), True]
REAL = NOT_REAL + [NAN, INF, -INF]
REDUCTION = ["avg", None, 1, "MEAN", "", "mean "]
WEIGHT = ["abc", np.array(["a", "b", "c"]), np.array([None, 1.0, 2.0], dtype=object), 3 + 0j, object()]

CONSTRUCTORS = [
    # (factory, valid keyword arguments, {argument: bad values})
    (nn.Linear, {"in_features": 4, "out_features": 3}, {"in_features": POSITIVE_INT, "out_features": POSITIVE_INT}),
    (nn.Conv2d, {"in_channels": 3, "out_channels": 2, "kernel_size": 3, "stride": 1, "padding": 0},
     {"in_channels": POSITIVE_INT, "out_channels": POSITIVE_INT, "kernel_size": PAIR, "stride": PAIR, "padding": PADDING}),
    (nn.MaxPool2d, {"kernel_size": 2, "stride": 2, "padding": 0},
     {"kernel_size": PAIR, "stride": [s for s in PAIR if s is not None], "padding": PADDING + [2, (0, 2), "same", "valid"]}),
    (nn.LeakyReLU, {"negative_slope": 0.01}, {"negative_slope": REAL}),
    (nn.Softmax, {"dim": 1}, {"dim": [1.5, "1", True, [1], object()]}),
    (nn.Flatten, {"start_dim": 1, "end_dim": -1}, {"start_dim": [1.5, "1", None, True], "end_dim": [1.5, "-1", None]}),
    (nn.CrossEntropyLoss, {}, {"reduction": REDUCTION, "label_smoothing": REAL + [-0.1, 1.5],
                                       "ignore_index": [1.5, "x", None, True], "weight": WEIGHT + [np.ones((2, 2))]}),
    (nn.NLLLoss, {}, {"reduction": REDUCTION, "ignore_index": [1.5, "x", None, True], "weight": WEIGHT}),
    (nn.MSELoss, {}, {"reduction": REDUCTION}),
    (nn.L1Loss, {}, {"reduction": REDUCTION}),
    (nn.SmoothL1Loss, {}, {"reduction": REDUCTION, "beta": REAL + [-1.0]}),
    (nn.HuberLoss, {}, {"reduction": REDUCTION, "delta": REAL + [0.0, -1.0]}),
    (nn.BCELoss, {}, {"reduction": REDUCTION, "weight": WEIGHT}),
    (nn.BCEWithLogitsLoss, {}, {"reduction": REDUCTION, "weight": WEIGHT, "pos_weight": WEIGHT}),
    (lambda **kw: optim.SGD(nn.Linear(2, 2).parameters(), **kw), {"lr": 0.1},
     {"lr": REAL + [-0.1, -1e-300], "momentum": REAL + [-0.1, 1.0, 1.5], "dampening": REAL + [-0.1, 1.5],
          "weight_decay": REAL + [-1.0], "nesterov": ["yes", 1, None, 0.5]}),
    (lambda params: optim.SGD(params, lr=0.1), {"params": []},
     {"params": [[], 3, None, np.zeros(3), [np.zeros(3)], nn.Parameter(np.ones(2)), "weights",
                  [nn.Parameter(np.ones(2))] * 2, [{"lr": 0.1}], [{"params": [nn.Parameter(np.ones(1))], "lr": -1}],
                  [{"params": [nn.Parameter(np.ones(1))], "foo": 1}]]}),
    (lambda layers: Network(layers), {"layers": []}, {"layers": [None, [], [1], "abc", 3, [nn.Linear(2, 2), "x"]]}),
    (lambda layer: nn.Sequential(layer), {"layer": None}, {"layer": [1, "a", None, np.zeros(3), nn.Linear]}),
    (lambda **kw: data.batches(np.zeros((6, 2)), np.zeros(6), **kw), {"batch_size": 2},
     {"batch_size": [0, -1, 2.5, "4", None, True, 7.0], "seed": [-1, 2.5, "7", (1, 2)], "rng": [3, "rng"]}),
    (lambda seed: manualbp.manual_seed(seed), {"seed": 0}, {"seed": [-1, 2.5, "1", None, True, [1]]}),
    (lambda name: manualbp.set_backend(name), {"name": "numba"}, {"name": ["cuda", None, 3, "", "NUMBA "]}),
]


@settings(max_examples=400, **SETTINGS)
@given(st.data())
def test_every_constructor_refuses_bad_arguments(draw):
    factory, valid, bad = draw.draw(st.sampled_from(CONSTRUCTORS))
    arg = draw.draw(st.sampled_from(sorted(bad)))
    value = draw.draw(st.sampled_from(bad[arg]))
    must_refuse(lambda: factory(**{**valid, arg: value}))


# --- bad arrays for layer calls --------------------------------------------------------------------------

BAD_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.complex64, object, "U3"]


@st.composite
def junk(draw, shape, empty_dims=None):
    """Something that is not a float32 array of ``shape``: another type, dtype or size (a zero in one of
    ``empty_dims``, all by default: as torch, an empty batch is valid input to most layers)."""
    empty_dims = list(range(len(shape))) if empty_dims is None else list(empty_dims)
    kind = draw(st.sampled_from(["type", "dtype", "empty"] if empty_dims else ["type", "dtype"]))
    if kind == "type":
        return draw(st.sampled_from([None, 1.5, "x", {"x": 1}, np.zeros(shape).tolist(), b"\x00"]))
    if kind == "dtype":
        return np.zeros(shape, dtype=draw(st.sampled_from(BAD_DTYPES)))
    dims = list(shape)
    dims[draw(st.sampled_from(empty_dims))] = 0
    return np.zeros(dims, np.float32)


@st.composite
def wrong_shape(draw, shape, exclude=()):
    """A float32 array whose shape differs from ``shape`` (another ndim, or another size somewhere)."""
    for _ in range(20):
        if draw(st.booleans()):
            ndim = draw(st.integers(0, 6))
            new = tuple(draw(st.integers(1, 6)) for _ in range(ndim))
        else:
            new = list(shape)
            i = draw(st.integers(0, len(new) - 1))
            new[i] = draw(st.integers(1, 9))
            new = tuple(new)
        if new != tuple(shape) and not any(ok(new) for ok in exclude):
            return np.ones(new, np.float32)
    reject()   # this draw found only valid shapes: hypothesis draws another example


def _leading_ok(in_features):
    return lambda s: len(s) >= 1 and s[-1] == in_features


def _image_ok(c, k):
    return lambda s: len(s) in (3, 4) and s[-3] == c and s[-2] >= k and s[-1] >= k  # (C, H, W) too, as torch


def _pool_ok(k):
    return lambda s: len(s) in (3, 4) and s[-1] >= k and s[-2] >= k


LAYERS = [
    # (factory, a valid input shape, predicates for shapes that are valid too, the dims where a zero is refused)
    (lambda: nn.Linear(4, 3), (2, 4), [_leading_ok(4)], [1]),
    (lambda: nn.Conv2d(2, 3, 3, padding=0), (2, 2, 5, 5), [_image_ok(2, 3)], [1, 2, 3]),
    (lambda: nn.Conv2d(2, 3, 5, padding=1), (1, 2, 6, 6), [_image_ok(2, 3)], [1, 2, 3]),
    (lambda: nn.MaxPool2d(3), (2, 2, 6, 6), [_pool_ok(3)], [2, 3]),
    (lambda: nn.ReLU(), (2, 3), None, []),          # None: element-wise, every shape is valid
    (lambda: nn.LeakyReLU(0.1), (2, 3), None, []),
    (lambda: nn.Sigmoid(), (2, 3), None, []),
    (lambda: nn.Tanh(), (2, 3), None, []),
    (lambda: nn.Softmax(dim=1), (2, 3), [lambda s: len(s) >= 2], []),
    (lambda: nn.Flatten(), (2, 3, 4), [lambda s: len(s) >= 2], []),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)),
     (2, 1, 6, 6), [lambda s: len(s) == 4 and s[-3] == 1 and s[-2] >= 4 and s[-1] >= 4
                    and ((s[-2] - 2) // 2) * ((s[-1] - 2) // 2) * 2 == 8], [1, 2, 3]),
]


@settings(max_examples=400, **SETTINGS)
@given(st.data())
def test_every_layer_call_refuses_bad_inputs(draw):
    factory, shape, valid_shapes, empty_dims = draw.draw(st.sampled_from(LAYERS))
    layer = factory()
    if valid_shapes is None or draw.draw(st.booleans()):
        bad = draw.draw(junk(shape, empty_dims))
    else:
        bad = draw.draw(wrong_shape(shape, exclude=valid_shapes))
    must_refuse(lambda: layer(bad))


@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_every_backward_refuses_bad_gradients(draw):
    factory, shape, _, _ = draw.draw(st.sampled_from(LAYERS))
    layer = factory()
    if draw.draw(st.integers(0, 9)) == 0:
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.MaxPool2d, nn.ReLU, nn.Sequential)):
            must_refuse(lambda: layer.backward(np.ones(shape, np.float32)))   # backward before forward
        return
    out = layer(np.ones(shape, np.float32))
    if draw.draw(st.booleans()):
        bad = draw.draw(junk(out.shape))
    else:
        bad = draw.draw(wrong_shape(out.shape, exclude=[lambda s: s == out.shape]))
    must_refuse(lambda: layer.backward(bad))


# --- losses --------------------------------------------------------------------------------------------------

LOSSES = [
    (nn.CrossEntropyLoss, "index"), (nn.NLLLoss, "index"), (nn.MSELoss, "same"), (nn.L1Loss, "same"),
    (nn.SmoothL1Loss, "same"), (nn.HuberLoss, "same"), (nn.BCELoss, "unit"), (nn.BCEWithLogitsLoss, "same"),
]


@settings(max_examples=300, **SETTINGS)
@given(st.data())
def test_every_loss_refuses_bad_inputs_and_targets(draw):
    factory, kind = draw.draw(st.sampled_from(LOSSES))
    loss = factory()
    x = np.full((3, 4), 0.5, np.float32)
    good = {"index": np.array([0, 1, 3]), "same": np.zeros((3, 4), np.float32),
            "unit": np.ones((3, 4), np.float32)}[kind]
    what = draw.draw(st.sampled_from(["input", "target", "target value", "backward"]))
    if what == "input":
        must_refuse(lambda: loss(draw.draw(junk(x.shape)), good))
    elif what == "target":
        bad = draw.draw(st.one_of(junk(good.shape), wrong_shape(good.shape)))
        if isinstance(bad, np.ndarray) and kind != "index" and bad.shape == good.shape and bad.dtype.kind in "iubf":
            return   # real targets of the right shape are valid for these losses (cast to the input's dtype)
        if kind == "index" and isinstance(bad, np.ndarray) and bad.dtype.kind in "iu" and bad.shape == (3,):
            return
        if (factory is nn.CrossEntropyLoss and isinstance(bad, np.ndarray) and bad.shape == x.shape
                and bad.dtype.kind == "f"):
            return   # class probabilities
        must_refuse(lambda: loss(x, bad))
    elif what == "target value":
        bad = good.copy()
        if kind == "index":
            bad[draw.draw(st.integers(0, 2))] = draw.draw(st.sampled_from([-1, 4, 10 ** 9, -(10 ** 9)]))
        else:
            bad.flat[draw.draw(st.integers(0, bad.size - 1))] = draw.draw(
                st.sampled_from([NAN, INF, -INF] + ([-0.5, 1.5] if kind == "unit" else [])))
        must_refuse(lambda: loss(x, bad))
    else:
        loss(x, good)
        g = draw.draw(st.sampled_from([np.ones(3), np.ones((3, 4)), "1", [1.0], object()]))
        must_refuse(lambda: loss.backward(g))


# --- state, fit, and the data helpers ----------------------------------------------------------------------

def _model():
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


@st.composite
def bad_state_dict(draw):
    sd = dict(_model().state_dict())
    how = draw(st.sampled_from(["drop", "add", "shape", "dtype", "type"]))
    key = draw(st.sampled_from(sorted(sd)))
    if how == "drop":
        del sd[key]
    elif how == "add":
        sd[draw(st.sampled_from(["3.weight", "0.weight_", "bias", ""]))] = np.zeros(2)
    elif how == "shape":
        sd[key] = np.zeros(sd[key].shape + (1,))
    elif how == "dtype":
        sd[key] = np.full(sd[key].shape, "x")
    else:
        return draw(st.sampled_from([[1, 2], None, "state", 3]))
    return sd


@settings(max_examples=150, **SETTINGS)
@given(sd=bad_state_dict())
def test_load_state_dict_refuses_bad_dicts(sd):
    model = _model()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    must_refuse(lambda: model.load_state_dict(sd))
    assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())   # nothing half-loaded


FIT_ARGS = {
    "epochs": POSITIVE_INT, "batch_size": POSITIVE_INT, "log_interval": NON_NEGATIVE_INT,
    "loss": ["mse", nn.MSELoss, 3, nn.Linear(2, 2), nn.CrossEntropyLoss(reduction="none")],
    "optimizer": ["sgd", optim.SGD, 0.1, lambda: None], "lr_schedule": [0.1, "cosine"],
    "train": [None, (np.zeros((5, 4), np.float32),), np.zeros((5, 4), np.float32),
           (np.zeros((5, 4), np.float32), np.zeros(4, np.int64)), (np.zeros((5, 4), np.int64), np.zeros(5, np.int64)),
           (np.full((5, 4), NAN, np.float32), np.zeros(5, np.int64)), (np.zeros((0, 4), np.float32), np.zeros(0)),
           (np.zeros((5, 4), np.float32), np.full(5, 7)), (np.zeros((5, 5), np.float32), np.zeros(5, np.int64)),
           (np.zeros((5, 4), np.float32), np.array(["a"] * 5)), ([[0.0] * 4] * 5, np.zeros(5, np.int64))],
    "val": [(np.zeros((5, 4), np.float32),), (np.zeros((5, 4), np.float32), np.zeros(3, np.int64)), "val"],
}


@settings(max_examples=200, **SETTINGS)
@given(st.data())
def test_fit_refuses_bad_arguments(draw):
    arg = draw.draw(st.sampled_from(sorted(FIT_ARGS)))
    value = draw.draw(st.sampled_from(FIT_ARGS[arg]))
    net = Network(_model())
    kwargs = {"epochs": 1, "batch_size": 2, "verbose": False, arg: value}
    train = kwargs.pop("train", (np.zeros((5, 4), np.float32), np.zeros(5, np.int64)))
    if arg == "batch_size" and value is True:
        return
    must_refuse(lambda: net.fit(train, **kwargs))


@settings(max_examples=100, **SETTINGS)
@given(st.data())
def test_predict_evaluate_and_image_helpers_refuse_bad_inputs(draw):
    net = Network(_model())
    shape = (3, 4)
    bad = draw.draw(st.one_of(junk(shape), wrong_shape(shape, exclude=[_leading_ok(4)])))
    which = draw.draw(st.sampled_from(["predict", "evaluate", "resize", "pad_to", "to_channels", "subset"]))
    calls = {
        "predict": lambda: net.predict(bad),
        "evaluate": lambda: net.evaluate((bad, np.zeros(3, np.int64))),
        "resize": lambda: data.resize(bad, (4, 4)),
        "pad_to": lambda: data.pad_to(bad, (8, 8)),
        "to_channels": lambda: data.to_channels(bad, 3),
        "subset": lambda: data.subset(np.zeros(3), np.zeros(3), draw.draw(st.sampled_from(POSITIVE_INT))),
    }
    if which in ("predict", "evaluate") and isinstance(bad, np.ndarray) and bad.ndim == 2 and bad.shape[1] == 4 \
            and bad.dtype.kind == "f" and bad.shape[0] > 0:
        return
    must_refuse(calls[which])


# --- corrupted checkpoint files -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    manualbp.manual_seed(3)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    path = tmp_path_factory.mktemp("ck") / "good.npz"
    checkpoint.save(path, model, opt, epoch=4)
    return path.read_bytes(), {k: v.copy() for k, v in model.state_dict().items()}


@settings(max_examples=150, **SETTINGS)
@given(st.data())
def test_corrupted_checkpoints_are_refused(saved_checkpoint, tmp_path_factory, draw):
    raw, weights = saved_checkpoint
    damaged = bytearray(raw)
    how = draw.draw(st.sampled_from(["truncate", "flip", "zero-run"]))
    if how == "truncate":
        damaged = damaged[:draw.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(draw.draw(st.integers(1, 4))):
            i = draw.draw(st.integers(0, len(raw) - 1))
            damaged[i] ^= 1 << draw.draw(st.integers(0, 7))
    else:
        i = draw.draw(st.integers(0, len(raw) - 1))
        n = draw.draw(st.integers(1, 64))
        damaged[i:i + n] = bytes(len(damaged[i:i + n]))
    path = tmp_path_factory.mktemp("bad") / "damaged.npz"
    path.write_bytes(bytes(damaged))
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with watchdog():
        try:
            checkpoint.load(path, model, opt)
        except ValueError:
            assert all(np.array_equal(v, before[k]) for k, v in model.state_dict().items())
            return
    # it loaded: then the damage was in bytes nothing reads, and the weights are exactly the saved ones
    assert how != "truncate" or len(damaged) == len(raw)
    assert all(np.array_equal(v, weights[k]) for k, v in model.state_dict().items())
    assert not math.isnan(sum(float(v.sum()) for v in model.state_dict().values()))


def test_watchdog_turns_a_hang_into_a_failure():
    with pytest.raises(_Hang), watchdog(1):
        while True:
            os.getpid()
