"""fit(record_gradients=...): per parameter, ||grad||, ||w|| and ||w_after - w_before|| / ||w_before||, measured
again here from .grad and the weights of a loop written by hand, and kept through checkpoints and resume."""
import copy
import csv

import numpy as np
import pytest

from manualbp import nn, optim
from manualbp.network import History, Network
from manualbp.training import GRADIENT_FIELDS


def data(n=40, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4))
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def small_model(seed=1):
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    model.load_state_dict({k: rng.normal(size=v.shape) for k, v in model.state_dict().items()})
    return model


def make_opt(model):
    # weight decay: the recorded grad_norm is that of .grad, not of the g + lambda w the update uses
    return optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)


def by_hand(model, x, y, batch_size, epochs):
    """Every step's norms, computed directly, with the loop fit runs (unshuffled batches)."""
    net, opt, rows, step = Network(model), make_opt(model), [], 0
    for epoch in range(1, epochs + 1):
        for start in range(0, len(x), batch_size):
            before = {k: p.data.copy() for k, p in model.named_parameters()}
            net.train_step(x[start:start + batch_size], y[start:start + batch_size], nn.CrossEntropyLoss(), opt)
            step += 1
            for name, p in model.named_parameters():
                w0 = before[name]
                rows.append({"epoch": epoch, "step": step, "param": name,
                             "grad_norm": np.sqrt(np.sum(p.grad ** 2)), "weight_norm": np.sqrt(np.sum(w0 ** 2)),
                             "update_ratio": np.sqrt(np.sum((p.data - w0) ** 2)) / np.sqrt(np.sum(w0 ** 2))})
    return rows


def assert_rows_equal(got, expected):
    assert [(r["epoch"], r["step"], r["param"]) for r in got] == [(r["epoch"], r["step"], r["param"]) for r in expected]
    for g, e in zip(got, expected):
        for field in ("grad_norm", "weight_norm", "update_ratio"):
            assert g[field] == pytest.approx(e[field], rel=1e-12, abs=0), (g, field)


def test_every_step_matches_norms_computed_from_grad_and_weights():
    x, y = data()
    model = small_model()
    expected = by_hand(copy.deepcopy(model), x, y, 16, 2)
    history = Network(model).fit((x, y), epochs=2, batch_size=16, shuffle=False, optimizer=make_opt(model),
                                 verbose=False, record_gradients="step")
    assert len(history.gradients) == 2 * 3 * 4   # 2 epochs of 3 steps, 4 parameters
    assert_rows_equal(history.gradients, expected)
    assert history.gradient_params() == ["0.weight", "0.bias", "2.weight", "2.bias"]
    steps, norms = history.gradient_series("2.weight", "grad_norm")
    assert steps == [1, 2, 3, 4, 5, 6] and norms == [r["grad_norm"] for r in history.gradients[2::4]]


def test_the_default_records_the_last_step_of_each_epoch_and_none_records_nothing():
    x, y = data()
    model = small_model()
    expected = by_hand(copy.deepcopy(model), x, y, 16, 2)
    net = Network(copy.deepcopy(model))
    history = net.fit((x, y), epochs=2, batch_size=16, shuffle=False, optimizer=make_opt(net.model), verbose=False)
    assert_rows_equal(history.gradients, [r for r in expected if r["step"] in (3, 6)])
    # a generic iterable with no len(): the last step is found when the batches run out
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 40, 16)]
    net = Network(copy.deepcopy(model))
    history = net.fit(iter_twice(batches), epochs=2, optimizer=make_opt(net.model), verbose=False)
    assert_rows_equal(history.gradients, [r for r in expected if r["step"] in (3, 6)])
    net = Network(copy.deepcopy(model))
    history = net.fit((x, y), epochs=1, batch_size=16, optimizer=make_opt(net.model), verbose=False,
                      record_gradients=None)
    assert history.gradients == [] and history.to_dict()["gradients"] == []


class iter_twice:
    """An iterable of batches without a length (as a generator-backed loader)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(list(self.batches))


def test_a_parameter_without_a_gradient_is_recorded_as_none():
    x, y = data()
    model = small_model()
    model[0].weight.requires_grad = False   # frozen: no .grad, no update
    history = Network(model).fit((x, y), epochs=1, batch_size=40, optimizer=optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.1), verbose=False)
    rows = {r["param"]: r for r in history.gradients}
    assert rows["0.weight"]["grad_norm"] is None and rows["0.weight"]["update_ratio"] is None
    assert rows["0.bias"]["grad_norm"] > 0


@pytest.mark.parametrize("mode", ["all", True, "epochs"])
def test_a_mode_that_is_not_one_of_the_three_is_refused_by_name(mode):
    x, y = data()
    with pytest.raises(ValueError, match=r"record_gradients must be 'epoch' .* 'step' .* or None"):
        Network(small_model()).fit((x, y), epochs=1, verbose=False, record_gradients=mode)


def test_resume_goes_on_recording_and_old_checkpoints_load(tmp_path):
    x, y = data()
    model = small_model()
    full_net = Network(copy.deepcopy(model))
    full = full_net.fit((x, y), epochs=3, batch_size=16, seed=5, optimizer=make_opt(full_net.model),
                        verbose=False, record_gradients="step")
    first = Network(copy.deepcopy(model))
    first.fit((x, y), epochs=1, batch_size=16, seed=5, optimizer=make_opt(first.model), verbose=False,
              checkpoint=tmp_path, record_gradients="step")
    again = Network(copy.deepcopy(model))
    resumed = again.fit((x, y), epochs=3, batch_size=16, seed=5, optimizer=make_opt(again.model), verbose=False,
                        resume=tmp_path / "last.npz", record_gradients="step")
    assert resumed.gradients == full.gradients   # bit for bit, the first epoch's rows from the checkpoint
    # a history written before gradients were recorded
    old = History.from_dict({"epochs": [{"epoch": 1, "train_loss": 1.0}], "steps": [1.0]})
    assert old.gradients == [] and len(old) == 1


def test_gradients_csv(tmp_path):
    x, y = data()
    history = Network(small_model()).fit((x, y), epochs=2, batch_size=16, verbose=False)
    history.gradients[0]["update_ratio"] = None   # as for weights that are all zero
    history.write_gradients_csv(tmp_path / "gradients.csv")
    with open(tmp_path / "gradients.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(GRADIENT_FIELDS) and len(rows) == 8
    assert rows[0]["update_ratio"] == "" and rows[0]["param"] == "0.weight" and rows[4]["step"] == "6"
    assert float(rows[5]["grad_norm"]) == history.gradients[5]["grad_norm"]
