"""The tutorials' 2-2-2 sigmoid network: the numbers DESIGN.md lists, computed by manualbp."""
import numpy as np
import pytest

from manualbp import nn, optim
from manualbp.gradcheck import gradcheck


def build():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2), nn.Sigmoid()).double()
    net.load_state_dict({
        "0.weight": np.array([[0.15, 0.20], [0.25, 0.30]]), "0.bias": np.array([0.35, 0.35]),
        "2.weight": np.array([[0.40, 0.45], [0.50, 0.55]]), "2.bias": np.array([0.60, 0.60]),
    })
    return net


def test_two_two_two_network_numbers():
    net = build()
    x, target = np.array([[0.05, 0.10]]), np.array([[0.01, 0.99]])
    loss_fn = nn.MSELoss(reduction="sum")  # sum (out - target)^2 = 2 E_total
    e_total = 0.5 * loss_fn(net(x), target)
    net.backward(loss_fn.backward(0.5))
    assert e_total == pytest.approx(0.298371109, abs=1e-9)
    assert net[2].weight.grad[0, 0] == pytest.approx(0.082167041, abs=1e-9)  # dE/dw5
    assert net[0].weight.grad[0, 0] == pytest.approx(0.000438568, abs=1e-9)  # dE/dw1
    optim.SGD(net.parameters(), lr=0.5).step()
    assert net[2].weight.data[0, 0] == pytest.approx(0.358916480, abs=1e-9)
    assert net[0].weight.data[0, 0] == pytest.approx(0.149780716, abs=1e-9)


def test_gradcheck_passes_for_layers_and_catches_a_wrong_backward():
    rng = np.random.default_rng(0)
    assert gradcheck(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Softmax(dim=1)).double(),
                     rng.standard_normal((2, 3)))

    class WrongSigmoid(nn.Sigmoid):
        def backward(self, g):
            return g * self._s  # forgot the (1 - s) factor

    with pytest.raises(AssertionError, match="input"):
        gradcheck(WrongSigmoid(), rng.standard_normal((2, 3)))
    assert gradcheck(WrongSigmoid(), rng.standard_normal((2, 3)), raise_exception=False) is False
    with pytest.raises(TypeError, match="float64"):
        gradcheck(nn.Linear(2, 2), rng.standard_normal((1, 2)))
