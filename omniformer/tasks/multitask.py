"""Multi-task training: one OmniModel, a tokenizer per modality, ONE shared backbone, a head per task.

Each member task (``text_lm``, ``mnist``, ``spoken_digits``...) names the modality it reads, its
objective and its loss weight; its head is ``net.heads[<member>]``. The model holds one tokenizer per
modality and one head per member; every member runs through the same
:class:`~omniformer.backbone.Backbone`. Batches come from
:class:`~omniformer.data.multitask.MultiTaskDataModule` as ``{member: batch}`` dicts (one member per
step with sampled mixing, every member with ``data.sampling=all``); a step's loss is the weighted sum
``Σ loss_weight_i · loss_i`` over the members present. Validation runs every member and logs
``<member>/val_loss`` plus the member's own metrics (``<member>/val_acc``, ``<member>/val_ppl``; a
prefix-LM member, :class:`~omniformer.tasks.objectives.PrefixLMLoss` with generation settings, also
writes every item's text and logs ``<member>/val_exact``, ``val_cer``, ``val_wer`` as
:class:`~omniformer.tasks.prefix_lm.PrefixLMTask` does), and ``val_loss`` = the same weighted sum of
the members' validation losses (the metric checkpoints monitor; also logged as
``val_loss_weighted_sum``, the name results show). How the members share the
optimizer (``balance``) is :mod:`omniformer.tasks.balancing`'s business.

Multi-task learning across modalities on one network: Kaiser et al. 2017 ("One Model To Learn
Them All"); examples-proportional task mixing: Raffel et al. 2020 (T5). A member is described in
config by a ``conf/tasks/<name>.yaml`` file (data module, tokenizer, head, objective); see
``docs/EXTENDING.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from omniformer.model import OmniModel
from omniformer.sequence import SegmentMarkers
from omniformer.tasks.balancing import (
    BALANCE,
    MIXED,
    STATES_KEY,
    MemberMoments,
    balance_scales,
    squared_grad_norm,
    update_running_norm,
)
from omniformer.tasks.base import OmniTask

# ClassificationLoss and LanguageModelingLoss are also named here by configs stored in older checkpoints.
from omniformer.tasks.objectives import ClassificationLoss, LanguageModelingLoss, Objective  # noqa: F401
from omniformer.tasks.optim import OptimSettings


@dataclass
class Member:
    """One member task: which tokenizer reads it, its objective and its weight (its head is
    ``net.heads[<member name>]``).

    Attributes:
        modality: the tokenizer (by modality name) that reads this member's inputs.
        loss: the member's objective.
        loss_weight: this member's weight in each step's weighted sum of losses.
    """

    modality: str
    loss: Objective
    loss_weight: float = 1.0


def _member(name: str, node: Any, net: OmniModel) -> Member:
    """Member ``name`` from its ``{modality, loss, loss_weight}`` node, checked against ``net``."""
    key = f"task.members.{name}"
    for required in ("modality", "loss"):
        if node.get(required) is None:
            raise ValueError(
                f"{key}.{required} is missing: a member needs a modality and a loss (its objective)"
            )
    modality = str(node["modality"])
    if modality not in net.tokenizers:
        configured = ", ".join(sorted(net.tokenizers)) or "none"
        raise ValueError(
            f"{key}.modality={modality!r}: no tokenizer is configured for modality {modality!r} "
            f"(task.net.tokenizers: {configured}); add task.net.tokenizers.{modality}"
        )
    if name not in net.heads:
        raise ValueError(f"task.net.heads.{name} is missing: every member needs a head named after it")
    weight = float(node.get("loss_weight", 1.0))
    if not math.isfinite(weight) or weight < 0:
        raise ValueError(f"{key}.loss_weight={weight}: must be a finite number >= 0")
    loss = node["loss"]
    if not isinstance(loss, Objective):
        raise TypeError(f"{key}.loss is a {type(loss).__name__}, not an Objective")
    loss.check_member(key, modality, net)
    return Member(modality, loss, weight)


class MemberMarkers(SegmentMarkers):
    """The sequence markers of a multi-task model's prefix-LM members, from ``member → modality`` maps
    that each member's config file adds to (Hydra merges maps, not lists): begin/end vectors for every
    prefix modality (``prefixes``), ids for every text modality (``texts``), each once, in member
    order. Its parameters are :class:`SegmentMarkers`' (``begin.image``, ``end.audio``...).

    Args:
        dim: width of the backbone's residual stream.
        prefixes: member → the modality of its prefix (``read_digits: image``).
        texts: member → the modality of its text (``read_digits: read_digits_text``).
    """

    def __init__(self, *, dim: int, prefixes: Mapping[str, str], texts: Mapping[str, str]) -> None:
        modalities, unmarked = list(dict.fromkeys(prefixes.values())), list(dict.fromkeys(texts.values()))
        super().__init__(dim=dim, modalities=modalities, unmarked=unmarked)


class MultiTaskTask(OmniTask):
    """Train several tasks, possibly of different modalities, through one shared backbone.

    Args:
        net: the model: a tokenizer per modality the members read, and a head per member, named
            after it.
        optim: optimizer and schedule settings.
        members: member name → ``{modality, loss, loss_weight}``: the tokenizer it reads, its
            :class:`~omniformer.tasks.objectives.Objective`, and its weight (>= 0) in each step's sum.
        balance: ``none`` (each step's loss is ``Σ loss_weight_i · loss_i``), ``grad_norm`` (each
            member's loss is also multiplied by a scale that brings the running norm of its gradient
            on the backbone to the geometric mean of all members' running norms; logged as
            ``<member>/balance_scale``) or ``member_moments`` (each member keeps its own optimizer
            state, moments and step count, for every parameter; a step made by several members'
            gradients, with gradient accumulation, uses a state of its own). Both need one member per
            step (not ``data.sampling=all``).
        balance_momentum: momentum of the running (bias-corrected exponential) mean of each
            member's backbone gradient norm, updated on every step that member trains alone.

    Raises:
        ValueError: no members, a member missing its modality or objective, a member whose modality
            has no tokenizer or who has no head, a negative loss weight, or an unknown ``balance``.
    """

    def __init__(
        self,
        net: OmniModel,
        optim: OptimSettings,
        members: Mapping[str, Any],
        balance: str = "none",
        balance_momentum: float = 0.9,
    ) -> None:
        if balance not in BALANCE:
            raise ValueError(f"task.balance={balance!r}; choose one of {', '.join(BALANCE)}")
        if not 0 <= balance_momentum < 1:
            raise ValueError(f"task.balance_momentum must lie in [0, 1), got {balance_momentum}")
        if not members:
            raise ValueError("task.members is empty: list the tasks to train, e.g. tasks='[text_lm, mnist]'")
        specs = {name: _member(name, node, net) for name, node in members.items()}
        if all(m.loss_weight == 0 for m in specs.values()):
            raise ValueError("every task.members.*.loss_weight is 0: nothing would train")
        super().__init__(net, optim)
        self.members = specs
        self.val_metrics = nn.ModuleDict({n: self._metrics(n) for n in specs})
        self.test_metrics = nn.ModuleDict({n: self._metrics(n) for n in specs})
        self.val_losses = nn.ModuleDict({n: MeanMetric() for n in specs})
        self.test_losses = nn.ModuleDict({n: MeanMetric() for n in specs})
        self._names: dict[str, list[str]] = {}
        self.balance, self.balance_momentum = balance, balance_momentum
        self._step_members: set[str] = set()
        self.member_moments = MemberMoments() if balance == "member_moments" else None
        if balance == "grad_norm":
            # Running sums, saved with the weights so that a resumed run balances as the original.
            self.register_buffer("balance_norm_sum", torch.zeros(len(specs)))
            self.register_buffer("balance_weight_sum", torch.zeros(len(specs)))
        self._index = {name: i for i, name in enumerate(specs)}

    def _metrics(self, name: str) -> MetricCollection:
        return self.members[name].loss.metric_collection(self.net.heads[name])

    # -- checks ---------------------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Refuse data modules whose members differ from the task's; note the mixing."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        members = getattr(datamodule, "members", None)
        if members is None:
            return
        missing = sorted(set(self.members) - set(members))
        extra = sorted(set(members) - set(self.members))
        if missing or extra:
            raise ValueError(
                "the multi-task data module and task disagree: "
                + (f"no data for task(s) {missing} (data.members.<name>); " if missing else "")
                + (f"no task for data member(s) {extra} (task.members.<name>)" if extra else "")
            )
        if self.balance != "none" and getattr(datamodule, "sampling", None) == "all":
            raise ValueError(
                f"task.balance={self.balance} works on the steps each member trains alone, but "
                "data.sampling=all trains every member every step; use proportional, uniform or weights "
                "sampling, or task.balance=none"
            )
        for name, member in self.members.items():
            member.loss.use_data(members[name], member.modality)  # a prefix LM's vocabulary
        for split in ("val", "test"):
            if hasattr(datamodule, "evaluation_names"):
                self._names[split] = datamodule.evaluation_names(split)
        if stage != "fit":
            return
        heads = ", ".join(
            f"{n} ({m.modality} → heads.{n}, weight {m.loss_weight:g})" for n, m in self.members.items()
        )
        rank_zero_info(
            f"multi-task: {heads}; tokenizers: {', '.join(self.net.tokenizers)}; one shared backbone"
        )

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Check every classification member's labels while they are on the host."""
        if isinstance(batch, Mapping):
            for name, part in batch.items():
                if part is not None and name in self.members:
                    self.members[name].loss.check(part, self.net.heads[name])
        return batch

    # -- training -------------------------------------------------------------------------------------
    def member_step(self, name: str, batch: Any) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss, outputs, targets)`` of member ``name`` on its ``batch``: its objective, unweighted."""
        member = self.members[name]
        return member.loss.step(self.net, member.modality, name, batch)

    def model_step(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """``(total loss, member losses, member targets)`` of a ``{member: batch}`` step.

        The total is ``Σ loss_weight · loss`` over the members present (times each member's
        balance scale under ``balance=grad_norm``); the dicts hold every present member's own loss
        and targets.
        """
        losses: dict[str, Tensor] = {}
        targets: dict[str, Tensor] = {}
        total: Tensor | None = None
        scales = self.balance_scales() if self.balance == "grad_norm" else None
        for name, part in batch.items():
            if part is None:
                continue
            losses[name], _, targets[name] = self.member_step(name, part)
            weighted = self.members[name].loss_weight * losses[name]
            if scales is not None:
                weighted = weighted * scales[self._index[name]]
            total = weighted if total is None else total + weighted
        if total is None:
            raise RuntimeError("the step's batch holds no member batch (every entry is None)")
        return total, losses, targets

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        total, losses, targets = self.model_step(batch)
        for name, loss in losses.items():
            self.log(f"{name}/train_loss", loss, batch_size=int(targets[name].shape[0]))
            if self.balance == "grad_norm":
                self.log(f"{name}/balance_scale", self.balance_scales()[self._index[name]], batch_size=1)
        self._step_members.update(losses)
        self.log("train_loss", total, prog_bar=True, batch_size=1)
        return total

    def balance_scales(self) -> Tensor:
        """Each member's loss scale under ``balance=grad_norm`` (1 for members not yet measured)."""
        return balance_scales(self.balance_norm_sum, self.balance_weight_sum)

    def on_before_optimizer_step(self, optimizer) -> None:
        """Under ``balance=grad_norm``, fold this step's backbone gradient norm into its member's
        running norm when one member alone made the step's gradients; under ``member_moments``, give
        the optimizer that member's state."""
        members, self._step_members = self._step_members, set()
        if self.member_moments is not None:
            self.member_moments.use(optimizer, next(iter(members)) if len(members) == 1 else MIXED)
            return
        if self.balance != "grad_norm" or len(members) != 1:
            return
        name = next(iter(members))
        index = self._index[name]
        squares = squared_grad_norm(self.net.backbone.parameters())
        if squares is None:
            return
        if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
            torch.distributed.all_reduce(squares)  # each rank holds a shard of the gradients
        norm = squares.sqrt() / self._loss_scale(optimizer)
        # The gradients are those of loss_weight · scale · loss: the running norm is the loss's own.
        norm = norm / (self.balance_scales()[index] * self.members[name].loss_weight)
        update_running_norm(
            self.balance_norm_sum, self.balance_weight_sum, index, norm, self.balance_momentum
        )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save every member's optimizer state (``member_moments``) by parameter name."""
        if self.member_moments is not None:
            checkpoint[STATES_KEY] = self.member_moments.state_dict(self.named_parameters())

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore every member's optimizer state (``member_moments``); a parameter the model lacks
        is an error naming it."""
        if self.member_moments is not None and STATES_KEY in checkpoint:
            self.member_moments.load_state_dict(checkpoint[STATES_KEY], self.named_parameters(), self.members)

    def _loss_scale(self, optimizer) -> float:
        """The mixed-precision loss scale still in the gradients (fused optimizers unscale in ``step``)."""
        if self._trainer is None:
            return 1.0
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is None or not getattr(optimizer, "_step_supports_amp_scaling", False):
            return 1.0
        return float(scaler.get_scale())

    # -- evaluation -----------------------------------------------------------------------------------
    def _member_for(self, split: str, dataloader_idx: int) -> str:
        names = self._names.get(split) or list(self.members)
        return names[dataloader_idx]

    def _evaluate(self, split: str, batch: Any, dataloader_idx: int) -> None:
        name = self._member_for(split, dataloader_idx)
        member = self.members[name]
        loss, outputs, targets = self.member_step(name, batch)
        metrics = (self.val_metrics if split == "val" else self.test_metrics)[name]
        losses = (self.val_losses if split == "val" else self.test_losses)[name]
        member.loss.evaluate(metrics, self.net, member.modality, name, batch, outputs, targets)
        losses.update(loss, weight=member.loss.weight(targets))

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("val", batch, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._evaluate("test", batch, dataloader_idx)

    def _log_epoch(self, split: str) -> None:
        metrics_by = self.val_metrics if split == "val" else self.test_metrics
        losses_by = self.val_losses if split == "val" else self.test_losses
        total, seen = None, False
        for name, member in self.members.items():
            losses = losses_by[name]
            if not losses.update_called:
                continue  # this member has no such split (or ran no batch)
            loss = losses.compute()
            values = {f"{name}/{split}_loss": loss}
            for key, value in member.loss.derived(loss).items():
                values[f"{name}/{split}_{key}"] = value
            if len(metrics_by[name]):
                for key, value in metrics_by[name].compute().items():
                    values[f"{name}/{split}_{key}"] = value
                metrics_by[name].reset()
            losses.reset()
            self.log_dict(values, add_dataloader_idx=False)
            weighted = member.loss_weight * loss
            total = weighted if total is None else total + weighted
            seen = True
        if seen:  # `val_loss` is what checkpoints monitor; the name that says what it is, for readers
            self.log(f"{split}_loss", total, add_dataloader_idx=False)
            self.log(f"{split}_loss_weighted_sum", total, prog_bar=(split == "val"), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
