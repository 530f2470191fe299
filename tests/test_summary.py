"""summary() against torchsummary 1.5.1's arithmetic, applied to the same models built in torch.

torchsummary itself is not a dependency, so ``torchsummary_numbers`` below re-does what its
``summary()`` does (forward hooks on every module but the model and Sequentials, weight+bias counts,
its size formulas) on the torch model; our table must agree with it row by row and number by number,
and with the values worked out by hand in the comments.
"""
import re

import numpy as np
import pytest
import torch

import manualbp
from manualbp import models, nn
from manualbp.network import Network
from manualbp.summary import summary


def torchsummary_numbers(model, input_size, batch_size=-1):
    """torchsummary.summary's bookkeeping, on a torch model, returned instead of printed."""
    rows = []

    def hook(module, inputs, output):
        shape = list(output.size())
        shape[0] = batch_size
        params, trainable = 0, None
        if hasattr(module, "weight") and hasattr(module.weight, "size"):
            params += int(torch.prod(torch.LongTensor(list(module.weight.size()))))
            trainable = module.weight.requires_grad
        if hasattr(module, "bias") and hasattr(module.bias, "size"):
            params += int(torch.prod(torch.LongTensor(list(module.bias.size()))))
        rows.append({"name": f"{type(module).__name__}-{len(rows) + 1}", "output_shape": shape,
                     "params": params, "trainable": trainable})

    hooks = [m.register_forward_hook(hook) for m in model.modules()
             if not isinstance(m, (torch.nn.Sequential, torch.nn.ModuleList)) and m is not model]
    with torch.no_grad():
        model(torch.rand(2, *input_size))
    for h in hooks:
        h.remove()
    total_params = sum(r["params"] for r in rows)
    total_output = sum(np.prod(r["output_shape"]) for r in rows)
    trainable = sum(r["params"] for r in rows if r["trainable"])
    input_mb = abs(np.prod(input_size) * batch_size * 4. / (1024 ** 2.))
    output_mb = abs(2. * total_output * 4. / (1024 ** 2.))
    params_mb = abs(total_params * 4. / (1024 ** 2.))
    return {"rows": rows, "total_params": total_params, "trainable_params": trainable,
            "non_trainable_params": total_params - trainable, "input_size_mb": input_mb,
            "forward_backward_size_mb": output_mb, "params_size_mb": params_mb,
            "total_size_mb": params_mb + output_mb + input_mb}


def torch_mlp():
    return torch.nn.Sequential(torch.nn.Linear(3, 4, bias=False), torch.nn.Sigmoid(), torch.nn.Linear(4, 2),
                               torch.nn.ReLU(), torch.nn.Linear(2, 3))


def torch_lenet5():
    t = torch.nn
    return t.Sequential(t.Conv2d(3, 6, 5), t.MaxPool2d(2, 2), t.Conv2d(6, 16, 5), t.MaxPool2d(2, 2), t.Flatten(),
                        t.Linear(400, 120), t.Linear(120, 84), t.Linear(84, 10))


def torch_cifar10net():
    t = torch.nn
    return t.Sequential(t.Conv2d(3, 32, 5, padding=2), t.MaxPool2d(2), t.Conv2d(32, 32, 5, padding=2), t.MaxPool2d(2),
                        t.Conv2d(32, 64, 5, padding=2), t.MaxPool2d(2), t.Flatten(), t.Linear(1024, 64),
                        t.Linear(64, 10))


def compare(ours, theirs):
    assert [(r["name"], r["output_shape"], r["params"]) for r in ours["rows"]] == \
        [(r["name"], r["output_shape"], r["params"]) for r in theirs["rows"]]
    for key in ("total_params", "trainable_params", "non_trainable_params"):
        assert ours[key] == theirs[key], key
    for key in ("input_size_mb", "forward_backward_size_mb", "params_size_mb", "total_size_mb"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-12, abs=0), key


def printed(text, label):
    m = re.search(rf"^{re.escape(label)}: (\S+)$", text, re.MULTILINE)
    assert m, f"no line {label!r}:\n{text}"
    return m.group(1)


def test_mlp_31_params_as_in_the_tutorial(capsys):
    ours = summary(models.mlp(), (3,), batch_size=6)
    compare(ours, torchsummary_numbers(torch_mlp(), (3,), batch_size=6))
    out = capsys.readouterr().out
    assert ours["total_params"] == 31 and [r["params"] for r in ours["rows"]] == [12, 0, 10, 0, 9]
    for line in ("Total params: 31", "Trainable params: 31", "Non-trainable params: 0", "Input size (MB): 0.00",
                 "Forward/backward pass size (MB): 0.00", "Params size (MB): 0.00",
                 "Estimated Total Size (MB): 0.00"):
        assert line in out.splitlines()


def test_three_linears_reproduce_the_tutorials_table_line_for_line(capsys):
    # the tutorial applied its activations as functions, so torchsummary listed only the three Linears
    net = Network([nn.Linear(3, 4, bias=False), nn.Linear(4, 2), nn.Linear(2, 3)])
    net.summary((3,), batch_size=6)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["-" * 64, "        Layer (type)               Output Shape         Param #", "=" * 64]
    assert lines[3:6] == ["            Linear-1                     [6, 4]              12",
                          "            Linear-2                     [6, 2]              10",
                          "            Linear-3                     [6, 3]               9"]


def test_lenet5(capsys):
    ours = summary(models.lenet5(), (3, 32, 32))
    compare(ours, torchsummary_numbers(torch_lenet5(), (3, 32, 32)))
    text = capsys.readouterr().out
    assert "            Conv2d-1            [-1, 6, 28, 28]             456" in text.splitlines()
    assert "            Linear-6                  [-1, 120]          48,120" in text.splitlines()
    # 456 + 2,416 + 48,120 + 10,164 + 850
    assert printed(text, "Total params") == "62,006"
    # input 3*32*32*4 B = 0.0117 MB; outputs 4704+1176+1600+400+400+120+84+10 = 8494 numbers, x2 x4 B = 0.0648 MB;
    # params 62,006 x 4 B = 0.2365 MB; total 0.3130 MB
    assert [printed(text, k) for k in ("Input size (MB)", "Forward/backward pass size (MB)", "Params size (MB)",
                                       "Estimated Total Size (MB)")] == ["0.01", "0.06", "0.24", "0.31"]


def test_cifar10net(capsys):
    ours = summary(models.cifar10net(), (3, 32, 32))
    compare(ours, torchsummary_numbers(torch_cifar10net(), (3, 32, 32)))
    text = capsys.readouterr().out
    assert "            Conv2d-1           [-1, 32, 32, 32]           2,432" in text.splitlines()
    assert "            Linear-8                   [-1, 64]          65,600" in text.splitlines()
    assert printed(text, "Total params") == "145,578" and printed(text, "Trainable params") == "145,578"
    # outputs 32768+8192+8192+2048+4096+1024+1024+64+10 = 57,418 numbers -> 0.438 MB; params 0.5553 MB
    assert [printed(text, k) for k in ("Input size (MB)", "Forward/backward pass size (MB)", "Params size (MB)",
                                       "Estimated Total Size (MB)")] == ["0.01", "0.44", "0.56", "1.01"]


class Block(nn.Module):
    """A custom container: torchsummary hooks it too, and lists it after its children."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


class TorchBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        self.act = torch.nn.ReLU()

    def forward(self, x):
        return self.act(self.conv(x))


TorchBlock.__name__ = "Block"   # torchsummary names rows by class name


def test_custom_container_and_batch_size_follow_torchsummary(capsys):
    ours = summary(nn.Sequential(Block(), nn.Flatten(), nn.Linear(48, 5)), (2, 4, 4), batch_size=8, verbose=False)
    theirs = torchsummary_numbers(torch.nn.Sequential(TorchBlock(), torch.nn.Flatten(), torch.nn.Linear(48, 5)),
                                  (2, 4, 4), batch_size=8)
    compare(ours, theirs)
    assert [r["name"] for r in ours["rows"]] == ["Conv2d-1", "ReLU-2", "Block-3", "Flatten-4", "Linear-5"]
    assert capsys.readouterr().out == ""


def test_non_trainable_weights_are_counted_apart():
    model = models.lenet5()
    model[0].weight.requires_grad = False
    s = summary(model, (3, 32, 32), verbose=False)
    assert s["non_trainable_params"] == 456 and s["trainable_params"] == 62006 - 456


def test_summary_leaves_the_model_and_the_seeded_generator_alone():
    manualbp.manual_seed(3)
    expected = manualbp.get_generator().random(3)
    manualbp.manual_seed(3)
    model = models.cifar10net()
    manualbp.manual_seed(3)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    summary(model, (3, 32, 32), verbose=False)
    np.testing.assert_array_equal(manualbp.get_generator().random(3), expected)
    assert all("forward" not in m.__dict__ for m in model.modules())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_float64_sizes_double():
    s32 = summary(models.lenet5(), (3, 32, 32), verbose=False)
    s64 = summary(models.lenet5().double(), (3, 32, 32), verbose=False)
    assert s64["total_params"] == s32["total_params"]
    assert s64["total_size_mb"] == pytest.approx(2 * s32["total_size_mb"])
