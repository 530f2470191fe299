"""A small model drawn as its layers, top to bottom: one box per layer with its name and type, its output shape
and its parameter count -- ``manualbp.summary``'s table as a picture (the same rows, the same numbers)."""
import numpy as np

from ..device import module_device, to_device
from ..nn.module import Sequential
from ..nn.saved import no_grad
from ..summary import _model_of, summary
from . import new_figure

MAX_LAYERS = 40   # beyond this a picture is no clearer than summary()'s table


def layers_figure(model, input_shape, title=None):
    """Boxes for the rows of ``summary(model, input_shape)``, joined by arrows from the input down.

    Returns the figure; ``fig.manualbp_rows`` holds the summary rows it drew."""
    table = summary(model, input_shape, verbose=False)
    rows = table["rows"]
    names = _names_in_finish_order(_model_of(model), input_shape, table)
    if len(rows) > MAX_LAYERS:
        raise ValueError(f"layers_figure: the model has {len(rows)} layers; a drawing is for at most {MAX_LAYERS} "
                         f"(print manualbp.summary(model, input_shape) for the whole table)")
    n = len(rows) + 2            # the input, the layers, the total
    step = 0.75                  # inches from one box to the next
    top = 1.2 if title else 0.6
    fig = new_figure(7.5, step * (n - 0.4 + top))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 1)
    ax.set_ylim(-n + 0.4, top)
    ax.axis("off")
    shape = ", ".join(str(s) for s in (-1,) + tuple(int(s) for s in (
        (input_shape,) if isinstance(input_shape, int) else input_shape)))
    ax.text(0.5, 0, f"input  [{shape}]", ha="center", va="center", fontsize=10, family="monospace",
            bbox={"boxstyle": "round,pad=0.45", "fc": "#eef3fb", "ec": "0.35"})
    for i, row in enumerate(rows, start=1):
        has_params = row["params"] > 0
        ax.annotate("", xy=(0.5, -i + 0.2), xytext=(0.5, -i + 0.8),
                    arrowprops={"arrowstyle": "-|>", "color": "0.45", "lw": 1})
        text = f"{names[i - 1]:<8}{row['name']:<16}{row['output_shape']!s:>22}{row['params']:>10,} params"
        ax.text(0.5, -i, text, ha="center", va="center", fontsize=9.5, family="monospace",
                bbox={"boxstyle": "round,pad=0.45", "fc": "#fff3d6" if has_params else "#f3f3f3",
                      "ec": "tab:orange" if has_params else "0.55", "lw": 1.3 if has_params else 0.8})
    total = (f"total {table['total_params']:,} parameters ({table['trainable_params']:,} trainable)")
    ax.text(0.5, -(n - 1), total, ha="center", va="center", fontsize=10, color="0.2")
    if title:
        ax.text(0.5, 0.75, title, ha="center", va="center", fontsize=11)
    fig.manualbp_rows = rows
    return fig


def _names_in_finish_order(model, input_shape, table):
    """The attribute path ("0", "features.3") of each module summary() lists, in its order: the modules whose
    forward finishes, in the order they finish, for a dummy batch run in eval mode under no_grad (nothing of
    the model changes: no state saved, no running statistic updated)."""
    names = {id(m): name for name, m in model.named_modules()}
    hooked = [m for m in model.modules() if m is not model and not isinstance(m, Sequential)]
    finished = []

    def hook(module):
        forward = type(module).forward

        def recorded(*args, **kwargs):
            out = forward(module, *args, **kwargs)
            finished.append(names[id(module)])
            return out
        return recorded

    shape = (input_shape,) if isinstance(input_shape, int) else tuple(int(s) for s in input_shape)
    first = next(model.parameters(), None)
    x = np.zeros((2,) + shape, dtype=first.dtype if first is not None else np.float32)
    modes = [(m, m.training) for m in model.modules()]
    try:
        for m in hooked:
            object.__setattr__(m, "forward", hook(m))
        model.eval()
        with no_grad():
            model(to_device(x, module_device(model)))
    finally:
        for m, mode in modes:
            object.__setattr__(m, "training", mode)
        for m in hooked:
            m.__dict__.pop("forward", None)
    return finished if len(finished) == len(table["rows"]) else [""] * len(table["rows"])
