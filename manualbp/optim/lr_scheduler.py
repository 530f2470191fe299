"""Learning-rate schedules with torch.optim.lr_scheduler's names, signatures, arithmetic and state_dict.

Derivation: derivations/13-lr-schedules.md

Each scheduler writes ``group["lr"]`` of every parameter group of its optimizer when ``step()`` is called
(once per epoch, or once per batch for OneCycleLR), exactly as torch's: the same recursive updates (each lr
computed from the last one, (T2), (T5), (T8)), so the sequences agree to the last bit, and the same
``state_dict`` keys, so a torch scheduler's state loads into ours and ours into torch's.  Pure Python: the
learning rate is a host float the optimizers read at every step.

    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    for epoch in range(100):
        train(...)           # optimizer.step() for every batch
        scheduler.step()     # then the schedule moves on one epoch
"""
import math
import numbers
import warnings
from bisect import bisect_right
from collections import Counter

from .optimizer import Optimizer

__all__ = ["CosineAnnealingLR", "ExponentialLR", "LRScheduler", "LinearLR", "MultiStepLR", "OneCycleLR",
           "ReduceLROnPlateau", "StepLR"]

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` was not necessary and is being deprecated where possible. "
    "Please use `scheduler.step()` to step the scheduler. During the deprecation, if epoch is different from "
    "None, the closed form is used instead of the new chainable form, where available. Please open an issue if "
    "you are unable to replicate your use case: https://github.com/pytorch/pytorch/issues/new/choose."
)


def _check_optimizer(optimizer, who):
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"{who}: {type(optimizer).__name__} is not an Optimizer (expected a manualbp.optim "
                        f"optimizer, e.g. optim.SGD(model.parameters(), lr=0.1))")


def _number(value, who, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{who}: expected {name} to be a finite number, got {value!r}")
    return value


def _positive_int(value, who, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{who}: expected {name} to be a positive integer, got {value!r}")
    return int(value)


class LRScheduler:
    """What every schedule shares (torch's ``LRScheduler``): ``base_lrs`` (each group's ``initial_lr``),
    ``last_epoch`` (steps taken; 0 after construction), ``step()``, ``get_last_lr()``, ``state_dict()``.

    Building a scheduler with ``last_epoch=-1`` records each group's lr as ``initial_lr`` and takes the
    first step, which sets the lr of epoch 0.  With ``last_epoch >= 0`` (resuming) the groups must hold
    ``initial_lr`` already, as torch requires.
    """

    def __init__(self, optimizer, last_epoch=-1):
        who = type(self).__name__
        _check_optimizer(optimizer, who)
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, numbers.Integral) or last_epoch < -1:
            raise ValueError(f"{who}: expected last_epoch to be an integer >= -1, got {last_epoch!r}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming "
                                   f"scheduler with last_epoch >= 0 (load the optimizer's state_dict first, or "
                                   f"leave last_epoch=-1 for a fresh run)")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = int(last_epoch)
        self._get_lr_called_within_step = False
        self._step_count = 0
        self._is_initial = True  # the first step, taken here, keeps or sets epoch 0's rate
        try:
            self.step()
        finally:
            self._is_initial = False

    def get_lr(self):
        """The rates of epoch ``last_epoch``, computed from the current ones (torch's chainable form)."""
        raise NotImplementedError(f"{type(self).__name__} does not define get_lr(): a scheduler subclass says how "
                                  f"the rates of epoch last_epoch follow from the current ones")

    def get_last_lr(self):
        """The learning rate of every group, as the last ``step()`` set it."""
        return self._last_lr

    def step(self, epoch=None):
        """Move on one epoch (or batch) and write the new rate into every parameter group.  ``epoch`` is
        torch's deprecated argument: jump to that epoch (the closed form is used where there is one)."""
        self._step_count += 1
        self._get_lr_called_within_step = True
        try:
            if epoch is None:
                self.last_epoch += 1
                values = self.get_lr()
            else:
                warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
                self.last_epoch = epoch
                values = (self._get_closed_form_lr() if hasattr(self, "_get_closed_form_lr") else self.get_lr())
        finally:
            self._get_lr_called_within_step = False
        for group, lr in zip(self.optimizer.param_groups, values):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        """Every attribute but the optimizer, under torch's names (so torch's state_dict loads here and back)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore what ``state_dict`` returned (ours or torch's); the optimizer's own lr comes with its state."""
        if not isinstance(state_dict, dict):
            raise TypeError(f"{type(self).__name__}.load_state_dict: expected a dict, got {type(state_dict).__name__}")
        self.__dict__.update(state_dict)

    def _lrs(self):
        return [group["lr"] for group in self.optimizer.param_groups]


class StepLR(LRScheduler):
    """lr_e = lr_0 * gamma ** (e // step_size): the rate falls by gamma every step_size epochs.  (T1), (T2)"""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_optimizer(optimizer, "StepLR")
        self.step_size = _positive_int(step_size, "StepLR", "step_size")
        self.gamma = _number(gamma, "StepLR", "gamma")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return self._lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]  # (T2)

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** (self.last_epoch // self.step_size) for base_lr in self.base_lrs]  # (T1)


class MultiStepLR(LRScheduler):
    """lr_e = lr_0 * gamma ** (number of milestones <= e): the rate falls by gamma at each milestone.  (T3)"""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        _check_optimizer(optimizer, "MultiStepLR")
        try:
            milestones = list(milestones)
        except TypeError:
            raise TypeError(f"MultiStepLR: expected milestones to be a list of epochs, got {milestones!r}") from None
        for m in milestones:
            if isinstance(m, bool) or not isinstance(m, numbers.Integral):
                raise TypeError(f"MultiStepLR: expected milestones to be integers, got {m!r}")
        self.milestones = Counter(int(m) for m in milestones)
        self.gamma = _number(gamma, "MultiStepLR", "gamma")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self.last_epoch not in self.milestones:
            return self._lrs()
        return [group["lr"] * self.gamma ** self.milestones[self.last_epoch]
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        milestones = sorted(self.milestones.elements())
        return [base_lr * self.gamma ** bisect_right(milestones, self.last_epoch) for base_lr in self.base_lrs]


class ExponentialLR(LRScheduler):
    """lr_e = lr_0 * gamma ** e, computed as lr_e = lr_{e-1} * gamma.  (T4), (T5)"""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        _check_optimizer(optimizer, "ExponentialLR")
        self.gamma = _number(gamma, "ExponentialLR", "gamma")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        if self._is_initial:
            return self._lrs()
        return [group["lr"] * self.gamma for group in self.optimizer.param_groups]  # (T5)

    def _get_closed_form_lr(self):
        return [base_lr * self.gamma ** self.last_epoch for base_lr in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
    """lr_e = eta_min + (lr_0 - eta_min) (1 + cos(pi e / T_max)) / 2, half a cosine from lr_0 down to eta_min
    over T_max epochs (T6), computed as torch does, from the last rate (T7), (T8).  Past T_max it climbs back
    up (torch's cosine is periodic, period 2 T_max)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        _check_optimizer(optimizer, "CosineAnnealingLR")
        self.T_max = _positive_int(T_max, "CosineAnnealingLR", "T_max")
        self.eta_min = _number(eta_min, "CosineAnnealingLR", "eta_min")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        e, t_max, eta_min = self.last_epoch, self.T_max, self.eta_min
        if self._is_initial:
            return self._lrs()
        if self._step_count == 1 and e > 0:  # built with last_epoch > 0: the closed form (T6)
            return [eta_min + (base_lr - eta_min) * (1 + math.cos(e * math.pi / t_max)) / 2
                    for base_lr in self.base_lrs]
        if (e - 1 - t_max) % (2 * t_max) == 0:  # leaving the bottom, where (T8) would divide by zero (T7)
            return [group["lr"] + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
                    for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)]
        return [(1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max))  # (T8)
                * (group["lr"] - eta_min) + eta_min for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        return [self.eta_min + (base_lr - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
                for base_lr in self.base_lrs]


class LinearLR(LRScheduler):
    """lr_e = lr_0 * (s + (f - s) min(e, total_iters) / total_iters): a warm-up (or cool-down) along a line from
    start_factor s to end_factor f, computed from the last rate (T9), (T10)."""

    def __init__(self, optimizer, start_factor=1.0 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        _check_optimizer(optimizer, "LinearLR")
        _number(start_factor, "LinearLR", "start_factor")
        _number(end_factor, "LinearLR", "end_factor")
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError("LinearLR: Starting multiplicative factor expected to be greater than 0 and less or "
                             f"equal to 1 (got start_factor={start_factor}).")
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError(f"LinearLR: Ending multiplicative factor expected to be between 0 and 1 (got "
                             f"end_factor={end_factor}).")
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = _positive_int(total_iters, "LinearLR", "total_iters")
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        s, f, n, e = self.start_factor, self.end_factor, self.total_iters, self.last_epoch
        if e == 0:
            return [group["lr"] * s for group in self.optimizer.param_groups]
        if self._is_initial or e > n:
            return self._lrs()
        return [group["lr"] * (1.0 + (f - s) / (n * s + (e - 1) * (f - s)))  # (T10)
                for group in self.optimizer.param_groups]

    def _get_closed_form_lr(self):
        s, f, n = self.start_factor, self.end_factor, self.total_iters
        return [base_lr * (s + (f - s) * min(n, self.last_epoch) / n) for base_lr in self.base_lrs]  # (T9)


from .lr_scheduler_cycle import OneCycleLR, ReduceLROnPlateau  # (they build on LRScheduler above)
