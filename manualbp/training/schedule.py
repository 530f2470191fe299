"""The learning-rate schedule: a function epoch -> lr that ``fit`` sets at the start of every epoch, or a torch-style
scheduler object (``manualbp.optim.lr_scheduler``) that ``fit`` steps and checkpoints."""
import math
from collections import Counter


def set_lr(optimizer, lr_schedule, epoch):
    """Set ``lr_schedule(epoch)`` on every parameter group (nothing without a schedule)."""
    if lr_schedule is not None:
        for group in optimizer.param_groups:
            group["lr"] = float(lr_schedule(epoch))


def cosine_lr(lr, epochs, min_lr=0.0):
    """A schedule for ``fit(lr_schedule=...)``: ``lr`` at epoch 1, falling along half a cosine towards
    ``min_lr`` after the last epoch (``CosineAnnealingLR`` stepped once per epoch).

    ``epochs`` is the length of the whole run.  A run resumed with more epochs than that keeps the last
    epoch's rate (the cosine never climbs back), and ``fit`` goes on with the schedule the run began with,
    which every checkpoint records (``schedule.config``).
    """
    def schedule(epoch):
        e = min(epoch, epochs)
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * (e - 1) / epochs))
    schedule.config = {"name": "cosine", "lr": lr, "epochs": epochs, "min_lr": min_lr}
    return schedule


def schedule_config(lr_schedule):
    """The settings a checkpoint keeps of a schedule (None for a schedule that has none to give)."""
    config = getattr(lr_schedule, "config", None)
    return dict(config) if isinstance(config, dict) else None


def resumed_schedule(lr_schedule, saved, epochs, log):
    """The schedule a resumed run goes on with: for a cosine, the one the run began with (``saved``), so that
    ``epochs`` larger than at the start neither restarts nor stretches it; any other schedule as given."""
    config = schedule_config(lr_schedule)
    if not saved or config is None or saved.get("name") != "cosine" or config.get("name") != "cosine":
        return lr_schedule
    restored = cosine_lr(saved["lr"], saved["epochs"], saved.get("min_lr", 0.0))
    if config != saved:
        note = (f"; from epoch {saved['epochs'] + 1} on it keeps its last rate, {restored(saved['epochs']):.6g}"
                if epochs is not None and epochs > saved["epochs"] else "")
        log.say(f"The learning rate goes on along the cosine the run began with (lr {saved['lr']:g} over "
                f"{saved['epochs']} epochs){note}")
    return restored


# --- a torch-style scheduler object (manualbp.optim.lr_scheduler) -----------------------------------------

def check_scheduler(scheduler, optimizer, lr_schedule, who):
    """``scheduler`` as fit takes it: None, or a manualbp.optim.lr_scheduler scheduler of ``optimizer``."""
    if scheduler is None:
        return None
    from ..optim.lr_scheduler import LRScheduler
    if not isinstance(scheduler, LRScheduler):
        raise TypeError(f"{who}: expected scheduler to be a manualbp.optim.lr_scheduler scheduler, e.g. "
                        f"lr_scheduler.StepLR(optimizer, step_size=10), got {type(scheduler).__name__}")
    if scheduler.optimizer is not optimizer:
        raise ValueError(f"{who}: the scheduler was built for another optimizer; build it from the optimizer "
                         f"given to fit: lr_scheduler.{type(scheduler).__name__}(optimizer, ...)")
    if lr_schedule is not None:
        raise ValueError(f"{who}: give either lr_schedule (a function epoch -> lr) or scheduler, not both")
    return scheduler


def steps_per_batch(scheduler):
    """True for a scheduler stepped after every batch (OneCycleLR), False for one stepped once per epoch."""
    from ..optim.lr_scheduler import OneCycleLR
    return isinstance(scheduler, OneCycleLR)


def step_after_epoch(scheduler, row):
    """Move an epoch-wise scheduler on, after the epoch's validation: ReduceLROnPlateau reads the validation
    loss (the training loss without validation data); OneCycleLR has moved on after every batch already."""
    from ..optim.lr_scheduler import ReduceLROnPlateau
    if scheduler is None or steps_per_batch(scheduler):
        return
    if isinstance(scheduler, ReduceLROnPlateau):
        metric = row.get("val_loss")
        scheduler.step(metric if metric is not None else row["train_loss"])
    else:
        scheduler.step()


def scheduler_state(scheduler):
    """The scheduler's state_dict in JSON (a checkpoint's header): MultiStepLR's Counter of milestones as pairs."""
    if scheduler is None:
        return None
    state = {}
    for key, value in scheduler.state_dict().items():
        state[key] = {"__counter__": sorted(value.items())} if isinstance(value, Counter) else value
    return {"type": type(scheduler).__name__, "state": state}


def load_scheduler_state(scheduler, saved, path):
    """Restore what ``scheduler_state`` wrote into ``scheduler`` (of the same type)."""
    if saved.get("type") != type(scheduler).__name__:
        raise ValueError(f"checkpoint {path!r} holds the state of a {saved.get('type')}; cannot load it into "
                         f"{type(scheduler).__name__}")
    state = {key: Counter({int(k): n for k, n in value["__counter__"]})
             if isinstance(value, dict) and "__counter__" in value else value
             for key, value in saved["state"].items()}
    scheduler.load_state_dict(state)
