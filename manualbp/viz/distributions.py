"""Per-layer distributions of what a forward and a backward produce: each layer's output values, dL/d(its
output), and its parameters' ``.grad`` -- the histograms that show a vanishing or exploding gradient, or a
layer of saturated sigmoids (outputs piled at 0 and 1), at a glance.

    with viz.Recording(model) as rec:          # keeps each layer's output and dL/d(output), on the host
        loss = loss_fn(model(x), y)
        model.backward(loss_fn.backward())
    fig = viz.distributions_figure(model, rec)

Without a ``Recording`` (a model whose forward and backward have run already) only what the model keeps is
drawn: each layer's weights and their ``.grad``.
"""
import numpy as np

from ..device import to_numpy
from ..nn.module import Module
from . import new_figure

COLOURS = {"output": "tab:blue", "grad_output": "tab:red", "grad": "tab:purple", "weight": "tab:green"}


class Recording:
    """While active, every leaf module of ``model`` (a layer: a module without children) keeps a host copy of
    its latest output and of the dL/d(output) its backward receives.  Nothing else changes: the layers' forward
    and backward run as they always do, and leaving the ``with`` block removes the recording.

    Attributes:
        layers: ``[(name, module)]`` in the order the forward called them.
        outputs, grad_outputs: name -> NumPy array (a layer called several times keeps its last call's).
    """

    def __init__(self, model):
        model = getattr(model, "model", model)   # a Network: its Module
        if not isinstance(model, Module):
            raise TypeError(f"Recording expected a manualbp Module or Network, got {type(model).__name__}")
        self.model = model
        self.layers, self.outputs, self.grad_outputs = [], {}, {}
        self._hooked = [(name or type(m).__name__, m) for name, m in model.named_modules()
                        if not m._modules]   # leaves; a bare layer is its own leaf, named by its type

    def __enter__(self):
        for name, m in self._hooked:
            object.__setattr__(m, "forward", self._forward(name, m))   # an instance attribute shadows the class's
            object.__setattr__(m, "backward", self._backward(name, m))
        return self

    def __exit__(self, *exc):
        for _, m in self._hooked:
            m.__dict__.pop("forward", None)
            m.__dict__.pop("backward", None)
        return False

    def _forward(self, name, module):
        forward = type(module).forward

        def recorded(*args, **kwargs):
            out = forward(module, *args, **kwargs)
            if name not in self.outputs:
                self.layers.append((name, module))
            self.outputs[name] = np.array(to_numpy(out), copy=True)
            return out
        return recorded

    def _backward(self, name, module):
        backward = type(module).backward

        def recorded(grad_output, *args, **kwargs):
            self.grad_outputs[name] = np.array(to_numpy(grad_output), copy=True)
            return backward(module, grad_output, *args, **kwargs)
        return recorded


def _hist(ax, values, colour, title):
    values = np.asarray(values, dtype=np.float64).ravel()
    finite = values[np.isfinite(values)]
    ax.set_title(title, fontsize=8.5, loc="left")
    ax.tick_params(labelsize=7)
    if finite.size == 0:
        ax.text(0.5, 0.5, "no values" if values.size == 0 else "no finite values", ha="center", va="center",
                transform=ax.transAxes, fontsize=8, color="0.4")
        ax.set_yticks([])
        return
    counts, _, _ = ax.hist(finite, bins=40, color=colour, alpha=0.85)
    ax.set_ylim(0, 2.1 * counts.max())   # headroom: the numbers sit above the bars, not on them
    ax.set_yticks([])
    ax.locator_params(axis="x", nbins=5)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3))
    ax.xaxis.get_offset_text().set_fontsize(7)
    ax.text(0.99, 0.95, f"mean {finite.mean():.2e}\nstd {finite.std():.2e}\n|max| {np.abs(finite).max():.2e}",
            ha="right", va="top", transform=ax.transAxes, fontsize=7, family="monospace",
            bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.8})


def _params_grad(module):
    grads = [to_numpy(p.grad).ravel() for p in module._parameters.values() if p is not None and p.grad is not None]
    return np.concatenate(grads) if grads else None


def distributions_figure(model, recording=None, title=None):
    """Histograms, one row per layer: with a ``Recording``, its output values, dL/d(output) and its parameters'
    ``.grad`` (every layer the forward ran); without one, its weights and their ``.grad`` (layers with
    parameters).  Each panel notes the mean, the standard deviation and the largest magnitude."""
    model = getattr(model, "model", model)
    if recording is not None:
        rows = recording.layers
        columns = (("output", "output values"), ("grad_output", "dL/d(output)"), ("grad", "parameters' .grad"))
    else:
        rows = [(name or type(m).__name__, m) for name, m in model.named_modules()
                if not m._modules and m._parameters]
        columns = (("weight", "parameter values"), ("grad", "parameters' .grad"))
    if not rows:
        raise ValueError("distributions_figure: nothing to draw: " + (
            "the recording saw no forward (run model(x) inside `with Recording(model)`)" if recording is not None
            else "the model has no layer with parameters (pass a Recording to see outputs and gradients)"))
    fig = new_figure(4 * len(columns), 0.5 + 1.45 * len(rows))
    axes = fig.subplots(len(rows), len(columns), squeeze=False)
    for (name, module), row_axes in zip(rows, axes):
        for (what, heading), ax in zip(columns, row_axes):
            label = f"{name} ({type(module).__name__}): {heading}"
            if what == "output":
                values = recording.outputs.get(name)
            elif what == "grad_output":
                values = recording.grad_outputs.get(name)
            elif what == "weight":
                values = np.concatenate([to_numpy(p.data).ravel() for p in module._parameters.values()
                                         if p is not None])
            else:
                values = _params_grad(module)
            if values is None:
                ax.set_title(label, fontsize=8.5, loc="left")
                ax.text(0.5, 0.5, {"grad": "no parameters" if not module._parameters else "no .grad yet",
                                   "grad_output": "no backward reached it"}.get(what, "not recorded"),
                        ha="center", va="center", transform=ax.transAxes, fontsize=8, color="0.4")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            _hist(ax, values, COLOURS[what], label)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
