"""The learning-rate schedule: a function epoch -> lr that ``fit`` sets at the start of every epoch."""
import math


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
