"""The invalid inputs documented in docs/bad-inputs.md, and the script that writes that page.

    python tests/bad_inputs.py          # rewrite docs/bad-inputs.md from the errors the code raises now

Each case is a line of code (plus optional set-up) run in an empty temporary folder; the page shows the
code and the exact message it raises.  tests/test_reliability_bad_inputs.py runs every case again and
checks that the page still shows the message the code raises, so the page cannot drift from the code.
"""
import contextlib
import os
import pathlib
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, "docs", "bad-inputs.md")

DEVICES = "Devices"

# (section, what is wrong, set-up code, the call)
CASES = [
    # --- images and other layer inputs ---------------------------------------------------------------
    ("Layer inputs", "integer image (uint8 pixels)", "", "nn.Conv2d(3, 6, 5)(np.zeros((1, 3, 32, 32), np.uint8))"),
    ("Layer inputs", "bool input", "", "nn.Linear(4, 2)(np.ones((2, 4), bool))"),
    ("Layer inputs", "object array", "", "nn.Linear(4, 2)(np.array([[1.0, 2.0, None, 4.0]], dtype=object))"),
    ("Layer inputs", "float16 input", "", "nn.Linear(4, 2)(np.ones((2, 4), np.float16))"),
    ("Layer inputs", "a list instead of an array", "", "nn.Linear(4, 2)([[1.0, 2.0, 3.0, 4.0]])"),
    ("Layer inputs", "float64 input to a float32 layer", "", "nn.Linear(4, 2)(np.ones((2, 4)))"),
    ("Layer inputs", "wrong number of features", "", "nn.Linear(4, 2)(np.ones((2, 5), np.float32))"),
    ("Layer inputs", "image without channels", "", "nn.Conv2d(3, 6, 5)(np.ones((32, 32), np.float32))"),
    ("Layer inputs", "wrong number of channels", "", "nn.Conv2d(3, 6, 5)(np.ones((1, 1, 32, 32), np.float32))"),
    ("Layer inputs", "kernel larger than the padded input", "",
     "nn.Conv2d(3, 6, 5, padding=1)(np.ones((1, 3, 2, 2), np.float32))"),
    ("Layer inputs", "pooling window larger than the input", "", "nn.MaxPool2d(3)(np.ones((1, 1, 2, 2), np.float32))"),
    ("Layer inputs", "zero-sized image", "", "nn.MaxPool2d(2)(np.ones((1, 3, 0, 8), np.float32))"),
    ("Layer inputs", "Softmax dim out of range", "", "nn.Softmax(dim=2)(np.ones((2, 3), np.float32))"),
    # --- layer construction --------------------------------------------------------------------------
    ("Layer construction", "zero in_features", "", "nn.Linear(0, 2)"),
    ("Layer construction", "in_features as a string", "", "nn.Linear('784', 10)"),
    ("Layer construction", "kernel_size 0", "", "nn.Conv2d(3, 6, 0)"),
    ("Layer construction", "fractional kernel_size", "", "nn.Conv2d(3, 6, 2.5)"),
    ("Layer construction", "kernel_size with three numbers", "", "nn.Conv2d(3, 6, (3, 3, 3))"),
    ("Layer construction", "negative padding", "", "nn.Conv2d(3, 6, 3, padding=-1)"),
    ("Layer construction", "padding='same' with stride 2", "", "nn.Conv2d(3, 6, 3, stride=2, padding='same')"),
    ("Layer construction", "stride 0", "", "nn.MaxPool2d(2, stride=0)"),
    ("Layer construction", "pooling padding over half the window", "", "nn.MaxPool2d(2, padding=2)"),
    ("Layer construction", "LeakyReLU slope nan", "", "nn.LeakyReLU(float('nan'))"),
    # --- backward ------------------------------------------------------------------------------------
    ("Backward", "backward before forward", "", "nn.Linear(4, 2).backward(np.ones((3, 2), np.float32))"),
    ("Backward", "grad_output of the wrong shape", "layer = nn.Linear(4, 2)\nlayer(np.ones((3, 4), np.float32))",
     "layer.backward(np.ones((2, 2), np.float32))"),
    ("Backward", "grad_output of another dtype", "layer = nn.Conv2d(1, 2, 3)\nlayer(np.ones((1, 1, 5, 5), np.float32))",
     "layer.backward(np.ones((1, 2, 3, 3)))"),
    ("Backward", "Flatten grad of the wrong shape", "flat = nn.Flatten()\nflat(np.ones((2, 3, 4), np.float32))",
     "flat.backward(np.ones((2, 3, 4), np.float32))"),
    ("Backward", "a second backward of one forward", ("layer = nn.Linear(4, 2)\nlayer(np.ones((3, 4), np.float32))\n"
     "layer.backward(np.ones((3, 2), np.float32))"), "layer.backward(np.ones((3, 2), np.float32))"),
    ("Backward", "backward after a forward in eval mode", ("layer = nn.Linear(4, 2).eval()\n"
     "layer(np.ones((3, 4), np.float32))"), "layer.backward(np.ones((3, 2), np.float32))"),
    ("Backward", "the gradient of an earlier forward", ("model = nn.Sequential(nn.Linear(4, 2))\n"
     "loss_fn = nn.MSELoss()\nloss_fn(model(np.ones((3, 4), np.float32)), np.zeros((3, 2), np.float32))\n"
     "model(np.zeros((3, 4), np.float32))"), "model.backward(loss_fn.backward())"),
    ("Backward", "a Module whose forward is not a chain, without backward",
     ("class Twice(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.fc = nn.Linear(2, 2)\n"
     "    def forward(self, x):\n        return self.fc(x) + x\nmodel = Twice()\nmodel(np.ones((1, 2), np.float32))"),
     "model.backward(np.ones((1, 2), np.float32))"),
    # --- losses --------------------------------------------------------------------------------------
    ("Losses", "class index out of range", "", "nn.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0, 3]))"),
    ("Losses", "negative class index", "", "nn.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([-1, 0]))"),
    ("Losses", "float labels of class-index shape", "",
     "nn.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array([0.0, 1.0]))"),
    ("Losses", "one label per sample missing", "", "nn.CrossEntropyLoss()(np.zeros((4, 3), np.float32), np.array([0, 1]))"),
    ("Losses", "labels as strings", "", "nn.CrossEntropyLoss()(np.zeros((2, 3), np.float32), np.array(['cat', 'dog']))"),
    ("Losses", "negative class probabilities", "",
     "nn.CrossEntropyLoss()(np.zeros((1, 3), np.float32), np.array([[1.5, -0.5, 0.0]], np.float32))"),
    ("Losses", "nan in class probabilities", "",
     "nn.CrossEntropyLoss()(np.zeros((1, 3), np.float32), np.array([[0.5, np.nan, 0.5]], np.float32))"),
    ("Losses", "class weight of the wrong length", "",
     "nn.CrossEntropyLoss(weight=np.ones(4))(np.zeros((2, 3), np.float32), np.array([0, 1]))"),
    ("Losses", "label_smoothing above 1", "", "nn.CrossEntropyLoss(label_smoothing=1.5)"),
    ("Losses", "NLLLoss given probabilities as target", "",
     "nn.NLLLoss()(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))"),
    ("Losses", "regression target of another shape", "", "nn.MSELoss()(np.zeros((4, 1), np.float32), np.zeros(4, np.float32))"),
    ("Losses", "nan in a regression target", "",
     "nn.MSELoss()(np.zeros(3, np.float32), np.array([1.0, np.nan, 2.0], np.float32))"),
    ("Losses", "BCELoss input outside [0, 1]", "", "nn.BCELoss()(np.array([0.5, 1.5], np.float32), np.array([0.0, 1.0], np.float32))"),
    ("Losses", "BCELoss target outside [0, 1]", "", "nn.BCELoss()(np.array([0.5, 0.5], np.float32), np.array([0.0, 2.0], np.float32))"),
    ("Losses", "unknown reduction", "", "nn.MSELoss(reduction='avg')"),
    ("Losses", "HuberLoss delta 0", "", "nn.HuberLoss(delta=0)"),
    ("Losses", "loss backward before forward", "", "nn.MSELoss().backward()"),
    # --- optimizer -----------------------------------------------------------------------------------
    ("Optimizer", "negative lr", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr=-0.01)"),
    ("Optimizer", "lr as a string", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr='0.01')"),
    ("Optimizer", "momentum 1", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=1.0)"),
    ("Optimizer", "negative momentum", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=-0.9)"),
    ("Optimizer", "nesterov without momentum", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, nesterov=True)"),
    ("Optimizer", "negative weight_decay", "", "optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, weight_decay=-1e-4)"),
    ("Optimizer", "a parameter given twice", "layer = nn.Linear(2, 2)",
     "optim.SGD([layer.weight, layer.bias, layer.weight], lr=0.1)"),
    ("Optimizer", "no parameters", "", "optim.SGD(nn.ReLU().parameters(), lr=0.1)"),
    ("Optimizer", "a single Parameter", "", "optim.SGD(nn.Linear(2, 2).weight, lr=0.1)"),
    ("Optimizer", "unknown option in a group", "layer = nn.Linear(2, 2)",
     "optim.SGD([{'params': layer.parameters(), 'betas': (0.9, 0.99)}], lr=0.1)"),
    ("Optimizer", "optimizer state of another model",
     "opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)\nother = optim.SGD(nn.Linear(3, 2).parameters(), lr=0.1)",
     "other.load_state_dict({'state': {0: {'momentum_buffer': np.zeros((2, 2))}}, 'param_groups': opt.state_dict()['param_groups']})"),
    # --- state_dict ----------------------------------------------------------------------------------
    ("state_dict", "missing key (strict)", "model = nn.Sequential(nn.Linear(2, 2))",
     "model.load_state_dict({'0.weight': np.zeros((2, 2))})"),
    ("state_dict", "unexpected key (strict)", "model = nn.Sequential(nn.Linear(2, 2))",
     "model.load_state_dict({'0.weight': np.zeros((2, 2)), '0.bias': np.zeros(2), '1.weight': np.zeros(2)})"),
    ("state_dict", "wrong shape", "model = nn.Sequential(nn.Linear(2, 2))",
     "model.load_state_dict({'0.weight': np.zeros((2, 3)), '0.bias': np.zeros(2)})"),
    ("state_dict", "not a mapping", "", "nn.Linear(2, 2).load_state_dict([np.zeros((2, 2)), np.zeros(2)])"),
    # --- data and Network.fit ------------------------------------------------------------------------
    ("Data and fit", "batch_size 0", "", "data.batches(np.zeros((10, 2)), np.zeros(10), batch_size=0)"),
    ("Data and fit", "batch_size larger than the data set, with drop_last", "",
     "data.batches(np.zeros((10, 2)), np.zeros(10), batch_size=32, drop_last=True)"),
    ("Data and fit", "x and y of different lengths", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(9, np.int64)))"),
    ("Data and fit", "training pair not a pair", "net = Network(nn.Linear(2, 3))", "net.fit(np.zeros((10, 2), np.float32))"),
    ("Data and fit", "integer images given to fit", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.uint8), np.zeros(10, np.int64)))"),
    ("Data and fit", "nan in the training images", "net = Network(nn.Linear(2, 3))\nx = np.zeros((10, 2), np.float32)\nx[7, 1] = np.nan",
     "net.fit((x, np.zeros(10, np.int64)))"),
    ("Data and fit", "epochs 0", "net = Network(nn.Linear(2, 3))", "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), epochs=0)"),
    ("Data and fit", "the loss class instead of an instance", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), loss=nn.CrossEntropyLoss)"),
    ("Data and fit", "loss with reduction='none'", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), loss=nn.CrossEntropyLoss(reduction='none'))"),
    ("Data and fit", "an optimizer built for another model", "net = Network(nn.Linear(2, 3))\nopt = optim.SGD(nn.Linear(2, 3).parameters(), lr=0.1)",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), optimizer=opt)"),
    ("Data and fit", "optimizer given by name", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), optimizer='sgd')"),
    ("Data and fit", "predict on no samples", "net = Network(nn.Linear(2, 3))", "net.predict(np.zeros((0, 2), np.float32))"),
    ("Data and fit", "training diverges (lr far too large)",
     "manualbp.manual_seed(0)\nnet = Network(nn.Linear(2, 3))\nx = np.arange(40, dtype=np.float32).reshape(20, 2)\ny = np.zeros((20, 3), np.float32)",
     "net.fit((x, y), epochs=3, batch_size=5, loss=nn.MSELoss(), optimizer=optim.SGD(net.parameters(), lr=1.0))"),
    ("Data and fit", "manual_seed with a negative seed", "", "manualbp.manual_seed(-1)"),
    # --- checkpoints ---------------------------------------------------------------------------------
    ("Checkpoints", "file cut off half-way", "write_checkpoint('good.npz')\ncut('good.npz', 'cut.npz')",
     "checkpoint.load('cut.npz', small_model())"),
    ("Checkpoints", "one byte flipped inside the weights", "write_checkpoint('good.npz')\nflip('good.npz', 'flipped.npz')",
     "checkpoint.load('flipped.npz', small_model())"),
    ("Checkpoints", "weights edited after saving", "write_checkpoint('good.npz')\nedit('good.npz', 'edited.npz')",
     "checkpoint.load('edited.npz', small_model())"),
    ("Checkpoints", "another architecture", "write_checkpoint('good.npz')",
     "checkpoint.load('good.npz', nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 3)))"),
    ("Checkpoints", "same shapes, another architecture", "write_checkpoint('good.npz')",
     "checkpoint.load('good.npz', nn.Sequential(nn.Linear(4, 3), nn.Tanh()))"),
    ("Checkpoints", "a newer format version", "write_checkpoint('good.npz')\nset_version('good.npz', 'v99.npz', 99)",
     "checkpoint.load('v99.npz', small_model())"),
    ("Checkpoints", "an npz that is not a checkpoint", "np.savez('plain.npz', weight=np.zeros(3))",
     "checkpoint.load('plain.npz', small_model())"),
    ("Checkpoints", "a pickle (code) inside the file", "np.savez('pickled.npz', __header__=np.array([{'a': 1}], dtype=object))",
     "checkpoint.load('pickled.npz', small_model())"),
    ("Checkpoints", "a text file", "pathlib.Path('notes.npz').write_text('not a zip')", "checkpoint.load('notes.npz', small_model())"),
    ("Checkpoints", "no such file", "", "checkpoint.load('missing.npz', small_model())"),
    ("Checkpoints", "optimizer state missing from the file", "write_checkpoint('good.npz', with_optimizer=False)",
     "model = small_model()\ncheckpoint.load('good.npz', model, optim.SGD(model.parameters(), lr=0.1))"),
    # --- devices: run in a child process under numba's CUDA simulator, which stands in for a GPU --------
    (DEVICES, "a model on the GPU given a CPU (NumPy) batch", "model = nn.Linear(4, 2).to('cuda')",
     "model(np.ones((3, 4), np.float32))"),
    (DEVICES, "a model on the CPU given a GPU array", "model = nn.Linear(4, 2)",
     "model(manualbp.to_device(np.ones((3, 4), np.float32)))"),
]

# --- adaptive optimizers and learning-rate schedulers (torch's messages where torch has one) --------------------
OPT = "Adaptive optimizers"
SCHED = "Learning-rate schedulers"
SGD = "opt = optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)"
CASES += [
    (OPT, "Adam: negative lr", "", "optim.Adam(nn.Linear(2, 2).parameters(), lr=-1e-3)"),
    (OPT, "Adam: beta1 of 1", "", "optim.Adam(nn.Linear(2, 2).parameters(), betas=(1.0, 0.999))"),
    (OPT, "Adam: negative beta2", "", "optim.Adam(nn.Linear(2, 2).parameters(), betas=(0.9, -0.5))"),
    (OPT, "Adam: betas as one number", "", "optim.Adam(nn.Linear(2, 2).parameters(), betas=0.9)"),
    (OPT, "Adam: negative eps", "", "optim.Adam(nn.Linear(2, 2).parameters(), eps=-1e-8)"),
    (OPT, "Adam: negative weight_decay", "", "optim.Adam(nn.Linear(2, 2).parameters(), weight_decay=-0.01)"),
    (OPT, "Adam: amsgrad as a string", "", "optim.Adam(nn.Linear(2, 2).parameters(), amsgrad='yes')"),
    (OPT, "Adam: maximize=True", "", "optim.Adam(nn.Linear(2, 2).parameters(), maximize=True)"),
    (OPT, "AdamW: beta2 above 1", "", "optim.AdamW(nn.Linear(2, 2).parameters(), betas=(0.9, 1.5))"),
    (OPT, "AdamW: nan lr", "", "optim.AdamW(nn.Linear(2, 2).parameters(), lr=float('nan'))"),
    (OPT, "AdamW: capturable=True", "", "optim.AdamW(nn.Linear(2, 2).parameters(), capturable=True)"),
    (OPT, "RMSprop: negative alpha", "", "optim.RMSprop(nn.Linear(2, 2).parameters(), alpha=-0.9)"),
    (OPT, "RMSprop: negative momentum", "", "optim.RMSprop(nn.Linear(2, 2).parameters(), momentum=-0.9)"),
    (OPT, "RMSprop: negative eps", "", "optim.RMSprop(nn.Linear(2, 2).parameters(), eps=-1.0)"),
    (OPT, "RMSprop: centered as a number", "", "optim.RMSprop(nn.Linear(2, 2).parameters(), centered=2)"),
    (OPT, "Adagrad: negative lr_decay", "", "optim.Adagrad(nn.Linear(2, 2).parameters(), lr_decay=-0.1)"),
    (OPT, "Adagrad: negative initial_accumulator_value", "", "optim.Adagrad(nn.Linear(2, 2).parameters(), initial_accumulator_value=-1)"),
    (OPT, "Adagrad: differentiable=True", "", "optim.Adagrad(nn.Linear(2, 2).parameters(), differentiable=True)"),
    (OPT, "a bad beta in one parameter group", "layer = nn.Linear(2, 2)",
     "optim.Adam([{'params': [layer.weight]}, {'params': [layer.bias], 'betas': (0.9, 1.0)}])"),
    (SCHED, "a scheduler of something that is not an optimizer", "", "optim.lr_scheduler.StepLR('sgd', 10)"),
    (SCHED, "StepLR: step_size 0", SGD, "optim.lr_scheduler.StepLR(opt, step_size=0)"),
    (SCHED, "MultiStepLR: one milestone, not a list", SGD, "optim.lr_scheduler.MultiStepLR(opt, 30)"),
    (SCHED, "ExponentialLR: gamma as a string", SGD, "optim.lr_scheduler.ExponentialLR(opt, '0.9')"),
    (SCHED, "CosineAnnealingLR: T_max 0", SGD, "optim.lr_scheduler.CosineAnnealingLR(opt, T_max=0)"),
    (SCHED, "LinearLR: start_factor 0", SGD, "optim.lr_scheduler.LinearLR(opt, start_factor=0)"),
    (SCHED, "LinearLR: end_factor above 1", SGD, "optim.lr_scheduler.LinearLR(opt, end_factor=2.0)"),
    (SCHED, "OneCycleLR: no length", SGD, "optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1)"),
    (SCHED, "OneCycleLR: pct_start above 1", SGD, "optim.lr_scheduler.OneCycleLR(opt, 0.1, 100, pct_start=1.5)"),
    (SCHED, "OneCycleLR: unknown anneal_strategy", SGD,
     "optim.lr_scheduler.OneCycleLR(opt, 0.1, 100, anneal_strategy='exp')"),
    (SCHED, "OneCycleLR: cycle_momentum on Adagrad", "opt = optim.Adagrad(nn.Linear(2, 2).parameters())",
     "optim.lr_scheduler.OneCycleLR(opt, 0.1, 100)"),
    (SCHED, "OneCycleLR: stepped past total_steps", SGD + "\nsched = optim.lr_scheduler.OneCycleLR(opt, 0.1, 2)",
     "for _ in range(3): sched.step()"),
    (SCHED, "ReduceLROnPlateau: factor 1", SGD, "optim.lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)"),
    (SCHED, "ReduceLROnPlateau: unknown mode", SGD, "optim.lr_scheduler.ReduceLROnPlateau(opt, mode='lowest')"),
    (SCHED, "ReduceLROnPlateau: min_lr list of the wrong length", SGD,
     "optim.lr_scheduler.ReduceLROnPlateau(opt, min_lr=[0.1, 0.01])"),
    (SCHED, "fit with a scheduler of another optimizer", SGD + "\nnet = Network(nn.Linear(2, 3))",
     ("net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), optimizer=optim.SGD(net.parameters(), "
     "lr=0.1), scheduler=optim.lr_scheduler.StepLR(opt, 1))")),
]


# --- normalisation and dropout -------------------------------------------------------------------------
NORM = "Normalisation and dropout"
CASES += [
    (NORM, "BatchNorm2d given the wrong channel count", "", "nn.BatchNorm2d(3)(np.ones((2, 4, 5, 5), np.float32))"),
    (NORM, "BatchNorm2d given a 3-D input", "", "nn.BatchNorm2d(3)(np.ones((3, 5, 5), np.float32))"),
    (NORM, "BatchNorm1d given a 4-D input", "", "nn.BatchNorm1d(3)(np.ones((2, 3, 4, 4), np.float32))"),
    (NORM, "BatchNorm training on one value per channel", "", "nn.BatchNorm1d(3)(np.ones((1, 3), np.float32))"),
    (NORM, "BatchNorm with zero num_features", "", "nn.BatchNorm2d(0)"),
    (NORM, "LayerNorm shape that does not end the input's shape", "",
     "nn.LayerNorm((3, 4))(np.ones((2, 3, 5), np.float32))"),
    (NORM, "LayerNorm normalized_shape as a string", "", "nn.LayerNorm('4')"),
    (NORM, "Dropout p above 1", "", "nn.Dropout(1.5)"),
    (NORM, "Dropout p below 0", "", "nn.Dropout2d(-0.1)"),
    (NORM, "Dropout2d on a 1-D input", "", "nn.Dropout2d()(np.ones(4, np.float32))"),
]


# --- helpers the cases use (files are written in the case's own temporary folder) -------------------------

def small_model():
    from manualbp import nn
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU())


def write_checkpoint(path, with_optimizer=True):
    import manualbp
    from manualbp import checkpoint, optim
    manualbp.manual_seed(0)
    model = small_model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9) if with_optimizer else None
    checkpoint.save(path, model, opt, epoch=1)


def cut(src, dst):
    raw = pathlib.Path(src).read_bytes()
    pathlib.Path(dst).write_bytes(raw[:len(raw) // 2])


def flip(src, dst):
    import zipfile
    raw = bytearray(pathlib.Path(src).read_bytes())
    with zipfile.ZipFile(src) as z:
        info = z.getinfo("model/0.weight.npy")
    raw[info.header_offset + 30 + len(info.filename) + len(info.extra) + 140] ^= 0xFF   # inside the array data
    pathlib.Path(dst).write_bytes(bytes(raw))


def _arrays(src):
    with np.load(src, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def edit(src, dst):
    arrays = _arrays(src)
    arrays["model/0.bias"] = arrays["model/0.bias"] + 1
    np.savez(dst, **arrays)


def set_version(src, dst, version):
    import json

    from manualbp import checkpoint
    arrays = _arrays(src)
    header = json.loads(arrays["__header__"].tobytes().decode())
    header["format_version"] = version
    header["header_sha256"] = checkpoint._header_checksum(header)
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


@contextlib.contextmanager
def _in_temp_folder():
    old = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield folder
        finally:
            os.chdir(old)


_DEVICE_RUNNER = """
import json, sys
import numpy as np
import manualbp
from manualbp import nn
names = {"np": np, "nn": nn, "manualbp": manualbp}
setup, call = json.loads(sys.argv[1])
exec(setup, names)
try:
    exec(call, names)
    print(json.dumps(None))
except Exception as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""


def _run_on_simulated_gpu(setup, call):
    """Run a device case in a child process with NUMBA_ENABLE_CUDASIM=1 (set before numba is imported)."""
    import builtins
    import json
    import subprocess
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "PYTHONPATH": ROOT}
    proc = subprocess.run([sys.executable, "-c", _DEVICE_RUNNER, json.dumps([setup, call])], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the simulator run failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return None if result is None else getattr(builtins, result[0], RuntimeError)(result[1])


def run(case):
    """Run one case; return the exception it raised (None if it raised nothing)."""
    if case[0] == DEVICES:
        return _run_on_simulated_gpu(case[2], case[3])
    import manualbp
    from manualbp import Network, checkpoint, data, nn, optim
    _, _, setup, call = case
    names = {"np": np, "nn": nn, "optim": optim, "data": data, "Network": Network, "manualbp": manualbp,
             "checkpoint": checkpoint, "small_model": small_model, "write_checkpoint": write_checkpoint,
             "cut": cut, "flip": flip, "edit": edit, "set_version": set_version, "pathlib": pathlib}
    with _in_temp_folder(), open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
        exec(setup, names)  # noqa: S102 - the documented cases are code, shown verbatim on the page
        try:
            exec(call, names)  # noqa: S102
        except Exception as exc:  # noqa: BLE001 - whatever it raises is what the page reports
            return exc
    return None


def cell(text):
    """Text for one Markdown table cell: no newlines, no bare pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def code_cell(setup, call):
    lines = [line for line in (setup + "\n" + call).strip().split("\n") if line]
    return "<br>".join(f"`{cell(line)}`" for line in lines)


def row(case, exc):
    _, what, setup, call = case
    return f"| {cell(what)} | {code_cell(setup, call)} | `{type(exc).__name__}` | {cell(exc)} |"


HEADER = """\
# Bad inputs and the messages they get

Every public entry point checks its arguments before any Numba kernel runs (a kernel does not check
bounds: a wrong shape would read or write the wrong memory, not raise).  The table lists the invalid
inputs we try and the exact message each one gets today.  Wrong types raise `TypeError`, wrong values
`ValueError`; a missing file `FileNotFoundError`; a run whose loss becomes nan or inf
`NonFiniteLossError` (a `FloatingPointError`).

This page is generated: `python tests/bad_inputs.py` rewrites it from the errors the code raises, and
`tests/test_reliability_bad_inputs.py` runs every row again and fails if the page and the code disagree.
Each case runs in an empty temporary folder; the checkpoint helpers (`write_checkpoint`, `cut`, `flip`,
`edit`, `set_version`, `small_model`) are in that file.  The device cases run in a child process
under numba's CUDA simulator (`NUMBA_ENABLE_CUDASIM=1`), which stands in for a GPU: the checks and
their messages are the same on a real one.

Notes:
- `CrossEntropyLoss` with class probabilities does not require each row to sum to 1 (torch does not
  either), but the probabilities must be finite and non-negative.
- `batch_size` larger than the data set is allowed without `drop_last` (one smaller batch, as torch's
  `DataLoader`); with `drop_last=True` there would be no batch at all, which is refused.
- Non-contiguous and read-only arrays are not errors: they are copied into one C-contiguous layout
  before the kernels see them.
"""


def render():
    out = [HEADER]
    section = None
    for case in CASES:
        if case[0] != section:
            section = case[0]
            out.append(f"\n## {section}\n\n| Invalid input | Code | Error | Message |\n|---|---|---|---|")
        out.append(row(case, run(case)))
    out.append(f"\n{len(CASES)} cases.\n")
    return "\n".join(out)


def main():
    sys.path.insert(0, ROOT)
    text = render()
    os.makedirs(os.path.dirname(DOC), exist_ok=True)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"wrote {DOC} ({len(CASES)} cases)")


# --- smooth activations and average / adaptive pooling ------------------------------------------------------
CASES += [
    ("Activations and pooling", "GELU approximate not 'none' or 'tanh'", "", "nn.GELU(approximate='fast')"),
    ("Activations and pooling", "SiLU inplace=True", "", "nn.SiLU(inplace=True)"),
    ("Activations and pooling", "Softplus beta nan", "", "nn.Softplus(beta=float('nan'))"),
    ("Activations and pooling", "AvgPool2d padding over half the window", "", "nn.AvgPool2d(3, padding=2)"),
    ("Activations and pooling", "AvgPool2d divisor_override 0", "", "nn.AvgPool2d(2, divisor_override=0)"),
    ("Activations and pooling", "AvgPool2d window larger than the padded input", "",
     "nn.AvgPool2d(4, padding=1)(np.ones((1, 1, 1, 1), np.float32))"),
    ("Activations and pooling", "adaptive output_size negative", "", "nn.AdaptiveAvgPool2d((2, -1))"),
    ("Activations and pooling", "adaptive output_size of three numbers", "", "nn.AdaptiveMaxPool2d((2, 2, 2))"),
    ("Activations and pooling", "adaptive output_size None", "", "nn.AdaptiveAvgPool2d(None)"),
]


# --- pictures (manualbp.viz) and the gradient flow fit records ------------------------------------------------
VIZ = "Pictures and gradient flow"
CASES += [
    (VIZ, "fit: record_gradients not 'epoch', 'step' or None", "net = Network(nn.Linear(2, 3))",
     "net.fit((np.zeros((10, 2), np.float32), np.zeros(10, np.int64)), record_gradients='all')"),
    (VIZ, "a picture's file name ending in neither .png nor .svg", "from manualbp import viz\nfig = viz.new_figure(2, 2)",
     "viz.save_figure(fig, 'net.jpg')"),
    (VIZ, "distributions of a recording that saw no forward", "from manualbp import viz\nmodel = nn.Linear(2, 3)",
     "viz.distributions_figure(model, viz.Recording(model))"),
    (VIZ, "a recording of something that is not a model", "from manualbp import viz", "viz.Recording('model')"),
    (VIZ, "layers of a model too deep to draw", "from manualbp import viz",
     "viz.layers_figure(nn.Sequential(*[nn.ReLU() for _ in range(41)]), (3,))"),
    (VIZ, "gradient flow of a run that recorded none", "from manualbp import viz\nfrom manualbp.network import History",
     "viz.gradients_figure(History([{'epoch': 1, 'train_loss': 1.0}], [1.0]))"),
]

# --- BatchNorm, a residual and ReLU in one call (BatchNorm2d.relu_after) -----------------------------------------
CASES += [
    (NORM, "BatchNorm2d.relu_after given a residual of another shape", "bn = nn.BatchNorm2d(2)",
     "bn.relu_after(np.ones((2, 2, 3, 3), np.float32), np.ones((2, 2, 3), np.float32))"),
    (NORM, "BatchNorm2d.backward after relu_after with a residual",
     ("bn = nn.BatchNorm2d(2)\n"
      "y = bn.relu_after(np.ones((2, 2, 3, 3), np.float32), np.ones((2, 2, 3, 3), np.float32))"), "bn.backward(y)"),
    (NORM, "BatchNorm2d.backward_relu after a plain forward",
     "bn = nn.BatchNorm2d(2)\ny = bn(np.ones((2, 2, 3, 3), np.float32))", "bn.backward_relu(y)"),
]

if __name__ == "__main__":
    main()

