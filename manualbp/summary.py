"""summary(model, input_shape): torchsummary's table of layers, output shapes and parameter counts.

    >>> summary(models.lenet5(), (3, 32, 32))
    ----------------------------------------------------------------
            Layer (type)               Output Shape         Param #
    ================================================================
                Conv2d-1            [-1, 6, 28, 28]             456
    ...

The numbers follow torchsummary 1.5.1 (the ``from torchsummary import summary`` of the tutorials)
formula for formula, so the two tables agree line for line:

* a row for every module that is neither the model itself nor a ``Sequential``, in the order their
  forward passes *finish* (torchsummary uses forward hooks: a container is listed after its children);
* ``Param #`` counts the module's own ``weight`` and ``bias`` only; a module's parameters count as
  trainable when its ``weight`` requires a gradient;
* Input size (MB)           = |prod(input_shape) * batch_size| * bytes / 1024^2
* Forward/backward pass (MB) = |2 * sum over rows of prod(output shape)| * bytes / 1024^2
  (x2: every activation has a gradient of the same size; ``batch_size`` = -1 enters the product as
  -1, hence the absolute values)
* Params size (MB)          = total params * bytes / 1024^2
* Estimated Total Size (MB) = params + forward/backward + input.

torchsummary always assumes 4 bytes a number; here ``bytes`` is the itemsize of ``dtype`` (the model's
parameter dtype by default), so a float32 model gives torchsummary's numbers and a float64 model twice
the sizes.
"""
import numpy as np

from .device import assign, module_device, to_device, to_numpy
from .nn.module import Module, Sequential
from .nn.saved import no_grad

_LINE = "-" * 64
_DOUBLE = "=" * 64


def _model_of(model):
    inner = getattr(model, "model", None)   # a Network wraps its model
    if not isinstance(model, Module) and isinstance(inner, Module):
        return inner
    if not isinstance(model, Module):
        raise TypeError(f"summary expected a manualbp Module or Network, got {type(model).__name__}")
    return model


def _shape_row(output, batch_size):
    if isinstance(output, (list, tuple)):
        return [[-1] + list(o.shape)[1:] for o in output]
    shape = list(output.shape)
    if shape:
        shape[0] = batch_size
    return shape


def _record_forward(model, x, batch_size):
    """Run ``model(x)`` with a recorder on every module torchsummary would hook; return the rows."""
    rows = []

    def hook(module):
        original = type(module).forward

        def recorded(*args, **kwargs):
            out = original(module, *args, **kwargs)
            index = len(rows) + 1
            params, trainable = 0, None
            weight = module._parameters.get("weight")
            bias = module._parameters.get("bias")
            if weight is not None:
                params += int(np.prod(weight.shape))
                trainable = bool(weight.requires_grad)
            if bias is not None:
                params += int(np.prod(bias.shape))
            rows.append({"name": f"{type(module).__name__}-{index}", "output_shape": _shape_row(out, batch_size),
                         "params": params, "trainable": trainable})
            return out
        return recorded

    hooked = [m for m in model.modules() if m is not model and not isinstance(m, Sequential)]
    try:
        for m in hooked:
            object.__setattr__(m, "forward", hook(m))   # an instance attribute shadows the class's forward
        model(x)
    finally:
        for m in hooked:
            m.__dict__.pop("forward", None)
    return rows


def summary(model, input_shape, batch_size=-1, dtype=None, verbose=True):
    """Print torchsummary's table for ``model`` on inputs of ``input_shape`` (no batch dimension).

    Args:
        model: a Module (or a Network).
        input_shape: one sample's shape, e.g. ``(3, 32, 32)`` or ``(3,)``.
        batch_size: the batch size to show in output shapes and use in "Input size"; -1 as torchsummary.
        dtype: the dtype of the dummy input and the byte size of a number (default: the model's).
        verbose: print the table (default True).

    Returns:
        dict with ``rows`` (name, output_shape, params, trainable), ``total_params``,
        ``trainable_params``, ``non_trainable_params``, ``input_size_mb``,
        ``forward_backward_size_mb``, ``params_size_mb``, ``total_size_mb`` and the ``text`` printed.
    """
    model = _model_of(model)
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    input_shape = tuple(int(s) for s in input_shape)
    if dtype is None:
        first = next(model.parameters(), None)
        dtype = first.dtype if first is not None else np.float32
    dtype = np.dtype(dtype)
    # torchsummary feeds a batch of two uniform random samples; a private generator keeps manualbp's
    # global one (and so a seeded training run) unaffected by printing a summary
    x = np.random.default_rng(0).random((2,) + input_shape).astype(dtype)
    x = to_device(x, module_device(model))  # a model on the GPU gets its dummy batch there
    # a training-mode forward updates buffers (BatchNorm's running statistics): they are put back afterwards
    buffers = [(b, np.array(to_numpy(b), copy=True)) for b in model.buffers()]
    try:
        with no_grad():  # the dummy batch saves nothing: a forward's state waiting for its backward stays as it was
            rows = _record_forward(model, x, batch_size)
    finally:
        for b, values in buffers:
            assign(b, values)

    lines = [_LINE, "{:>20}  {:>25} {:>15}".format("Layer (type)", "Output Shape", "Param #"), _DOUBLE]
    total_params = total_output = trainable_params = 0
    for row in rows:
        lines.append("{:>20}  {:>25} {:>15}".format(row["name"], str(row["output_shape"]),
                                                    f"{row['params']:,}"))
        total_params += row["params"]
        total_output += int(np.prod(row["output_shape"]))
        if row["trainable"]:
            trainable_params += row["params"]
    nbytes = float(dtype.itemsize)
    mb = 1024 ** 2.
    input_mb = abs(int(np.prod(input_shape)) * batch_size * nbytes / mb)
    output_mb = abs(2. * total_output * nbytes / mb)   # x2 for gradients
    params_mb = abs(total_params * nbytes / mb)
    total_mb = params_mb + output_mb + input_mb
    lines += [_DOUBLE,
              f"Total params: {total_params:,}",
              f"Trainable params: {trainable_params:,}",
              f"Non-trainable params: {total_params - trainable_params:,}",
              _LINE,
              f"Input size (MB): {input_mb:0.2f}",
              f"Forward/backward pass size (MB): {output_mb:0.2f}",
              f"Params size (MB): {params_mb:0.2f}",
              f"Estimated Total Size (MB): {total_mb:0.2f}",
              _LINE]
    text = "\n".join(lines)
    if verbose:
        print(text)
    return {"rows": rows, "total_params": total_params, "trainable_params": trainable_params,
            "non_trainable_params": total_params - trainable_params, "input_size_mb": input_mb,
            "forward_backward_size_mb": output_mb, "params_size_mb": params_mb, "total_size_mb": total_mb,
            "text": text}
