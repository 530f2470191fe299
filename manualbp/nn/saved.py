"""What a forward saves, and which backward may use it.

Derivation: derivations/01-chain-rule.md (the chain rule needs, at each layer, the values of the forward
whose output the gradient belongs to; (C2), (C3)).

torch records a graph per forward, so every ``loss.backward()`` finds the activations of its own forward.
Here each layer keeps what its backward needs in its own attributes (``self._x``, ...), one forward's worth,
and ``Module.__call__`` does the bookkeeping that keeps that honest:

- the state a forward saves is for one backward: a second ``backward`` without a new forward, which would add
  into every ``.grad`` twice, raises (``backward(grad, retain_graph=True)`` keeps the state, for gradient
  checks that need it twice; a layer without parameters, whose backward changes nothing, may be asked again);
- a module called several times within one forward (the same ``ReLU`` after every layer, a shared block)
  keeps each call's state on a stack, and the backwards, which run in reverse order, take them back in
  reverse order;
- a backward never runs on the activations of a different forward: if the model ran forward again (a look
  at another batch, say) after the forward whose output the gradient belongs to, backward raises and says
  how to take such a look without disturbing anything (``manualbp.no_grad()`` or ``model.eval()``);
- in eval mode and under ``manualbp.no_grad()`` a forward saves nothing: whatever an earlier training forward
  saved is left as it was (``manualbp.enable_grad()`` turns saving back on, as torch's does).

A ``Module`` whose class defines no ``backward`` but whose ``forward`` calls its child modules in a chain
(each call's output is the next call's input, as in ``x = self.model(x)``) gets a backward that replays
those calls in reverse (``replay_backward``): the chain rule (C2) one call at a time.
"""
import functools
import threading
import weakref

__all__ = ["enable_grad", "is_grad_enabled", "no_grad"]


class _Tape(threading.local):
    """Per thread: whether forwards save, the calls of the forwards under way, and the backward under way."""

    def __init__(self):
        self.grad_enabled = True
        self.forced = False  # enable_grad(): save even in eval mode
        self.frames = []  # one list per forward under way, collecting its direct child calls (or None)
        self.root_calls = 0  # counts the forwards called from outside any other forward
        self.backward_root = None  # the root forward a backward under way belongs to
        self.retain = False  # that backward's retain_graph
        self.origins = {}  # id(gradient array) -> (weakref to it, weakref to the output it is dL/d of)


TAPE = _Tape()


class no_grad:
    """``with manualbp.no_grad():`` forwards save nothing for backward (inference, a look at another batch).
    Also usable as a decorator, as torch's."""

    def __enter__(self):
        self._prev = TAPE.grad_enabled, TAPE.forced
        TAPE.grad_enabled, TAPE.forced = False, False

    def __exit__(self, *exc):
        TAPE.grad_enabled, TAPE.forced = self._prev
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)():
                return fn(*args, **kwargs)
        return wrapper


class enable_grad(no_grad):
    """``with manualbp.enable_grad():`` forwards save for backward, inside ``no_grad`` and in eval mode too."""

    def __enter__(self):
        self._prev = TAPE.grad_enabled, TAPE.forced
        TAPE.grad_enabled, TAPE.forced = True, True


def is_grad_enabled():
    """Whether a forward now saves what its backward needs (False under ``no_grad``)."""
    return TAPE.grad_enabled


def saves(module):
    """Does a forward of ``module`` save for backward now?"""
    return TAPE.forced or (TAPE.grad_enabled and module.training)


def snapshot(module):
    """The module's own attributes, as a forward left them (what backward reads)."""
    return dict(module.__dict__)


def restore(module, state):
    """Put the attributes back as ``snapshot`` took them (the stack of earlier calls' states stays)."""
    d = module.__dict__
    stack = d.get("_saved_stack")
    d.clear()
    d.update(state)
    d["_saved_stack"] = stack


def note_origin(grad, output):
    """Remember that ``grad`` is dL/d(``output``): a loss's backward says so, and the model's backward checks it
    against its own last output (a gradient made another way is taken to belong to the last forward)."""
    try:
        refs = (weakref.ref(grad), weakref.ref(output))
    except TypeError:
        return
    origins = TAPE.origins
    if len(origins) > 64:
        origins.clear()
    origins[id(grad)] = refs


def forget_origin(grad):
    """Drop the note ``note_origin`` made for this object (it is about to hold another gradient)."""
    TAPE.origins.pop(id(grad), None)


def origin_of(grad):
    refs = TAPE.origins.get(id(grad))
    if refs is None or refs[0]() is not grad:
        return None
    return refs[1]()


class SavedStateError(ValueError, RuntimeError):
    """A backward that would use activations other than its own forward's (or none at all).  A ValueError (a
    call made in the wrong order) and a RuntimeError (what torch raises for a second backward) alike."""


def _who(module):
    return type(module).__name__


def checked_backward(backward):
    """Wrap a class's ``backward`` with the bookkeeping above (``Module.__init_subclass__`` does it)."""
    @functools.wraps(backward)
    def wrapper(self, *args, retain_graph=False, **kwargs):
        d = self.__dict__
        if d.get("_in_backward"):  # a subclass's backward calling super().backward: already accounted for
            return backward(self, *args, **kwargs)
        if not d.get("_pending", 0) and not _may_repeat(d):
            raise SavedStateError(_nothing_saved_message(self))
        outer = TAPE.backward_root
        if outer is None:  # the backward a user called: check the gradient belongs to the last forward
            if args:
                _check_origin(self, args[0])
            TAPE.backward_root, TAPE.retain = d.get("_root_id"), retain_graph
        elif d.get("_root_id") != outer:
            raise SavedStateError(
                f"{_who(self)}.backward(): this module ran forward again (called on its own, outside the forward "
                f"being backpropagated) after that forward, so its saved activations are no longer that forward's. "
                f"Take such a look under `with manualbp.no_grad():` or in eval mode, or call backward first")
        d["_in_backward"] = True
        retain = TAPE.retain  # the backward a user called decides, for every module it reaches
        try:
            result = backward(self, *args, **kwargs)
        finally:
            d["_in_backward"] = False
            if outer is None:
                TAPE.backward_root, TAPE.retain = None, False
        if not retain:
            stack = d.get("_saved_stack")
            if stack:  # the module was called more than once in that forward: the earlier call's state is next
                restore(self, stack.pop())
            else:  # used up: a second backward would add into .grad twice (see _may_repeat for the exception)
                d["_pending"] = 0
        return result
    wrapper.__wrapped_backward__ = backward
    return wrapper


def _may_repeat(d):
    """May a used-up state serve another backward?  Only for a layer that owns no parameters and no child
    modules (which may own some): its backward changes nothing (the derivations' checks run one twice, to
    print and then assert), and it keeps its saved values until the next forward.  Asked only on that path,
    so an ordinary backward pays nothing for it."""
    return (d.get("_ever_saved", False) and not d.get("_modules")
            and not any(p is not None for p in d.get("_parameters", {}).values()))


def _check_origin(module, grad):
    out = origin_of(grad)
    last = module.__dict__.get("_root_out")
    if out is None or last is None:
        return
    if last() is not out:
        raise SavedStateError(
            f"{_who(module)}.backward(): the gradient belongs to an earlier forward's output, but the module ran "
            f"forward again since (a look at another batch?), and it keeps one forward's activations: backward "
            f"would compute with the later one's. Take the look under `with manualbp.no_grad():` or after "
            f"model.eval(), or call backward before the next forward")


def _nothing_saved_message(module):
    d = module.__dict__
    if d.get("_ever_saved"):
        return (f"{_who(module)}.backward() called twice for one forward: the first backward used what that "
                f"forward saved (as torch frees its graph). Run forward again, or pass retain_graph=True to the "
                f"first backward to keep the saved state")
    if d.get("_ever_called"):
        return (f"{_who(module)}.backward(): the forward ran in eval mode or under manualbp.no_grad(), which save "
                f"nothing for backward; call model.train() (or use manualbp.enable_grad()) for a forward you "
                f"want to backpropagate")
    return (f"{_who(module)}.backward() called before forward(): it needs what forward() saves; call the module "
            f"on a batch first")


def replay_backward(module, grad_output):
    """The backward of a Module whose class wrote none: its forward's child calls, replayed in reverse.

    Each call of the recorded chain took the previous call's output as its input; the chain rule (C2) then
    says dL/d(input of call k) = backward of call k applied to dL/d(output of call k)."""
    calls = module.__dict__.get("_calls")
    io = module.__dict__.get("_io")
    if calls is None or io is None or not _is_chain(calls, io):
        raise TypeError(_write_your_backward(module, calls or []))
    grad = grad_output
    for child, _, _ in reversed(calls):
        grad = child.backward(grad)
    return grad


def _is_chain(calls, io):
    if not calls:
        return False
    first_input, output = io
    if calls[0][1] is not first_input or calls[-1][2] is not output:
        return False
    return all(calls[k][1] is calls[k - 1][2] for k in range(1, len(calls)))


def _write_your_backward(module, calls):
    names = {id(m): n for n, m in module.named_children()}
    lines = [f"    grad = self.{names.get(id(c), type(c).__name__)}.backward(grad)" for c, _, _ in reversed(calls)]
    body = "\n".join(lines) if lines else "    grad = ...  # dL/d(input) from dL/d(output), by the chain rule"
    return (f"{_who(module)} does not define backward(), and its forward is not a chain of child-module calls "
            f"(each call's output the next call's input, with nothing done in between), so it cannot be replayed "
            f"in reverse. Write the backward yourself, undoing forward's steps in reverse order; for example:\n\n"
            f"def backward(self, grad_output):\n    grad = grad_output\n{body}\n    return grad\n\n"
            f"(where forward uses a value twice, add the two gradients; derivations/01-chain-rule.md, (C3))")
