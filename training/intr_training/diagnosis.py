"""Say it when training stalls: a plateau at the level of look-alike groups, a flat loss, or a
loss that rises (instability), read from the epochs so far and the validation confusion matrix.

INTR stalls in a recognisable way (its tracker's "loss is not decreasing", Imageomics/INTR #11):
the queries learn to tell look-alike GROUPS apart (body plan, colours) long before the small trait
that tells the species within a group apart, and the loss then sits at about the mean log of the
group sizes. The confusion matrix shows it: the validation errors fall within sets of classes
that are confused with each other and with nothing else. `Watch` is fed every epoch by the
training run, which reports a new or changed diagnosis as it happens and the last one at the end;
the run itself goes on and ends normally.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

PATIENCE = 3          # epochs without progress before a plateau is called
MIN_GAIN = 0.02       # a validation-accuracy gain smaller than this is no progress
FLAT_LOSS = 0.03      # the loss is flat when PATIENCE epochs lowered it by less than this fraction
RISE = 0.10           # the loss is rising when it is this fraction above its best and went up last epoch,
RISE_FLOOR = 0.05     # and at least this much (nats) above it: near zero a loss moves by many times itself
# as noise (a judge draw ended at 1.00 validation accuracy with 0.0003 -> 0.016 and was called unstable)
GOOD_ENOUGH = 0.95    # at or above this accuracy (validation, else training) nothing is reported
LINK_SHARE = 0.10     # two classes are confused when this share of either's images is named as the other
WITHIN_SHARE = 0.80   # a group plateau: at least this share of the errors fall within confused groups
SHOWN_GROUPS = 4      # groups named in a message; the event carries all of them

# What to do, as measured on the look-alike draws of benchmarks/recipe_robustness.py (benchmarks/
# RESULTS.md, issue 27). A run still climbing when it ends was short of updates (tune draw 100: twice
# the updates took it from 0.88 to 0.97). A run that plateaus early did not move for anything tried
# on tune draw 111 (0.73-0.78 whatever was changed: 24 epochs, twice the rate, half the batch, 160 px
# instead of 128, twice the images, bf16, shift-and-scale augmentation), but --backbone-epochs 12 took
# it to 0.997, and judge draw 0 from 0.614 to 0.97 (backbone_stage.py).
SLOW_GROUP_ADVICE = ("The classes of a group differ in a small trait the model was still learning. Give it more "
                     "updates: continue the run with the same command plus --resume --epochs 24 (the learning "
                     "rate is planned anew over the longer run).")
GROUP_ADVICE = ("The classes of a group differ in a small trait the model has not found. Where runs stalled like "
                "this in our tests, neither more epochs (24), another learning rate or batch size, a larger "
                "--image-size (160 for 128 px) nor twice the training images found it, but training the backbone "
                "alone first did: start a new run (another --out) with --backbone-epochs 12 (the Fine-tune "
                "dock's Backbone alone first; it needs a backbone that is not frozen). If that stalls too, look "
                "at a few training images at --image-size to see whether the trait is visible there. If the "
                "accuracy is still rising when the run ends, --resume --epochs 24 gives it more updates.")
FLAT_ADVICE = ("Continue the run with the same command plus --resume --epochs 24; if the loss stays flat, "
               "check that the classes differ in something visible at --image-size.")
UNSTABLE_ADVICE = "The learning rate is too high for this collection: start again with a lower --lr (e.g. half)."


@dataclass(frozen=True)
class Diagnosis:
    kind: str      # "group_plateau", "plateau", "flat_loss" or "unstable"
    epoch: int     # the epoch it was found at
    message: str
    groups: list[list[str]] = field(default_factory=list)  # the confused look-alike groups

    def as_event(self) -> dict:
        return asdict(self)


def confused_groups(confusion, class_names: list[str]) -> list[list[str]]:
    """Sets of classes linked by confusion (rows: true class, columns: predicted class): i and j
    are linked when at least LINK_SHARE of i's images are named j, or of j's named i."""
    rows = [[float(v) for v in row] for row in confusion.tolist()] if hasattr(confusion, "tolist") else confusion
    count = len(rows)
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    totals = [sum(row) for row in rows]
    for i in range(count):
        for j in range(count):
            if i != j and rows[i][j] > 0 and rows[i][j] >= LINK_SHARE * totals[i]:
                parent[root(i)] = root(j)
    members: dict[int, list[int]] = {}
    for i in range(count):
        members.setdefault(root(i), []).append(i)
    groups = [sorted(m) for m in members.values() if len(m) > 1]
    # the group with the most errors first
    groups.sort(key=lambda g: -sum(rows[i][j] for i in g for j in g if i != j))
    return [[class_names[i] for i in g] for g in groups]


def within_share(confusion, class_names: list[str], groups: list[list[str]]) -> float:
    """The share of all errors whose true and predicted class lie in the same group."""
    rows = confusion.tolist() if hasattr(confusion, "tolist") else confusion
    group_of = {class_names.index(name): k for k, group in enumerate(groups) for name in group}
    errors = within = 0.0
    for i, row in enumerate(rows):
        for j, value in enumerate(row):
            if i != j:
                errors += value
                within += value if i in group_of and group_of[i] == group_of.get(j) else 0
    return within / errors if errors else 0.0


def _named(groups: list[list[str]]) -> str:
    shown = "; ".join("{" + ", ".join(group) + "}" for group in groups[:SHOWN_GROUPS])
    return shown + (f" and {len(groups) - SHOWN_GROUPS} more" if len(groups) > SHOWN_GROUPS else "")


def diagnose(history: list[dict], confusion=None, class_names: list[str] | None = None,
             at_end: bool = False) -> Diagnosis | None:
    """The state of a run after the epochs in `history` (rows with "epoch", "loss", "train_acc",
    "val_acc"); confusion: the last epoch's validation confusion matrix (None without validation).
    at_end: the run is over, so a slow climb that ends with the errors within look-alike groups is
    reported too (it did not find the trait in this run, plateau or not)."""
    if len(history) <= PATIENCE:
        return None
    epoch = history[-1]["epoch"]
    losses = [row["loss"] for row in history]
    best_loss = min(losses[:-1])
    if losses[-1] > max(best_loss * (1 + RISE), best_loss + RISE_FLOOR) and losses[-1] > losses[-2]:
        best_at = history[losses.index(best_loss)]["epoch"]
        return Diagnosis("unstable", epoch, f"instability: the training loss is rising ({best_loss:.3f} at epoch "
                                            f"{best_at}, {losses[-1]:.3f} now), not a plateau. {UNSTABLE_ADVICE}")
    accuracies = [row["val_acc"] for row in history]
    validated = all(a is not None for a in accuracies)
    accuracy = accuracies[-1] if validated else history[-1]["train_acc"]
    if accuracy >= GOOD_ENOUGH:
        return None
    flat = losses[-1] > losses[-1 - PATIENCE] * (1 - FLAT_LOSS)
    stalled = max(accuracies[-PATIENCE:]) < max(accuracies[:-PATIENCE]) + MIN_GAIN if validated else flat
    if not (stalled or at_end):
        return None
    since = history[-1 - PATIENCE]["epoch"]
    what = "validation" if validated else "training"
    groups = group_level(confusion, class_names) if validated else []
    if not stalled:
        if not groups:
            return None
        # still climbing when the run ended, but too slowly to reach the species in it (issue 27:
        # a tune draw went 0.70 -> 0.74 over its last 3 epochs, its errors all within one group)
        trend = (f"{what} accuracy {accuracy:.2f} at the end, {accuracy - accuracies[-1 - PATIENCE]:+.2f} since "
                 f"epoch {since}; loss {losses[-1 - PATIENCE]:.3f} → {losses[-1]:.3f}")
        return _group_level(epoch, f"a slow climb, ended at the level of look-alike groups ({trend})", groups,
                            SLOW_GROUP_ADVICE)
    trend = (f"{what} accuracy {accuracy:.2f}, no gain since epoch {since}; loss "
             f"{losses[-1 - PATIENCE]:.3f} → {losses[-1]:.3f}{' (flat)' if flat else ''}")
    if groups:
        return _group_level(epoch, f"plateau at the level of look-alike groups ({trend})", groups, GROUP_ADVICE)
    kind = "flat_loss" if flat else "plateau"
    return Diagnosis(kind, epoch, f"{'flat loss' if flat else 'plateau'} ({trend}). {FLAT_ADVICE}")


def _group_level(epoch: int, state: str, groups: list[list[str]], advice: str) -> Diagnosis:
    return Diagnosis("group_plateau", epoch, f"{state}: the model tells the groups apart but confuses the classes "
                                             f"within {_named(groups)}. {advice}", groups)


def group_level(confusion, class_names: list[str] | None) -> list[list[str]]:
    """The confused look-alike groups when the errors lie within them (WITHIN_SHARE), else []."""
    if confusion is None or not class_names:
        return []
    groups = confused_groups(confusion, class_names)
    # a "group" of every class is no group level: the model then tells nothing apart
    if groups and max(map(len, groups)) < len(class_names) \
            and within_share(confusion, class_names, groups) >= WITHIN_SHARE:
        return groups
    return []


class Watch:
    """Fed after every epoch; `update` returns a diagnosis when one is new or changed (to report
    as it happens), `final` the run's state at its end (None: it ended healthy)."""

    def __init__(self):
        self.current: Diagnosis | None = None
        self.last: tuple = ()  # what the last update saw, for `final`

    def update(self, history: list[dict], confusion=None, class_names: list[str] | None = None) -> Diagnosis | None:
        self.last = (list(history), confusion, class_names)
        found = diagnose(history, confusion, class_names)
        previous, self.current = self.current, found
        if found is None or (previous is not None and (previous.kind, previous.groups) == (found.kind, found.groups)):
            return None
        return found

    def final(self) -> Diagnosis | None:
        """The state the run ended in: the current diagnosis, or a slow climb that ended at the
        level of look-alike groups (`diagnose(at_end=True)`)."""
        if self.current is None and self.last:
            return diagnose(*self.last, at_end=True)
        return self.current
