"""The tutorials' code (../shared/seeds), run as a learner brings it, with exactly two changes:

1. layers, losses and optimizers come from manualbp (``from manualbp import nn, optim``), and
2. ``loss.backward()`` is written ``model.backward(criterion.backward())``.

Everything else stays torch: ``torch.tensor``, ``torch.reshape``, ``torch.utils.data.DataLoader`` over a
torchvision data set with ``transforms.ToTensor()`` (``FakeData`` stands in for CIFAR-10: nothing is
downloaded), ``.to(device)``, ``loss.item()``, ``torch.save``.  Each run is repeated with torch's own
classes from the same weights, and the numbers must agree to 1e-4.
"""
import numpy as np
import pytest

import manualbp

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
from torch.utils.data import DataLoader
from torchvision import transforms

TOL = {"rtol": 1e-4, "atol": 1e-5}


def fake_cifar(size):
    return torchvision.datasets.FakeData(size=size, image_size=(3, 32, 32), num_classes=10,
                                         transform=transforms.ToTensor(), random_offset=7)


def same_weights(ours, theirs):
    """torch's model takes our model's weights (state_dict keys and shapes are torch's)."""
    theirs.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in ours.state_dict().items()})


# --- tutorial 000 (loss functions, then the CIFAR-10 network with SGD) -----------------------------------

def test_tutorial_losses_print_torchs_numbers():
    from manualbp import nn
    from manualbp.nn import L1Loss

    inputs = torch.tensor([1, 2, 3], dtype=torch.float32)
    targets = torch.tensor([1, 2, 5], dtype=torch.float32)
    inputs = torch.reshape(inputs, (1, 1, 1, 3))
    targets = torch.reshape(targets, (1, 1, 1, 3))
    loss = L1Loss(reduction="sum")
    result = loss(inputs, targets)
    loss_mse = nn.MSELoss()
    result_mse = loss_mse(inputs, targets)
    x = torch.tensor([0.1, 0.2, 0.3])
    y = torch.tensor([1])
    x = torch.reshape(x, (1, 3))
    loss_cross = nn.CrossEntropyLoss()
    result_cross = loss_cross(x, y)
    assert result.item() == 2.0
    assert round(float(result_mse), 4) == 1.3333
    assert round(result_cross.item(), 4) == 1.1019
    assert "1.1019" in f"{result_cross:.4f}"


def chen_yu_class(nn):
    """The tutorial's CIFAR-10 network, as written there (only the module ``nn`` differs)."""
    class ChenYu(nn.Module):
        def __init__(self):
            super(ChenYu, self).__init__()  # noqa: UP008  (the tutorial's spelling)
            self.model1 = nn.Sequential(
                nn.Conv2d(3, 32, 5, padding=2), nn.MaxPool2d(2), nn.Conv2d(32, 32, 5, padding=2), nn.MaxPool2d(2),
                nn.Conv2d(32, 64, 5, padding=2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1024, 64),
                nn.Linear(64, 10))

        def forward(self, x):
            x = self.model1(x)
            return x
    return ChenYu


def test_tutorial_cifar10_network_trains_like_torch():
    from manualbp import nn, optim

    dataset = fake_cifar(6)
    dataloader = DataLoader(dataset, batch_size=1)
    manualbp.manual_seed(0)
    loss = nn.CrossEntropyLoss()
    chenyu = chen_yu_class(nn)()
    sgd = optim.SGD(chenyu.parameters(), lr=0.01)
    ref = chen_yu_class(torch.nn)()
    same_weights(chenyu, ref)
    ref_loss, ref_sgd = torch.nn.CrossEntropyLoss(), torch.optim.SGD(ref.parameters(), lr=0.01)
    for _epoch in range(2):
        running_loss, ref_running = 0.0, 0.0
        for data in dataloader:
            imgs, targets = data
            outputs = chenyu(imgs)
            result_loss = loss(outputs, targets)
            sgd.zero_grad()
            chenyu.backward(loss.backward())  # was: result_loss.backward()
            sgd.step()
            running_loss = running_loss + result_loss

            ref_sgd.zero_grad()
            ref_result = ref_loss(ref(imgs), targets)
            ref_result.backward()
            ref_sgd.step()
            ref_running = ref_running + ref_result.item()
        np.testing.assert_allclose(float(running_loss), ref_running, **TOL)
    for (name, p), q in zip(chenyu.named_parameters(), ref.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), err_msg=name, **TOL)


# --- tutorial 003 (LeNet-5 inside a Module, DataLoader with shuffle) ---------------------------------------

def lenet5_class(nn):
    class LeNet_5(nn.Module):
        def __init__(self):
            super(LeNet_5, self).__init__()  # noqa: UP008
            self.model = nn.Sequential(
                nn.Conv2d(in_channels=3, out_channels=6, kernel_size=5, padding=0, stride=1),
                nn.MaxPool2d(kernel_size=2, stride=2, padding=0),
                nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5, padding=0, stride=1),
                nn.MaxPool2d(kernel_size=2, stride=2, padding=0),
                nn.Flatten(),
                nn.Linear(400, 120),
                nn.Linear(120, 84),
                nn.Linear(84, 10),
            )

        def forward(self, x):
            x = self.model(x)
            return x
    return LeNet_5


def test_tutorial_lenet5_with_sgd_momentum_and_the_training_log_line(capsys):
    from manualbp import nn, optim

    train_loader = DataLoader(dataset=fake_cifar(8), batch_size=2, shuffle=True, num_workers=0, drop_last=False,
                              generator=torch.Generator().manual_seed(0))
    manualbp.manual_seed(1)
    model = lenet5_class(nn)()
    ref = lenet5_class(torch.nn)()
    same_weights(model, ref)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(torch.device("cpu"))  # a GPU model would need numba.cuda; the CPU is what this test checks
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ref_criterion = torch.nn.CrossEntropyLoss()
    ref_optimizer = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    epoch = 1
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = criterion(output, target)
        model.backward(criterion.backward())  # was: loss.backward()
        optimizer.step()
        if batch_idx % 2 == 0:
            print(f'Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} '
                  f'({100. * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}')

        ref_optimizer.zero_grad()
        ref_loss = ref_criterion(ref(data), target)
        ref_loss.backward()
        ref_optimizer.step()
        np.testing.assert_allclose(loss.item(), ref_loss.item(), **TOL)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Train Epoch: 1 [0/8 (0%)]\tLoss: ")
    assert printed[1].startswith("Train Epoch: 1 [4/8 (50%)]\tLoss: ")
    for p, q in zip(model.parameters(), ref.parameters()):
        np.testing.assert_allclose(p.data, q.detach().numpy(), **TOL)


# --- tutorial 002 (the train function that keeps the best model, torch.save; the cross-entropy example) ----

def test_tutorial_cross_entropy_example_prints_torchs_loss(capsys):
    from manualbp import nn

    output = torch.tensor([[2.0, 1.0, 0.1]], requires_grad=True)
    target = torch.tensor([0])
    criterion = nn.CrossEntropyLoss()
    loss = criterion(output, target)
    print(f"Loss: {loss.item()}")
    expected = torch.nn.CrossEntropyLoss()(output, target).item()
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("Loss: 0.417")
    np.testing.assert_allclose(float(printed.split()[1]), expected, **TOL)


def test_tutorial_train_function_saves_the_best_model_with_torch_save(tmp_path, monkeypatch, capsys):
    from manualbp import nn, optim

    monkeypatch.chdir(tmp_path)

    def train(model, device, train_loader, optimizer, criterion, epoch):  # the tutorial's, one line changed
        model.train()
        best_model = model
        min_loss = 1
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            model.backward(criterion.backward())  # was: loss.backward()
            optimizer.step()
            if min_loss > loss.item():
                best_model, best_loss = model, loss.item()  # noqa: F841  (the tutorial's line)
            if batch_idx % 100 == 0:
                print(f'Train Epoch: {epoch} [{batch_idx * len(data)}/{len(train_loader.dataset)} '
                      f'({100. * batch_idx / len(train_loader):.0f}%)]\tLoss: {loss.item():.6f}')
        print("模型训练结束")
        print("保存最好 loss 模型,loss:", min_loss)
        torch.save(best_model.state_dict(), 'best-lenet5.pth')

    manualbp.manual_seed(2)
    model = lenet5_class(nn)()
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train_loader = DataLoader(fake_cifar(4), batch_size=2)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":  # the tutorial's line; a CPU run is what this test checks
        device = torch.device("cpu")
    ref = lenet5_class(torch.nn)()
    same_weights(model, ref)
    train(model, device, train_loader, optimizer, criterion, epoch=1)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Train Epoch: 1 [0/4 (0%)]\tLoss: ")
    assert out[-1] == "保存最好 loss 模型,loss: 1"
    saved = torch.load(tmp_path / "best-lenet5.pth", weights_only=False)
    assert list(saved) == list(ref.state_dict())
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.01, momentum=0.9)
    for data, target in train_loader:
        ref_opt.zero_grad()
        torch.nn.CrossEntropyLoss()(ref(data), target).backward()
        ref_opt.step()
    for key, value in ref.state_dict().items():
        np.testing.assert_allclose(np.asarray(saved[key]), value.numpy(), err_msg=key, **TOL)
    # and the saved weights go back into either model
    back = lenet5_class(nn)()
    back.load_state_dict(saved)
    ref.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in saved.items()})


# --- tutorial 004 (the CIFAR-10 net's first batch through CrossEntropyLoss, printed) ----------------------

def test_tutorial_cifar10_net_first_batch_loss(capsys):
    from manualbp import nn

    class CIFAR10_NET(nn.Module):
        def __init__(self):
            super(CIFAR10_NET, self).__init__()  # noqa: UP008
            self.model = nn.Sequential(
                nn.Conv2d(3, 32, 5, padding=2),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 32, 5, padding=2),
                nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 5, padding=2),
                nn.MaxPool2d(2, 2),
                nn.Flatten(),
                nn.Linear(1024, 64),
                nn.Linear(64, 10)
            )

        def forward(self, x):
            x = self.model(x)
            return x

    test_dataloader = DataLoader(dataset=fake_cifar(4), batch_size=2)
    manualbp.manual_seed(3)
    CIFAR10_NET_Instance = CIFAR10_NET()
    loss = nn.CrossEntropyLoss()
    step = 0
    for data in test_dataloader:
        imgs, targets = data
        outputs = CIFAR10_NET_Instance(imgs)
        loss = loss(outputs, targets)
        print(outputs)
        print(targets)
        print(loss)
        step = step + 1
        if step == 1:
            break
    ref = chen_yu_class(torch.nn)()
    ref.model1.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in CIFAR10_NET_Instance.model.state_dict().items()})
    imgs, targets = next(iter(test_dataloader))
    ref_outputs = ref(imgs)
    np.testing.assert_allclose(outputs, ref_outputs.detach().numpy(), **TOL)
    np.testing.assert_allclose(float(loss), torch.nn.CrossEntropyLoss()(ref_outputs, targets).item(), **TOL)
    printed = capsys.readouterr().out
    assert printed.count("\n") >= 3 and str(targets) in printed


# --- tutorial 001 (a Module of three Linear layers, xavier/kaiming init, torchsummary's table) -------------

def test_tutorial_modal_init_and_summary_table(capsys):
    """The tutorial's model with its init calls and the summary(modal, (3,), 6) table.  Its forward calls
    torch.sigmoid / torch.relu / torch.softmax, torch functions that take only torch tensors; with manualbp
    they are the modules nn.Sigmoid(), nn.ReLU(), nn.Softmax(dim=-1) (which also give the model its backward)."""
    from manualbp import nn, summary

    class Modal(nn.Module):
        def __init__(self):
            super(Modal, self).__init__()  # noqa: UP008
            self.fc1 = nn.Linear(3, 4, bias=False)
            nn.init.xavier_normal_(self.fc1.weight)
            self.fc2 = nn.Linear(4, 2)
            nn.init.kaiming_normal_(self.fc2.weight)
            self.out = nn.Linear(2, 3)
            self.sigmoid, self.relu, self.softmax = nn.Sigmoid(), nn.ReLU(), nn.Softmax(dim=-1)

        def forward(self, x):
            x = self.fc1(x)
            x = self.sigmoid(x)
            x = self.fc2(x)
            x = self.relu(x)
            x = self.out(x)
            x = self.softmax(x)
            return x

    manualbp.manual_seed(4)
    modal = Modal().to('cpu')
    x = torch.randn(6, 3).to('cpu')
    out = modal(x)
    np.testing.assert_allclose(out.sum(axis=-1), np.ones(6), rtol=1e-6)
    grad_x = modal.backward(np.ones_like(out))  # the replayed chain: softmax's rows sum to 1, so ~0
    assert grad_x.shape == (6, 3) and np.abs(grad_x).max() < 1e-6
    result = summary(modal, (3,), 6)
    table = capsys.readouterr().out
    linear = [row for row in result["rows"] if row["name"].startswith("Linear")]
    assert [(list(r["output_shape"]), r["params"]) for r in linear] == [([6, 4], 12), ([6, 2], 10), ([6, 3], 9)]
    for line in ("Total params: 31", "Trainable params: 31", "Non-trainable params: 0", "[6, 4]", "[6, 3]"):
        assert line in table, line
