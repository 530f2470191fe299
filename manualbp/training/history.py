"""What a run records: one row per epoch and the loss of every step (``History``)."""
import csv
import json

EPOCH_FIELDS = ("epoch", "train_loss", "running_loss", "train_accuracy", "val_loss", "val_accuracy",
                "seconds", "images_per_sec", "lr")


class History:
    """What ``fit`` records: one row per epoch (``epochs``) and the loss of every step (``steps``).

    ``history["val_accuracy"]`` is that column over the epochs.  ``to_dict``/``from_dict`` make it
    JSON (it travels inside every checkpoint); ``write_csv``/``write_json`` save it.
    """

    def __init__(self, epochs=None, steps=None):
        self.epochs = list(epochs or [])
        self.steps = list(steps or [])

    def __getitem__(self, key):
        return [row.get(key) for row in self.epochs]

    def __len__(self):
        return len(self.epochs)

    def to_dict(self):
        return {"epochs": self.epochs, "steps": self.steps}

    @classmethod
    def from_dict(cls, d):
        d = d or {}
        return cls(d.get("epochs"), d.get("steps"))

    def write_json(self, path):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)

    def write_csv(self, path):
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=EPOCH_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for row in self.epochs:
                writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in EPOCH_FIELDS})

    def __repr__(self):
        return f"History({len(self.epochs)} epochs, {len(self.steps)} steps)"
