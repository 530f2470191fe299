"""Pictures of backprop: what a forward and a backward leave behind, drawn with matplotlib.

    from manualbp import viz
    with viz.Recording(model) as rec:               # keeps each layer's output and dL/d(output)
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
    viz.save_figure(viz.distributions_figure(model, rec), "distributions.png")
    viz.save_figure(viz.layers_figure(model, (1, 8, 8)), "layers.svg")

    fig, drawn = viz.two_two_two_figure(lr=0.5)     # ``manualbp explain --plot net.png``
    fig = viz.gradients_figure(history)             # ``manualbp train``'s gradients.png

What each draws:

    two_two_two_figure   the tutorials' 2-2-2 sigmoid network: every neuron's net input and output, every
                         weight with dE/dw, the two paths by which w1 reaches the error, and the update of
                         w5 and w1 (module ``two_two_two``)
    distributions_figure per layer, histograms of its output values, of dL/d(its output) and of its
                         parameters' .grad (module ``distributions``)
    layers_figure        a small model's layers as boxes, top to bottom: name, type, output shape and
                         parameter count, from ``manualbp.summary`` (module ``layers``)
    gradients_figure     from ``History.gradients``: each parameter's gradient norm and update/weight ratio
                         over the run, on log scales (module ``flow``)

matplotlib is imported only when a figure is drawn (``manualbp`` itself imports without it).  Figures are
made with ``matplotlib.figure.Figure`` and the Agg canvas, so drawing never opens a window or touches
pyplot's global state, and ``save_figure`` writes them atomically (``manualbp.checkpoint.atomic_write``).
"""
import os

FORMATS = {".png": "png", ".svg": "svg"}
DPI = 100   # a PNG of a figure w x h inches is 100 w x 100 h pixels

__all__ = ["FORMATS", "Recording", "distributions_figure", "figure_format", "gradients_figure", "layers_figure",
           "new_figure", "save_figure", "two_two_two_figure"]


def figure_format(path, who="save_figure"):
    """``"png"`` or ``"svg"`` from ``path``'s extension; anything else is a ValueError naming the two."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in FORMATS:
        got = f"it ends in {ext!r}" if ext else "it has no extension"
        raise ValueError(f"{who}: cannot tell the picture's format from {os.fspath(path)!r}: the file name must end "
                         f"in .png or .svg ({got})")
    return FORMATS[ext]


def new_figure(width, height):
    """An Agg-backed ``matplotlib.figure.Figure`` of ``width`` x ``height`` inches (no pyplot, no window)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path):
    """Write ``fig`` to ``path`` as PNG or SVG (by the extension), atomically: a reader never sees half a file."""
    from ..checkpoint import atomic_write
    fmt = figure_format(path)
    atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=DPI))
    return os.fspath(path)


def __getattr__(name):   # the figures' modules (and matplotlib) load on first use
    import importlib
    where = {"two_two_two_figure": "two_two_two", "distributions_figure": "distributions", "Recording": "distributions",
             "layers_figure": "layers", "gradients_figure": "flow"}
    if name in where:
        return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
