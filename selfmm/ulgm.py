"""ULGM, the unimodal label generation module (Yu et al., AAAI 2021, "ULGM"): no parameters, only bookkeeping.

For each task s in M (fusion), T, A, V it keeps one feature row per training clip (the clip's latest F_s)
and one label per clip. The M labels are the human labels and never change. The T/A/V labels start as the
human label and, from epoch 2 on, move towards labels generated from where a clip's unimodal feature sits
between that modality's positive and negative class centres, relative to where its fusion feature sits
between the fusion centres.

Per training batch the trainer calls ``targets`` (labels for the loss, before any update) and, after the
backward pass, ``step``: update this batch's labels (epoch > 1) with the centres of the previous batch,
write the batch's features into the memory, recompute all centres.

How a relative position becomes a label is the ``LabelRule`` (selfmm/config.py): the reference's formula, or one
of two variants that put the positions on the label's scale (``scale_aware``, ``centre_normalised``).
"""

from __future__ import annotations

import torch

from features.types import TASKS, UNIMODAL
from selfmm.config import LabelRule

EPS = 1e-8


def class_centres(
    memory: torch.Tensor, labels: torch.Tensor, exclude_zero: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Means of the memory rows with a positive and with a negative label.

    Positive is ``label >= 0`` as in the reference trainer; ``exclude_zero`` makes it ``> 0`` (MMSA v2),
    so clips labelled exactly 0 join neither centre. An empty class gives a zero centre (the reference
    would give NaN and break training; it cannot happen once both signs are present).
    """
    pos = (labels > 0 if exclude_zero else labels >= 0).to(memory.dtype)
    neg = (labels < 0).to(memory.dtype)
    return (pos @ memory) / pos.sum().clamp(min=1), (neg @ memory) / neg.sum().clamp(min=1)


def relative_distance(features: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """(d_neg - d_pos) / d_pos per row, with plain Euclidean distances: > 0 means nearer the positive centre."""
    d_pos = (features - pos).norm(dim=-1)
    d_neg = (features - neg).norm(dim=-1)
    return (d_neg - d_pos) / (d_pos + EPS)


def centre_position(features: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """(d_neg - d_pos) / |pos - neg| per row: +1 at the positive centre, -1 at the negative one, and never beyond
    +-1 (triangle inequality). The reference's commented-out alternative to ``relative_distance``: bounded, where
    dividing by d_pos explodes for a row near the positive centre."""
    d_pos = (features - pos).norm(dim=-1)
    d_neg = (features - neg).norm(dim=-1)
    return (d_neg - d_pos) / ((pos - neg).norm() + EPS)


def generated_label(y_m: torch.Tensor, delta_s: torch.Tensor, delta_m: torch.Tensor, H: float) -> torch.Tensor:
    """Half the ratio hypothesis y_m * delta_s / delta_m plus half the difference hypothesis
    y_m + delta_s - delta_m, clamped to [-H, H] (the only guard against delta_m near 0)."""
    ratio = y_m * delta_s / (delta_m + EPS)
    difference = y_m + delta_s - delta_m
    return (0.5 * ratio + 0.5 * difference).clamp(-H, H)


def standardised(values: torch.Tensor, population: torch.Tensor) -> torch.Tensor:
    """``values`` in standard deviations from the mean of ``population``."""
    return (values - population.mean()) / (population.std() + EPS)


def scale_aware_label(
    y_m: torch.Tensor, z_s: torch.Tensor, z_m: torch.Tensor, label_std: float, H: float
) -> torch.Tensor:
    """The difference hypothesis on the label's scale: y_m + sd(y) * (z_s - z_m), clamped to [-H, H].

    Why: the reference adds ``delta_s - delta_m`` (distance ratios) to a label. The two deltas come from
    different feature spaces with different spreads, and neither is in label units, so on labels in [-1, 1] a
    typical |delta_m| much larger than |delta_s| makes ``y_m - delta_m`` flip every small label's sign, and on
    [-3, 3] the same features move the labels three times less. Here each modality's position between its
    centres is first measured in standard deviations over the whole feature memory (``z``: scale-free, the same
    spread for every modality), and the difference of positions is turned into label units with the spread of
    the human labels: a clip whose audio sits one standard deviation more positive than its fusion does gets an
    audio label one label-standard-deviation above y_m. The ratio hypothesis is left out: y_m * z_s / z_m
    has no bound when the fusion feature sits at the mean (z_m = 0), which is where most labels are.
    """
    return (y_m + label_std * (z_s - z_m)).clamp(-H, H)


def momentum_update(old: torch.Tensor, new: torch.Tensor, epoch: int) -> torch.Tensor:
    """y <- (n-1)/(n+1) y + 2/(n+1) y_new at epoch n >= 2: over epochs, an average of the generated
    labels with weights growing linearly with the epoch (the epoch-1 label being y_m)."""
    return (epoch - 1) / (epoch + 1) * old + 2 / (epoch + 1) * new


class ULGM:
    def __init__(
        self,
        labels: torch.Tensor,
        feature_dims: dict[str, int],
        H: float,
        exclude_zero: bool = False,
        rule: LabelRule = LabelRule.FAITHFUL,
    ):
        """``labels``: the human multimodal label of every training clip, in dataset order (sizes the memory)."""
        labels = labels.float()
        self.H = H
        self.exclude_zero = exclude_zero
        self.rule = LabelRule(rule)
        self.label_std = float(labels.std()) if len(labels) > 1 else 1.0
        self.labels = {task: labels.clone() for task in TASKS}
        self.memory = {task: labels.new_zeros(len(labels), feature_dims[task]) for task in TASKS}
        self.centres = {task: class_centres(self.memory[task], labels, exclude_zero) for task in TASKS}
        self._distance_sums = {task: 0.0 for task in TASKS}
        self._distance_rows = 0

    def targets(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """The current label of each task for these clips: the regression targets of the loss."""
        return {task: self.labels[task][index] for task in TASKS}

    def step(self, index: torch.Tensor, features: dict[str, torch.Tensor], epoch: int) -> None:
        """After a batch's backward pass: new T/A/V labels (from epoch 2), then memory and centres."""
        features = {task: f.detach().float() for task, f in features.items()}
        if epoch > 1:
            self._update_labels(index, features, epoch)
        for task in TASKS:
            self.memory[task][index] = features[task]
            self.centres[task] = class_centres(self.memory[task], self.labels[task], self.exclude_zero)

    def _update_labels(self, index: torch.Tensor, features: dict[str, torch.Tensor], epoch: int) -> None:
        y_m = self.labels["M"][index]
        if self.rule == LabelRule.FAITHFUL:
            delta = {task: relative_distance(features[task], *self.centres[task]) for task in TASKS}
            new = {task: generated_label(y_m, delta[task], delta["M"], self.H) for task in UNIMODAL}
        elif self.rule == LabelRule.CENTRE_NORMALISED:
            delta = {task: centre_position(features[task], *self.centres[task]) for task in TASKS}
            new = {task: generated_label(y_m, delta[task], delta["M"], self.H) for task in UNIMODAL}
        else:
            delta = {task: centre_position(features[task], *self.centres[task]) for task in TASKS}
            z = {
                task: standardised(delta[task], centre_position(self.memory[task], *self.centres[task]))
                for task in TASKS
            }
            new = {task: scale_aware_label(y_m, z[task], z["M"], self.label_std, self.H) for task in UNIMODAL}
        for task in UNIMODAL:
            self.labels[task][index] = momentum_update(self.labels[task][index], new[task], epoch)
        for task in TASKS:
            self._distance_sums[task] += float(delta[task].abs().sum())
        self._distance_rows += len(index)

    def mean_distances(self) -> dict[str, float]:
        """Mean |delta| per task over the rows whose labels were updated since the last call (one epoch, when
        called once per epoch); NaN in epoch 1, which updates none. The scale the label formula worked on."""
        rows, self._distance_rows = self._distance_rows, 0
        sums, self._distance_sums = self._distance_sums, {task: 0.0 for task in TASKS}
        return {task: sums[task] / rows if rows else float("nan") for task in TASKS}
