"""manualbp.viz and ``manualbp explain --plot``: every picture is written whole (a PNG of the size asked for,
an SVG that parses), and the numbers the 2-2-2 picture draws are the ones backward() computes."""
import copy
import os
import re
import struct
import subprocess
import sys
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.text import Text

from manualbp import explain, models, nn, optim, viz
from manualbp.network import Network

ROOT = Path(__file__).resolve().parents[1]


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    head = Path(path).read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def svg_root(path):
    root = ET.parse(path).getroot()
    assert root.tag.endswith("svg"), root.tag
    return root


def drawn_texts(fig):
    return [t.get_text() for t in fig.findobj(Text)]


def only_the_picture(folder, name):
    assert sorted(os.listdir(folder)) == [name], "a temporary file was left beside the picture"


# --- the 2-2-2 network --------------------------------------------------------------------------------------

def test_the_two_two_two_picture_draws_backwards_numbers():
    fig, drawn = viz.two_two_two_figure()
    e_total, (g_hidden, g_output), (w_hidden, w_output) = explain.by_manualbp(0.5)   # a run of its own
    texts = "\n".join(drawn_texts(fig))
    for names, grads in ((explain.HIDDEN_NAMES, g_hidden), (explain.OUTPUT_NAMES, g_output)):
        for j in range(2):
            for k in range(2):
                value, text = drawn[f"dE/d{names[j][k]}"]
                assert value == grads[j, k] and text == f"{grads[j, k]:.9f}"
                assert f"dE/d{names[j][k]} = {text}" in texts
    assert drawn["dE/dw5"][1] == "0.082167041" and drawn["dE/dw1"][1] == "0.000438568"   # the tutorials'
    assert drawn["w5 new"] == (w_output[0, 0], "0.358916480") and drawn["w1 new"] == (w_hidden[0, 0], "0.149780716")
    assert "w5: 0.40 -> 0.358916480" in texts and "w1: 0.15 -> 0.149780716" in texts
    assert drawn["E_total"] == (pytest.approx(e_total, rel=1e-15), "0.298371109")
    hand = explain.by_hand()
    for key in ("net_h", "out_h", "net_o", "out_o"):
        for j in range(2):
            name = f"{key}{j + 1}"
            assert drawn[name][0] == pytest.approx(hand[key][j], rel=1e-14)
            assert f"{key.split('_')[0]} {drawn[name][1]}" in texts
    # the two paths to w1: their terms add up to dE/dout_h1, and they are drawn in two colours
    assert drawn["path 1"][0] + drawn["path 2"][0] == pytest.approx(hand["de_dout_h"][0], rel=1e-14)
    path_lines = [t for t in fig.findobj(Text) if t.get_text().lstrip().startswith("path ")]
    assert len(path_lines) == 2 and path_lines[0].get_color() != path_lines[1].get_color()
    assert "0.055399425" in path_lines[0].get_text() and "-0.019049118" in path_lines[1].get_text()


def test_a_wrong_backward_changes_the_picture(monkeypatch):
    """The picture reads Parameter.grad: a sigmoid backward that forgets (1 - s) is drawn as it computes."""
    monkeypatch.setattr(nn.Sigmoid, "backward", lambda self, g: g * self._s)
    _, drawn = viz.two_two_two_figure()
    assert drawn["dE/dw5"][1] != "0.082167041"
    assert drawn["dE/dw5"][0] == explain.by_manualbp(0.5)[1][1][0, 0]


def test_explain_plot_writes_png_and_svg_and_the_text_is_unchanged(tmp_path, capsys):
    assert explain.main([]) == 0
    plain = capsys.readouterr().out
    png = tmp_path / "png" / "net.png"
    assert explain.main(["--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert out == plain + f"figure: {png}\n"
    assert png_size(png) == (1500, 800)
    only_the_picture(png.parent, "net.png")
    svg = tmp_path / "net.SVG"
    assert explain.main(["--plot", str(svg), "--lr", "0.1", "--digits", "6"]) == 0
    root = svg_root(svg)
    assert root.get("width", "").startswith("1080")   # 15 in at 72 points an inch
    text = svg.read_text()   # each text is drawn as glyph paths under a comment that quotes it
    assert "<!-- dE/dw5 = 0.082167 -->" in text and f"<!-- w5: 0.40 -&gt; {0.4 - 0.1 * 0.082167040564:.6f} -->" in text


@pytest.mark.parametrize("name", ["net.jpg", "net.pdf", "net"])
def test_explain_plot_refuses_other_extensions_by_name(tmp_path, capsys, name):
    with pytest.raises(SystemExit):
        explain.main(["--plot", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert "the file name must end in .png or .svg" in err and name in err
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_the_package_imports_and_plot_says_what_to_install(tmp_path):
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(fake), str(ROOT)]), "MPLBACKEND": "Agg"}
    code = ("import manualbp, manualbp.viz, manualbp.training; from manualbp.viz import Recording\n"
            "from manualbp import cli; raise SystemExit(cli.main(['explain', '--plot', sys.argv[1]]))")
    result = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(tmp_path / "net.png")], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1, result.stderr
    assert "--plot needs matplotlib" in result.stderr and "pip install matplotlib" in result.stderr
    assert not (tmp_path / "net.png").exists()


# --- distributions and layers of any model --------------------------------------------------------------

def mlp():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Sigmoid(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3)).double()
    model.load_state_dict({k: rng.normal(size=v.shape) for k, v in model.state_dict().items()})
    x, y = rng.normal(size=(16, 6)), rng.integers(0, 3, 16)
    return model, x, y


def test_a_recording_keeps_outputs_and_output_gradients_and_changes_nothing(tmp_path):
    model, x, y = mlp()
    plain = copy.deepcopy(model)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(plain(x), y)
    plain.backward(loss_fn.backward())
    with viz.Recording(model) as rec:
        out = model(x)
        loss_fn(out, y)
        grad = loss_fn.backward()
        model.backward(grad)
    for p, q in zip(model.parameters(), plain.parameters()):
        assert np.array_equal(p.grad, q.grad)
    assert [name for name, _ in rec.layers] == ["0", "1", "2", "3", "4"]
    np.testing.assert_array_equal(rec.outputs["4"], out)
    np.testing.assert_array_equal(rec.grad_outputs["4"], grad)
    np.testing.assert_allclose(rec.outputs["1"], 1 / (1 + np.exp(-(x @ model[0].weight.data.T + model[0].bias.data))),
                               rtol=1e-14)
    # dL/d(output of layer 2) is W4^T-weighted dL/d(output of 4) through the ReLU's mask
    relu_grad = rec.grad_outputs["4"] @ model[4].weight.data
    np.testing.assert_allclose(rec.grad_outputs["3"], relu_grad, rtol=1e-14)
    np.testing.assert_allclose(rec.grad_outputs["2"], relu_grad * (rec.outputs["2"] > 0), rtol=1e-14)
    assert all("forward" not in m.__dict__ and "backward" not in m.__dict__ for m in model.modules())

    fig = viz.distributions_figure(model, rec, title="an MLP")
    assert len(fig.axes) == 5 * 3
    assert "3 (ReLU): parameters' .grad" in drawn_texts(fig) and "no parameters" in drawn_texts(fig)
    path = tmp_path / "d" / "dist.png"
    viz.save_figure(fig, path)
    assert png_size(path) == (1200, round(100 * (0.5 + 1.45 * 5)))
    only_the_picture(path.parent, "dist.png")


def test_distributions_without_a_recording_draw_weights_and_grads(tmp_path):
    model, x, y = mlp()
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(model(x), y)
    model.backward(loss_fn.backward())
    fig = viz.distributions_figure(model)
    assert len(fig.axes) == 3 * 2   # the three Linear layers: values, .grad
    viz.save_figure(fig, tmp_path / "d.svg")
    svg_root(tmp_path / "d.svg")
    with pytest.raises(ValueError, match="recording saw no forward"):
        viz.distributions_figure(model, viz.Recording(model))
    with pytest.raises(ValueError, match="no layer with parameters"):
        viz.distributions_figure(nn.Sequential(nn.ReLU()))


def test_the_layers_picture_draws_summarys_rows_and_leaves_the_model_as_it_was(tmp_path):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    running = model[1].running_mean.copy()
    fig = viz.layers_figure(model, (1, 8, 8), title="a small CNN")
    texts = drawn_texts(fig)
    assert any(re.fullmatch(r"0\s+Conv2d-1\s+\[-1, 4, 6, 6\]\s+40 params", t) for t in texts), texts
    assert any(re.fullmatch(r"4\s+Linear-5\s+\[-1, 10\]\s+1,450 params", t) for t in texts), texts
    assert "input  [-1, 1, 8, 8]" in texts and "total 1,498 parameters (1,498 trainable)" in texts
    assert [r["name"] for r in fig.manualbp_rows] == ["Conv2d-1", "BatchNorm2d-2", "ReLU-3", "Flatten-4", "Linear-5"]
    assert np.array_equal(model[1].running_mean, running) and model.training and model[1].training
    viz.save_figure(fig, tmp_path / "layers.png")
    assert png_size(tmp_path / "layers.png") == (750, round(100 * 0.75 * (7 - 0.4 + 1.2)))
    viz.save_figure(viz.layers_figure(models.lenet5(), (3, 32, 32)), tmp_path / "lenet.svg")
    svg_root(tmp_path / "lenet.svg")
    with pytest.raises(ValueError, match="at most 40"):
        viz.layers_figure(nn.Sequential(*[nn.ReLU() for _ in range(41)]), (3,))


# --- gradient flow over a run ----------------------------------------------------------------------------

def fitted(epochs, mode="epoch"):
    model, x, y = mlp()
    net = Network(model)
    return net.fit((x, y), epochs=epochs, batch_size=8, optimizer=optim.SGD(net.parameters(), lr=0.1),
                   verbose=False, record_gradients=mode)


@pytest.mark.parametrize("epochs, mode", [(1, "epoch"), (3, "epoch"), (2, "step")])
def test_the_gradient_flow_picture(tmp_path, epochs, mode):
    history = fitted(epochs, mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a one-epoch run: no singular-limits warning
        fig = viz.gradients_figure(history, title="an MLP, SGD(lr=0.1)")
        viz.save_figure(fig, tmp_path / "g.png")
    assert png_size(tmp_path / "g.png") == (1200, 460)
    grad_ax, ratio_ax = fig.axes[:2]
    assert grad_ax.get_yscale() == "log" and ratio_ax.get_yscale() == "log"
    lines = [line for line in grad_ax.lines if line.get_label() == "0.weight"]
    steps, norms = history.gradient_series("0.weight")
    x = history["epoch"] if mode == "epoch" else steps
    assert len(lines) == 1 and list(lines[0].get_xdata()) == x and list(lines[0].get_ydata()) == norms
    assert lines[0].get_marker() == "o"
    assert grad_ax.get_xlabel() == ("epoch (its last step)" if mode == "epoch" else "step")
    assert fig._suptitle.get_text() == "an MLP, SGD(lr=0.1)"
    with pytest.raises(ValueError, match="holds no gradient norms"):
        viz.gradients_figure(fitted(1, None))


def test_save_figure_refuses_an_unknown_extension(tmp_path):
    fig = viz.new_figure(2, 2)
    with pytest.raises(ValueError, match=r"must end in \.png or \.svg \(it ends in '\.jpeg'\)"):
        viz.save_figure(fig, tmp_path / "x.jpeg")
    assert not list(tmp_path.iterdir())


# --- example 25 --------------------------------------------------------------------------------------------

def test_example_25_shows_the_sigmoid_gradient_vanishing_and_relu_kaiming_keeping_it(tmp_path):
    out = tmp_path / "grads.png"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MPLBACKEND": "Agg", "NUMBA_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "25_vanishing_gradients.py"), "--quick",
                             "--out", str(out)], cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    ratios = {m.group(1).strip(): float(m.group(2)) for m in
              re.finditer(r"^(.+?)ratio at init (\S+)", result.stdout, re.MULTILINE)}
    assert set(ratios) == {"sigmoid", "relu + kaiming", "sigmoid + BN"}, result.stdout
    assert ratios["sigmoid"] < 1e-4                      # the first layer's gradient << the last one's
    assert 0.1 < ratios["relu + kaiming"] < 10           # within a small factor
    assert 0.1 < ratios["sigmoid + BN"] < 10
    rows = re.findall(r"^sigmoid {2,}((?:\s*\S+){10})$", result.stdout, re.MULTILINE)
    norms = [float(v) for v in rows[0].split()]
    assert norms == sorted(norms), "the sigmoid net's gradient norms should grow from the input to the output"
    assert png_size(out) == (1200, 420) and f"figure: {out}" in result.stdout
