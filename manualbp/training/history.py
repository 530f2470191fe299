"""What a run records: one row per epoch, the loss of every step, and the gradient flow (``History``)."""
import csv
import json

from .gradients import GRADIENT_FIELDS

EPOCH_FIELDS = ("epoch", "train_loss", "running_loss", "train_accuracy", "val_loss", "val_accuracy",
                "seconds", "images_per_sec", "lr")


class History:
    """What ``fit`` records: one row per epoch (``epochs``), the loss of every step (``steps``) and the
    gradient flow (``gradients``).

    ``history["val_accuracy"]`` is that column over the epochs.  ``to_dict``/``from_dict`` make it
    JSON (it travels inside every checkpoint); ``write_csv``/``write_json`` save it.

    ``gradients`` (``fit(record_gradients="epoch")``, the default, or ``"step"``) is a list of rows, one
    per parameter per measured step, with the fields of ``GRADIENT_FIELDS``:

        epoch         the epoch of the step
        step          the step's number in the whole run (1-based, as in ``steps``)
        param         the parameter's state_dict name ("0.weight")
        grad_norm     ||w.grad|| at that step (what backward() left, before the optimizer's weight decay)
        weight_norm   ||w|| before the step (the weights the gradient was computed at)
        update_ratio  ||w_after - w_before|| / ||w_before|| (None when ||w_before|| = 0)

    With ``"epoch"`` the measured step is the last step of each epoch (not a mean over the epoch: one
    copy of the weights per epoch is all it costs); with ``"step"``, every step.  A parameter without a
    gradient at that step has None in the last three.  ``gradient_series(param, field)`` gives one
    parameter's column; ``write_gradients_csv`` saves the rows (``gradients.csv``).  A checkpoint written
    before this field existed loads with no rows.
    """

    def __init__(self, epochs=None, steps=None, gradients=None):
        self.epochs = list(epochs or [])
        self.steps = list(steps or [])
        self.gradients = list(gradients or [])

    def __getitem__(self, key):
        return [row.get(key) for row in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def to_dict(self):
        return {"epochs": self.epochs, "steps": self.steps, "gradients": self.gradients}

    @classmethod
    def from_dict(cls, d):
        d = d or {}
        return cls(d.get("epochs"), d.get("steps"), d.get("gradients"))

    def gradient_params(self):
        """The names of the parameters in ``gradients``, in the order they were first recorded."""
        return list(dict.fromkeys(row["param"] for row in self.gradients))

    def gradient_series(self, param, field="grad_norm"):
        """``(steps, values)`` of one parameter's ``field`` over the measured steps (``values`` may hold None)."""
        if field not in GRADIENT_FIELDS[3:]:
            raise ValueError(f"History.gradient_series: field must be one of {GRADIENT_FIELDS[3:]}, got {field!r}")
        rows = [row for row in self.gradients if row["param"] == param]
        return [row["step"] for row in rows], [row[field] for row in rows]

    def write_json(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    def write_csv(self, path):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in self.epochs:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in EPOCH_FIELDS})

    def write_gradients_csv(self, path):
        """The ``gradients`` rows as CSV, one line per parameter per measured step (None as an empty cell)."""
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=GRADIENT_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in self.gradients:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in GRADIENT_FIELDS})

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, {len(self.steps)} steps)"
