"""torch code means the same thing here: every class takes torch's parameter names, positional order and
defaults, in its constructor and in ``forward``; positional calls mean what they mean in torch; the old
``size_average``/``reduce`` pair maps onto ``reduction`` with torch's warning; options we do not implement
are refused by name."""
import inspect
import warnings

import numpy as np
import pytest

from manualbp import nn, optim

torch = pytest.importorskip("torch")
tnn = torch.nn

CLASSES = ["Linear", "Conv2d", "MaxPool2d", "Flatten", "Identity", "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "Softmax",
           "L1Loss", "MSELoss", "SmoothL1Loss", "HuberLoss", "BCELoss", "BCEWithLogitsLoss", "NLLLoss",
           "CrossEntropyLoss", "Sequential"]


def _params(fn):
    """(name, kind, default) of each parameter but self, torch's annotations left out."""
    return [(p.name, p.kind, p.default) for p in list(inspect.signature(fn).parameters.values())[1:]]


@pytest.mark.parametrize("name", CLASSES)
def test_constructor_and_forward_signatures_are_torchs(name):
    ours, theirs = getattr(nn, name), getattr(tnn, name)
    assert _params(ours.__init__) == _params(theirs.__init__)
    assert [p[0] for p in _params(ours.forward)] == [p[0] for p in _params(theirs.forward)]


def test_sgd_signature_is_torchs():
    assert _params(optim.SGD.__init__) == _params(torch.optim.SGD.__init__)
    with pytest.raises(ValueError, match="maximize"):
        optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, maximize=True)
    optim.SGD(nn.Linear(2, 2).parameters(), 0.1, 0.9, 0, 1e-4, True, foreach=False)  # torch's positional order


@pytest.mark.parametrize("args", [(None, None, 5), (np.array([1.0, 2.0, 0.5, 1.0, 1.0, 3.0]), None, 0, None, "sum"),
                                  (None, None, -100, None, "none", 0.2)])
def test_cross_entropy_positional_arguments_mean_what_they_mean_in_torch(args):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6))
    t = np.array([5, 0, 2, 5])
    targs = tuple(torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args)
    ours = nn.CrossEntropyLoss(*args)(x, t)
    theirs = tnn.CrossEntropyLoss(*targs)(torch.tensor(x), torch.tensor(t))
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-12)


@pytest.mark.parametrize("size_average,reduce,expected", [(None, None, "mean"), (False, None, "sum"),
                                                          (True, False, "none"), (None, True, "mean")])
@pytest.mark.parametrize("name", ["L1Loss", "MSELoss", "SmoothL1Loss", "BCELoss", "BCEWithLogitsLoss", "NLLLoss",
                                  "CrossEntropyLoss"])
def test_size_average_and_reduce_map_onto_reduction_with_torchs_warning(name, size_average, reduce, expected):
    with warnings.catch_warnings(record=True) as ours_w:
        warnings.simplefilter("always")
        ours = getattr(nn, name)(size_average=size_average, reduce=reduce)
    with warnings.catch_warnings(record=True) as theirs_w:
        warnings.simplefilter("always")
        theirs = getattr(tnn, name)(size_average=size_average, reduce=reduce)
    assert ours.reduction == theirs.reduction == expected
    assert [str(w.message) for w in ours_w] == [str(w.message) for w in theirs_w]
    assert all(w.category is UserWarning for w in ours_w)


def test_forward_takes_its_argument_by_torchs_name():
    x = np.ones((2, 3), np.float32)
    layer = nn.Linear(3, 2)
    np.testing.assert_array_equal(layer(input=x), layer(x))
    loss = nn.MSELoss()
    assert loss(input=x, target=x) == 0


def test_linear_takes_dtype_and_device_as_torch():
    assert nn.Linear(2, 3, dtype=np.float64).weight.dtype == np.float64
    assert nn.Linear(2, 3, dtype=torch.float64).weight.dtype == np.float64
    assert nn.Linear(2, 3, True, "cpu", "float32").weight.dtype == np.float32
    with pytest.raises(TypeError, match="dtype float32 or float64"):
        nn.Linear(2, 3, dtype=np.int32)


SMOOTH_ACTIVATIONS = ["GELU", "SiLU", "ELU", "Softplus"]


@pytest.mark.parametrize("name", SMOOTH_ACTIVATIONS)
def test_smooth_activation_signatures_are_torchs(name):
    test_constructor_and_forward_signatures_are_torchs(name)


AVERAGE_AND_ADAPTIVE_POOLING = ["AvgPool2d", "AdaptiveAvgPool2d", "AdaptiveMaxPool2d"]


@pytest.mark.parametrize("name", AVERAGE_AND_ADAPTIVE_POOLING)
def test_average_and_adaptive_pooling_signatures_are_torchs(name):
    test_constructor_and_forward_signatures_are_torchs(name)


def test_avgpool2d_positional_arguments_mean_what_they_mean_in_torch():
    x = np.random.default_rng(0).standard_normal((1, 2, 7, 6))
    args = ((3, 2), (2, 1), (1, 1), True, False, 5)
    np.testing.assert_allclose(nn.AvgPool2d(*args)(x), tnn.AvgPool2d(*args)(torch.tensor(x)).numpy(), rtol=1e-14)

@pytest.mark.parametrize("name", ["Adam", "AdamW", "RMSprop", "Adagrad"])
def test_adaptive_optimizer_signatures_are_torchs(name):
    assert _params(getattr(optim, name).__init__) == _params(getattr(torch.optim, name).__init__)
    assert [p[0] for p in _params(getattr(optim, name).step)] == ["closure"]


@pytest.mark.parametrize("name", ["StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR", "LinearLR",
                                  "OneCycleLR", "ReduceLROnPlateau"])
def test_lr_scheduler_signatures_are_torchs(name):
    ours, theirs = getattr(optim.lr_scheduler, name), getattr(torch.optim.lr_scheduler, name)
    assert _params(ours.__init__) == _params(theirs.__init__)
    assert [p[0] for p in _params(ours.step)] == [p[0] for p in _params(theirs.step)]

NORM_CLASSES = ["BatchNorm1d", "BatchNorm2d", "LayerNorm", "Dropout", "Dropout2d"]


@pytest.mark.parametrize("name", NORM_CLASSES)
def test_normalisation_and_dropout_signatures_are_torchs(name):
    ours, theirs = getattr(nn, name), getattr(tnn, name)
    assert _params(ours.__init__) == _params(theirs.__init__)
    assert [p[0] for p in _params(ours.forward)] == [p[0] for p in _params(theirs.forward)]
    args = {"BatchNorm1d": (4, 1e-3, None, True, False), "BatchNorm2d": (4, 1e-3, 0.2, False),
            "LayerNorm": ((2, 4), 1e-3, True, False), "Dropout": (0.25, False), "Dropout2d": (0.25,)}[name]
    assert repr(ours(*args)) == repr(theirs(*args))  # positional arguments mean what they mean in torch


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.int32, np.int64, "float16"])
def test_to_and_dtype_arguments_refuse_every_dtype_but_float32_and_float64(dtype):
    model = nn.Sequential(nn.Linear(2, 2))
    if not isinstance(dtype, str):  # a string goes to .to() as a device name, as in torch
        with pytest.raises(TypeError, match="expected dtype float32 or float64"):
            model.to(dtype)
    with pytest.raises(TypeError, match="expected dtype float32 or float64"):
        nn.Linear(2, 2, dtype=dtype)
    assert model[0].weight.dtype == np.float32
