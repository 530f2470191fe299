"""What a forward saves, and which backward may use it (manualbp/nn/saved.py): never a silently wrong gradient.

Also the tutorials' way of writing a model -- a Module subclass holding a Sequential, with a one-line
forward -- which gets its backward by replaying its forward's calls in reverse; and torch's edge cases
(0-d inputs, NaN through ReLU, softmax without a dim)."""
import warnings

import numpy as np
import pytest

import manualbp
from manualbp import nn, optim
from manualbp.nn.saved import SavedStateError

torch = pytest.importorskip("torch")
tnn = torch.nn


def mlp():
    manualbp.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)).double()


def torch_twin(model):
    ref = tnn.Sequential(tnn.Linear(4, 5), tnn.ReLU(), tnn.Linear(5, 3)).double()
    ref.load_state_dict({k: torch.tensor(v) for k, v in model.state_dict().items()})
    return ref


def batch(seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((6, 4)), rng.integers(0, 3, 6)


def test_a_second_forward_before_backward_is_refused_not_silently_wrong():
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    (x1, y1), (x2, _) = batch(1), batch(2)
    loss = loss_fn(model(x1), y1)
    model(x2)  # a look at another batch, in train mode, between forward and backward
    with pytest.raises(SavedStateError, match="no_grad"):
        model.backward(loss_fn.backward())
    assert all(p.grad is None for p in model.parameters())  # nothing was accumulated
    assert np.isfinite(loss)


@pytest.mark.parametrize("look", ["no_grad", "eval", "summary"])
def test_a_look_under_no_grad_eval_or_summary_leaves_the_saved_state(look):
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    ref = torch_twin(model)
    (x1, y1), (x2, _) = batch(1), batch(2)
    loss_fn(model(x1), y1)
    if look == "no_grad":
        with manualbp.no_grad():
            model(x2)
    elif look == "eval":
        model.eval()
        model(x2)
        model.train()
    else:
        manualbp.summary(model, (4,), verbose=False)
    model.backward(loss_fn.backward())
    tloss = tnn.CrossEntropyLoss()(ref(torch.tensor(x1)), torch.tensor(y1))
    tloss.backward()
    for (name, p), q in zip(model.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_the_latest_forward_is_backpropagated_when_the_gradient_is_its_own():
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    ref = torch_twin(model)
    (x1, _), (x2, y2) = batch(1), batch(2)
    model(x1)  # an accuracy check in train mode: never backpropagated
    loss_fn(model(x2), y2)
    model.backward(loss_fn.backward())
    tnn.CrossEntropyLoss()(ref(torch.tensor(x2)), torch.tensor(y2)).backward()
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_a_second_backward_without_a_forward_raises_unless_the_state_is_retained():
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    x, y = batch(1)
    loss_fn(model(x), y)
    g = loss_fn.backward()
    model.backward(g, retain_graph=True)
    once = model[0].weight.grad.copy()
    model.backward(g)  # allowed: the state was retained; gradients add, as torch's would
    np.testing.assert_allclose(model[0].weight.grad, 2 * once)
    with pytest.raises(RuntimeError, match="twice"):
        model.backward(g)
    np.testing.assert_allclose(model[0].weight.grad, 2 * once)  # and nothing was added by the refused one


def test_a_layer_called_on_its_own_in_between_is_caught():
    model, loss_fn = mlp(), nn.CrossEntropyLoss()
    (x1, y1), (x2, _) = batch(1), batch(2)
    loss_fn(model(x1), y1)
    model[0](x2)  # the first layer alone, on another batch
    with pytest.raises(SavedStateError, match="ran forward again"):
        model.backward(loss_fn.backward())


def test_backward_after_an_eval_forward_says_nothing_was_saved():
    model = mlp().eval()
    model(batch(1)[0])
    with pytest.raises(ValueError, match="eval mode or under manualbp.no_grad"):
        model.backward(np.ones((6, 3)))
    with manualbp.enable_grad():  # torch's way to save in eval mode anyway
        model(batch(1)[0])
    assert model.backward(np.ones((6, 3))).shape == (6, 4)


class ChenYu(nn.Module):
    """The tutorials' way: a Sequential inside, a one-line forward, no backward written."""

    def __init__(self):
        super(ChenYu, self).__init__()  # noqa: UP008  (written as the tutorials write it)
        self.model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3))

    def forward(self, x):
        x = self.model(x)
        return x


class SharedReLU(nn.Module):
    """torch code often keeps one ReLU and calls it after every layer."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.relu(self.fc1(x))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class TorchSharedReLU(tnn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = tnn.Linear(4, 5), tnn.Linear(5, 5), tnn.Linear(5, 3)
        self.relu = tnn.ReLU()

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


@pytest.mark.parametrize("ours_cls,theirs", [
    (ChenYu, lambda: tnn.Sequential(tnn.Linear(4, 5), tnn.ReLU(), tnn.Linear(5, 3))),
    (SharedReLU, TorchSharedReLU)])
def test_a_chain_forward_gets_a_replayed_backward_equal_to_torch(ours_cls, theirs):
    manualbp.manual_seed(3)
    model = ours_cls().double()
    ref = theirs().double()
    state = model.state_dict()
    ref.load_state_dict({k: torch.tensor(v) for k, v in zip(ref.state_dict(), state.values())})
    x, y = batch(4)
    tx = torch.tensor(x, requires_grad=True)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        topt.zero_grad()
        loss = loss_fn(model(x), y)
        gx = model.backward(loss_fn.backward())
        opt.step()
        tx.grad = None
        tloss = tnn.CrossEntropyLoss()(ref(tx), torch.tensor(y))
        tloss.backward()
        topt.step()
        np.testing.assert_allclose(loss, tloss.item(), rtol=1e-12)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), rtol=1e-10, atol=1e-14)


def test_a_forward_that_is_not_a_chain_gets_the_backward_to_write():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(3, 3), nn.Linear(3, 2)

        def forward(self, x):
            return self.b(self.a(x) + x)

    model = Residual()
    model(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"(?s)Write the backward yourself.*def backward\(self, grad_output\):.*"
                                        r"self\.b\.backward\(grad\).*self\.a\.backward\(grad\)"):
        model.backward(np.ones((2, 2), np.float32))


@pytest.mark.parametrize("layer", [nn.ReLU(), nn.LeakyReLU(0.1), nn.Sigmoid(), nn.Tanh(), nn.Softmax(0),
                                   nn.Identity()])
def test_a_0d_input_keeps_its_shape_as_in_torch(layer):
    y = layer(np.array(0.7))
    assert np.shape(y) == ()
    assert np.shape(layer.backward(np.array(1.0))) == ()


def test_flatten_of_a_0d_input_follows_torch():
    assert nn.Flatten(0)(np.array(2.0)).shape == (1,)
    with pytest.raises(ValueError, match="out of range"):
        nn.Flatten()(np.array(2.0))


def test_relu_of_nan_is_nan_and_passes_the_gradient_as_torch():
    x = np.array([np.nan, 1.0, -1.0, 0.0])
    relu = nn.ReLU()
    y = relu(x)
    g = relu.backward(np.ones(4))
    tx = torch.tensor(x, requires_grad=True)
    ty = torch.relu(tx)
    ty.backward(torch.ones(4))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(g, tx.grad.numpy())


def test_softmax_without_dim_warns_as_torch():
    with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
        nn.Softmax()(np.ones((2, 3)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.Softmax(dim=1)(np.ones((2, 3)))
