"""BatchNorm1d and BatchNorm2d against torch in float64: forward, dL/dx, dL/dgamma, dL/dbeta and the running
statistics over several training steps (momentum and the cumulative average, num_batches_tracked), eval mode
(forward and backward through constant statistics), affine=False, bias=False, track_running_stats=False,
state_dict keys and loading, hypothesis shapes; inspection (summary) leaves the statistics alone."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import manualbp
from manualbp import nn

torch = pytest.importorskip("torch")

RTOL = 1e-10


def pair(cls_name, C, **kw):  # (C >= 8 with (N, C) input takes the CPU's blocks-of-channels path)
    """Our layer and torch's, float64, torch's random gamma and beta loaded into ours."""
    theirs = getattr(torch.nn, cls_name)(C, **kw).double()
    with torch.no_grad():
        if theirs.weight is not None:
            theirs.weight.normal_()
        if theirs.bias is not None:
            theirs.bias.normal_()
    ours = getattr(nn, cls_name)(C, dtype=np.float64, **kw)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def step(ours, theirs, shape, gen, assert_close, what, scale=3.0, shift=1.5):
    x = torch.randn(shape, dtype=torch.float64, generator=gen) * scale + shift
    x.requires_grad_(True)
    y = theirs(x)
    g = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    y.backward(g)
    with manualbp.enable_grad():  # eval mode too: we want its backward
        ours_y = ours(x.detach().numpy())
    ours_gx = ours.backward(g.numpy())
    assert_close(ours_y, y, RTOL, f"{what}: y")
    assert_close(ours_gx, x.grad, RTOL, f"{what}: dL/dx")


def compare_state(ours, theirs, assert_close, what):
    if theirs.weight is not None:
        assert_close(ours.weight.grad, theirs.weight.grad, RTOL, f"{what}: dL/dgamma")
    if theirs.bias is not None:
        assert_close(ours.bias.grad, theirs.bias.grad, RTOL, f"{what}: dL/dbeta")
    for key, value in theirs.state_dict().items():
        ours_value = ours.state_dict()[key]
        if key.endswith("num_batches_tracked"):
            assert ours_value.dtype == np.int64 and ours_value.shape == () and int(ours_value) == int(value), key
        else:
            assert_close(ours_value, value, RTOL, f"{what}: {key}")
    assert list(ours.state_dict()) == list(theirs.state_dict())


CASES = [("BatchNorm1d", (8, 3)), ("BatchNorm1d", (6, 70)), ("BatchNorm1d", (4, 3, 5)), ("BatchNorm2d", (2, 3, 4, 5))]
OPTIONS = [{}, {"momentum": None}, {"momentum": 0.3, "eps": 1e-3}, {"affine": False}, {"bias": False},
           {"track_running_stats": False}, {"affine": False, "track_running_stats": False}]


@pytest.mark.parametrize("options", OPTIONS, ids=[str(o) for o in OPTIONS])
@pytest.mark.parametrize("cls_name,shape", CASES, ids=[f"{c}{s}" for c, s in CASES])
def test_training_steps_then_eval_match_torch(cls_name, shape, options, assert_close):
    ours, theirs = pair(cls_name, shape[1], **options)
    gen = torch.Generator().manual_seed(0)
    for k in range(3):  # the running statistics over several steps, the gradients accumulating
        step(ours, theirs, shape, gen, assert_close, f"train step {k}")
    compare_state(ours, theirs, assert_close, "after training")
    ours.eval()
    theirs.eval()
    step(ours, theirs, shape, gen, assert_close, "eval")  # running statistics as constants (BN10), (BN11)
    compare_state(ours, theirs, assert_close, "after eval")


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 5), c=st.integers(1, 4), spatial=st.sampled_from([(), (1,), (3,), (2, 3), (1, 1), (3, 1)]),
       momentum=st.sampled_from([0.1, None, 0.0, 1.0]), training=st.booleans(), seed=st.integers(0, 2**16))
def test_any_shape_matches_torch(n, c, spatial, momentum, training, seed, assert_close):
    shape = (n, c) + spatial
    if training and n * int(np.prod(spatial)) < 2:
        return  # a single value per channel: refused in training (test below)
    cls_name = "BatchNorm2d" if len(spatial) == 2 else "BatchNorm1d"
    ours, theirs = pair(cls_name, c, momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    if not training:
        with torch.no_grad():
            theirs.running_mean.normal_(generator=gen)
            theirs.running_var.uniform_(0.5, 2.0, generator=gen)
            theirs.num_batches_tracked.fill_(4)
        ours.load_state_dict(theirs.state_dict())
        ours.eval()
        theirs.eval()
    step(ours, theirs, shape, gen, assert_close, f"{shape} training={training}")
    compare_state(ours, theirs, assert_close, f"{shape}")


EMPTY = [("BatchNorm1d", (0, 3)), ("BatchNorm1d", (0, 3, 4)), ("BatchNorm1d", (2, 3, 0)),
         ("BatchNorm2d", (0, 3, 2, 2)), ("BatchNorm2d", (2, 3, 0, 2))]
EMPTY_OPTIONS = [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False},
                 {"momentum": None, "affine": False, "track_running_stats": False}]


@pytest.fixture
def backend():
    old = manualbp.get_backend()
    yield manualbp.set_backend
    manualbp.set_backend(old)


@pytest.mark.parametrize("name", ["numba", "numpy"])
@pytest.mark.parametrize("options", EMPTY_OPTIONS, ids=[str(o) for o in EMPTY_OPTIONS])
@pytest.mark.parametrize("cls_name,shape", EMPTY, ids=[f"{c}{s}" for c, s in EMPTY])
def test_an_empty_batch_is_torchs(cls_name, shape, options, name, backend, assert_close):
    """N = 0 (or a zero-sized L): an empty output and dL/dx, zero dL/dgamma and dL/dbeta (a .grad, not None);
    in training num_batches_tracked counts the batch and the running statistics stay (so, with momentum=None,
    the next batch's factor is 1 / (count + 1)); in eval mode nothing changes.  Empty, full, empty, then eval."""
    backend(name)
    ours, theirs = pair(cls_name, shape[1], **options)
    gen = torch.Generator().manual_seed(1)
    if theirs.running_mean is not None:
        with torch.no_grad():
            theirs.running_mean.normal_(generator=gen)
            theirs.running_var.uniform_(0.5, 2.0, generator=gen)
            theirs.num_batches_tracked.fill_(3)
        ours.load_state_dict(theirs.state_dict())
    full = (4,) + shape[1:2] + tuple(d or 2 for d in shape[2:])
    for k, batch in enumerate((shape, full, shape)):
        step(ours, theirs, batch, gen, assert_close, f"{name} train step {k} {batch}")
        compare_state(ours, theirs, assert_close, f"{name} after train step {k} {batch}")
    ours.eval()
    theirs.eval()
    for k in range(2):
        step(ours, theirs, shape, gen, assert_close, f"{name} eval {k}")
        compare_state(ours, theirs, assert_close, f"{name} after eval {k}")


def test_an_empty_batch_first_gives_zero_gradients_of_the_parameters_dtype():
    ours = nn.BatchNorm2d(3)
    y = ours(np.zeros((0, 3, 4, 4), np.float32))
    assert y.shape == (0, 3, 4, 4) and y.dtype == np.float32
    gx = ours.backward(np.zeros((0, 3, 4, 4), np.float32))
    assert gx.shape == (0, 3, 4, 4) and gx.dtype == np.float32
    for p in (ours.weight, ours.bias):
        assert p.grad.dtype == np.float32 and p.grad.shape == (3,) and not p.grad.any()
    assert ours.weight.grad is not ours.bias.grad  # each .grad its own array: they accumulate separately
    assert int(ours.num_batches_tracked) == 1
    np.testing.assert_array_equal(ours.running_mean, 0)
    np.testing.assert_array_equal(ours.running_var, 1)
    ours(np.zeros((0, 3, 4, 4), np.float32))
    with pytest.raises(ValueError, match=r"expected grad_output of shape \(0, 3, 4, 4\)"):
        ours.backward(np.zeros((0, 3, 4, 3), np.float32))


def test_a_constant_channel_normalises_to_zero_and_keeps_finite_gradients(assert_close):
    ours, theirs = pair("BatchNorm1d", 2)
    x = torch.tensor([[1.0, 2.0], [1.0, 3.0], [1.0, -1.0]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[1.0, 0.5], [2.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    y = theirs(x)
    y.backward(g)
    assert_close(ours(x.detach().numpy()), y, RTOL)
    assert_close(ours.backward(g.numpy()), x.grad, 1e-7)
    assert_close(ours.running_var, theirs.running_var, RTOL)


def test_float32_matches_torch(assert_close):
    theirs = torch.nn.BatchNorm2d(4)
    ours = nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    y = theirs(x)
    y.backward(torch.ones_like(y) * 0.5 + x.detach())
    assert ours(x.detach().numpy()).dtype == np.float32
    assert_close(ours(x.detach().numpy()), y, 1e-5)
    ours2 = nn.BatchNorm2d(4)
    ours2(x.detach().numpy())
    assert_close(ours2.backward((torch.ones_like(y) * 0.5 + x.detach()).numpy()), x.grad, 1e-4)
    assert ours2.running_mean.dtype == np.float32


ONE_VALUE = [("BatchNorm1d", (1, 3)), ("BatchNorm1d", (1, 3, 1)), ("BatchNorm2d", (1, 3, 1, 1))]


@pytest.mark.parametrize("options", [{}, {"track_running_stats": False}], ids=["running", "batch-only"])
@pytest.mark.parametrize("cls_name,shape", ONE_VALUE, ids=[f"{c}{s}" for c, s in ONE_VALUE])
def test_one_value_per_channel_is_refused_in_training_as_torch(cls_name, shape, options):
    """torch refuses M = 1 whenever it normalises with the batch's statistics (training, or eval without running
    statistics), in training after its module has counted the batch in num_batches_tracked; eval mode with
    running statistics takes it."""
    ours, theirs = pair(cls_name, 3, **options)
    x = torch.ones(shape, dtype=torch.float64)
    for training in (True, False):
        ours.train(training)
        theirs.train(training)
        refused = training or not ours.track_running_stats
        for layer, data in ((theirs, x), (ours, x.numpy())):
            if refused:
                with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
                    layer(data)
            else:
                assert tuple(layer(data).shape) == shape
        if ours.track_running_stats:
            assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 1
            assert not ours.running_mean.any() and (ours.running_var == 1).all()


def test_errors_are_torchs():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), np.float32))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3, track_running_stats=False).eval()(np.zeros((1, 3), np.float32))
    nn.BatchNorm1d(3).eval()(np.zeros((1, 3), np.float32))  # eval with running statistics: fine
    with pytest.raises(ValueError, match=r"expected 2D or 3D input \(got 4D input\)"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"expected 4D input \(got 3D input\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 2), np.float32))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\): expected input with 3 channels"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 2, 2), np.float32))
    with pytest.raises(TypeError, match="float64"):
        nn.BatchNorm2d(3)(np.zeros((2, 3, 2, 2), np.float64))


def test_repr_state_dict_and_dtypes_are_torchs():
    for kw in ({}, {"momentum": None, "eps": 1e-3}, {"affine": False}, {"bias": False},
               {"track_running_stats": False}):
        assert repr(nn.BatchNorm2d(5, **kw)) == repr(torch.nn.BatchNorm2d(5, **kw))
        assert list(nn.BatchNorm2d(5, **kw).state_dict()) == list(torch.nn.BatchNorm2d(5, **kw).state_dict())
    m = nn.BatchNorm1d(3).double()
    assert m.running_mean.dtype == np.float64 and m.num_batches_tracked.dtype == np.int64
    assert [n for n, _ in m.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in m.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]


def test_reset_and_a_model_with_batchnorm_round_trips_through_a_checkpoint(tmp_path):
    from manualbp.checkpoint import load, save
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    x = np.random.default_rng(0).standard_normal((4, 1, 5, 5)).astype(np.float32)
    model(x)
    save(tmp_path / "m.npz", model)
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU())
    load(tmp_path / "m.npz", fresh)
    np.testing.assert_array_equal(fresh[1].running_var, model[1].running_var)
    assert int(fresh[1].num_batches_tracked) == 1
    model[1].reset_running_stats()
    assert int(model[1].num_batches_tracked) == 0 and not model[1].running_mean.any()


def test_summary_leaves_the_running_statistics_alone():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    info = manualbp.summary(model, (3,), verbose=False)
    assert info["total_params"] == 3 * 4 + 4 + 4 + 4  # the buffers are not parameters
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)


def test_nan_reaches_the_output_and_the_running_mean_as_in_torch():
    x = np.random.default_rng(0).standard_normal((4, 3, 2, 2))
    x[0, 1, 0, 0] = np.nan
    ours, theirs = pair("BatchNorm2d", 3)
    y_ours, y_theirs = ours(x), theirs(torch.tensor(x)).detach().numpy()
    np.testing.assert_array_equal(np.isnan(y_ours), np.isnan(y_theirs))
    np.testing.assert_allclose(y_ours[~np.isnan(y_ours)], y_theirs[~np.isnan(y_theirs)], rtol=1e-12)
    np.testing.assert_array_equal(np.isnan(ours.running_mean), np.isnan(theirs.running_mean.numpy()))


def test_sgd_steps_on_a_network_with_batchnorm_match_torch(assert_close):
    """Conv -> BatchNorm2d -> ReLU -> Linear -> BatchNorm1d: three SGD steps with momentum, every weight and
    running statistic against torch's (the optimizer never touches the buffers)."""
    from manualbp import optim
    theirs = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.BatchNorm2d(3), torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(12, 4), torch.nn.BatchNorm1d(4, momentum=None)).double()
    ours = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 4),
                         nn.BatchNorm1d(4, momentum=None)).double()
    ours.load_state_dict(theirs.state_dict())
    t_opt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    o_opt = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(5, 2, 4, 4, dtype=torch.float64, generator=gen)
        target = torch.randint(0, 4, (5,), generator=gen)
        t_opt.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x), target).backward()
        t_opt.step()
        o_opt.zero_grad()
        loss_fn = nn.CrossEntropyLoss()
        loss_fn(ours(x.numpy()), target.numpy())
        ours.backward(loss_fn.backward())
        o_opt.step()
    for key, value in theirs.state_dict().items():
        assert_close(ours.state_dict()[key], value, 1e-9, key)
    theirs.eval()
    ours.eval()
    x = torch.randn(2, 2, 4, 4, dtype=torch.float64, generator=gen)
    assert_close(ours(x.numpy()), theirs(x), 1e-9, "eval output")


def test_network_fit_trains_a_model_with_batchnorm_and_dropout():
    manualbp.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 6, 6)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0).astype(np.int64)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout2d(0.1), nn.Flatten(),
                          nn.Linear(64, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))
    net = manualbp.Network(model)
    from manualbp import optim
    net.fit((x, y), epochs=5, batch_size=16, loss=nn.CrossEntropyLoss(), optimizer=optim.SGD(model.parameters(),
                                                                                               lr=0.1),
            verbose=False)
    assert int(model[1].num_batches_tracked) == 20 and int(model[6].num_batches_tracked) == 20
    first = net.predict(x)
    np.testing.assert_array_equal(net.predict(x), first)  # eval mode: no dropout, fixed statistics
    assert model.training


def test_without_parameters_or_buffers_any_float_dtype_is_accepted_as_in_torch(assert_close):
    ours = nn.BatchNorm1d(3, affine=False, track_running_stats=False)
    x = torch.randn(4, 3, dtype=torch.float64)
    assert_close(ours(x.numpy()), torch.nn.BatchNorm1d(3, affine=False, track_running_stats=False)(x), RTOL)
    assert ours(x.numpy().astype(np.float32)).dtype == np.float32


def test_a_state_dict_without_num_batches_tracked_loads_as_in_torch():
    """torch fills a missing num_batches_tracked when the mapping carries no version record (an old file, a
    safetensors file): so do we; a torch state_dict() (version 2) without it is missing a key, for both."""
    theirs = torch.nn.BatchNorm1d(3)
    plain = {k: v for k, v in theirs.state_dict().items() if k != "num_batches_tracked"}
    theirs.load_state_dict(plain)  # no error in torch
    ours = nn.BatchNorm1d(3)
    assert ours.load_state_dict(plain).missing_keys == []
    versioned = theirs.state_dict()
    del versioned["num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        theirs.load_state_dict(versioned)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        ours.load_state_dict(versioned)
