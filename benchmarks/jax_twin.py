"""JAX's twin of a manualbp training step: the same network, weights and batch, one ``jax.jit``-compiled
function doing the forward pass, CrossEntropyLoss, the gradient and SGD with momentum, on the CPU (XLA).

``benchmarks/run.py`` times it beside ours and torch's in the ``train`` section when JAX is installed
(``pip install -e .[bench]``); ``tests/test_bench.py`` holds one of its steps equal to one of ours.

Threads: XLA's CPU client sizes its thread pool from the CPUs this process may run on, and XLA_FLAGS
has no flag that sets that size (``--xla_cpu_multi_thread_eigen=false`` makes the products
single-threaded instead), so JAX gets as many threads as the other libraries only when they use all
the CPUs, as they do by default.  ``xla_threads()`` says how many that is.
"""
import os

import numpy as np

_JAX = None


def load():
    """The ``jax`` module, on the CPU, or None when it does not import."""
    global _JAX
    if _JAX is None:
        os.environ["JAX_PLATFORMS"] = "cpu"  # read when jax first initialises its backends
        try:
            import jax
        except ImportError:
            return None
        _JAX = jax
    return _JAX


def xla_threads():
    """The size of XLA's CPU thread pool: the CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def versions():
    jax = load()
    if jax is None:
        return {}
    import jaxlib
    return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def _layers(model):
    """[(kind, state_dict prefix, options)] for the layers of a manualbp Sequential that this twin knows."""
    from manualbp import nn
    out = []
    for i, layer in enumerate(model):
        if isinstance(layer, nn.Conv2d):
            if tuple(layer.dilation) != (1, 1) or layer.groups != 1 or layer.padding_mode != "zeros":
                raise ValueError(f"jax twin: layer {i} ({layer}) is not a plain convolution")
            out.append(("conv", f"{i}.", (tuple(layer.stride), tuple(layer.padding))))
        elif isinstance(layer, nn.MaxPool2d):
            if tuple(layer._p) != (0, 0) or tuple(layer._d) != (1, 1) or layer.ceil_mode:
                raise ValueError(f"jax twin: layer {i} ({layer}) pads, dilates or rounds up")
            out.append(("maxpool", None, (tuple(layer._k), tuple(layer._s))))
        elif isinstance(layer, nn.Flatten):
            out.append(("flatten", None, None))
        elif isinstance(layer, nn.Linear):
            out.append(("linear", f"{i}.", None))
        elif isinstance(layer, nn.ReLU):
            out.append(("relu", None, None))
        else:
            raise TypeError(f"jax twin: no JAX version of layer {i} ({type(layer).__name__})")
    return out


def make_step(model, lr=0.01, momentum=0.9):
    """A jit-compiled ``step(params, bufs, x, y) -> (params, bufs, loss)`` for ``model``'s architecture.

    torch.optim.SGD's momentum without dampening: buf = momentum * buf + grad (buf = grad at the first
    step, which a zero buf gives), p = p - lr * buf.  params and bufs are donated: XLA may update them
    in place.
    """
    jax = load()
    jnp, lax = jax.numpy, jax.lax
    spec = _layers(model)

    def forward(params, x):
        h = x
        for kind, pre, opt in spec:
            if kind == "conv":
                stride, pad = opt
                h = lax.conv_general_dilated(h, params[pre + "weight"], stride, [(pad[0], pad[0]), (pad[1], pad[1])],
                                             dimension_numbers=("NCHW", "OIHW", "NCHW"))
                if pre + "bias" in params:
                    h = h + params[pre + "bias"][None, :, None, None]
            elif kind == "maxpool":
                (kh, kw), (sh, sw) = opt
                h = lax.reduce_window(h, -jnp.inf, lax.max, (1, 1, kh, kw), (1, 1, sh, sw), "VALID")
            elif kind == "flatten":
                h = h.reshape(h.shape[0], -1)
            elif kind == "linear":
                h = h @ params[pre + "weight"].T
                if pre + "bias" in params:
                    h = h + params[pre + "bias"]
            else:
                h = jnp.maximum(h, 0)
        return h

    def loss_fn(params, x, y):  # CrossEntropyLoss, mean over the batch
        logits = forward(params, x)
        picked = jnp.take_along_axis(logits, y[:, None], axis=1)[:, 0]
        return jnp.mean(jax.nn.logsumexp(logits, axis=1) - picked)

    def step(params, bufs, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        bufs = {k: momentum * bufs[k] + grads[k] for k in params}
        params = {k: params[k] - lr * bufs[k] for k in params}
        return params, bufs, loss

    return jax.jit(step, donate_argnums=(0, 1))


class JaxTwin:
    """``model``'s weights (copied) and the batch (x, y) on JAX's CPU device, and the jitted step."""

    def __init__(self, model, x, y, lr=0.01, momentum=0.9):
        jax = load()
        jnp = jax.numpy
        self.params = {k: jnp.asarray(np.array(v)) for k, v in model.state_dict().items()}
        self.bufs = {k: jnp.zeros_like(v) for k, v in self.params.items()}
        self.x, self.y = jnp.asarray(x), jnp.asarray(np.asarray(y).astype(np.int32))
        self._step = make_step(model, lr, momentum)

    def step(self):
        """One training step; returns the loss (of the weights before the step), waited for."""
        self.params, self.bufs, loss = self._step(self.params, self.bufs, self.x, self.y)
        return float(loss.block_until_ready())

    def state_dict(self):
        return {k: np.asarray(v) for k, v in self.params.items()}
