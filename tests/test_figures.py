"""The derivations' figures (manualbp/figures.py): each one is drawn again here, is a PNG of its size, is linked
from its page, and shows what the code computes (checked against torch or a recurrence written out here)."""
import math
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from manualbp import figures

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "derivations" / "figures"
EXPECTED = {  # file: (page that shows it, width, height in pixels)
    "04-im2col.png": ("04-conv2d.md", 1150, 800),
    "05-maxpool-routing.png": ("05-maxpool.md", 900, 640),
    "09-momentum-bowl.png": ("09-sgd-momentum.md", 1100, 450),
    "10-variance-per-layer.png": ("10-initialisation.md", 900, 560),
}


def png_size(data):
    """(width, height) from a PNG's signature and IHDR chunk; AssertionError if it is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "the first chunk is not IHDR"
    return struct.unpack(">II", data[16:24])


def test_png_size_reads_the_header_and_refuses_what_is_not_a_png():
    header = b"\x89PNG\r\n\x1a\n" + struct.pack(">I4sII", 13, b"IHDR", 640, 480)
    assert png_size(header) == (640, 480)
    with pytest.raises(AssertionError):
        png_size(b"GIF89a" + header[6:])
    with pytest.raises(AssertionError):
        png_size(header[:12] + b"IDAT" + header[16:])


@pytest.fixture(scope="module")
def drawn(tmp_path_factory):
    folder = tmp_path_factory.mktemp("figures")
    return folder, figures.draw_all(folder)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_figure_is_written_as_a_png_of_its_size_and_its_page_shows_it(drawn, name):
    folder, _ = drawn
    page, width, height = EXPECTED[name]
    assert png_size((folder / name).read_bytes()) == (width, height)
    assert png_size((FIGURES / name).read_bytes()) == (width, height)         # the committed one
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]
    text = (ROOT / "derivations" / page).read_text(encoding="utf-8")
    assert f"](figures/{name})" in text and "![" in text.split(f"](figures/{name})")[0].rsplit("\n", 1)[-1]


def test_im2col_columns_are_the_windows_and_the_product_is_the_convolution(drawn):
    d = drawn[1]["04-im2col.png"]
    x, w, col = d["x"], d["w"], d["col"]
    assert col.shape == (9, 4)
    for s, (i, j) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        assert col[:, s].tolist() == x[i:i + 3, j:j + 3].ravel().tolist()
    ref = F.conv2d(torch.tensor(x)[None, None], torch.tensor(w)[None, None])[0, 0].numpy()
    assert np.array_equal(d["product"].reshape(2, 2), ref) and np.array_equal(d["y"], ref)


def test_maxpool_figure_routes_each_gradient_where_backward_puts_it(drawn):
    d = drawn[1]["05-maxpool-routing.png"]
    xt = torch.tensor(d["x"])[None, None].requires_grad_()
    yt = F.max_pool2d(xt, 2)
    yt.backward(torch.tensor(d["G"])[None, None])
    grad = xt.grad[0, 0].numpy()
    assert np.array_equal(d["y"], yt[0, 0].detach().numpy())
    assert np.array_equal(d["grad_x"], grad)                       # manualbp's MaxPool2d backward
    assert np.array_equal(d["drawn"], grad)                        # what the figure drew, routed by the argmax
    assert sorted(zip(*np.nonzero(d["drawn"]))) == [(0, 2), (1, 0), (2, 1), (3, 2)]


def test_momentum_figure_paths_follow_the_recurrences(drawn):
    d = drawn[1]["09-momentum-bowl.png"]
    a, b = figures.BOWL
    lr, mu = d["lr"], d["momentum"]
    for key, m in (("plain", 0.0), ("with_momentum", mu)):
        theta, buf, path = d[key][0].copy(), None, [d[key][0].copy()]
        for _ in range(len(d[key]) - 1):
            g = np.array([a, b]) * theta
            buf = g if buf is None else m * buf + g                  # (O4) with tau = 0; (O1) when m = 0
            theta = theta - lr * buf                                 # (O6)
            path.append(theta)
        np.testing.assert_allclose(d[key], np.array(path), rtol=1e-12, atol=1e-15)
    assert mu > 0 and not np.array_equal(d["plain"], d["with_momentum"])
    loss = [0.5 * (a * p[-1, 0] ** 2 + b * p[-1, 1] ** 2) for p in (d["plain"], d["with_momentum"])]
    assert loss[1] < loss[0] / 100                                  # the point of the picture (and the page)
    assert np.all(np.diff(np.sign(d["plain"][:12, 1])) != 0)        # plain SGD zig-zags across the valley


def test_variance_figure_shrinks_or_holds_as_the_initialisation_predicts(drawn):
    d = drawn[1]["10-variance-per-layer.png"]
    n = 256
    expected = {"normal, std 0.01": n * 1e-4, "PyTorch default": 1 / 3, "Xavier": 1.0, "Kaiming": 2.0}   # n sigma_w^2, (I1)
    assert len(d["measured"]) == 4
    for name, measured in d["measured"].items():
        [n_sigma2] = [v for k, v in expected.items() if name.startswith(k)]
        assert len(measured) == 20
        assert math.isclose(measured[0], n_sigma2, rel_tol=0.15), (name, measured[0])   # input variance 1
        ratio = math.exp(np.mean(np.diff(np.log(measured))))        # geometric mean of Var(y_l+1) / Var(y_l)
        assert math.isclose(ratio, n_sigma2 / 2, rel_tol=0.1), (name, ratio)           # (I1) after a ReLU
        np.testing.assert_allclose(d["predicted"][name], n_sigma2 * (n_sigma2 / 2) ** np.arange(20), rtol=1e-12)
