"""Multi-task training: one OmniModel, a tokenizer per modality, ONE shared backbone, a head per task.

Each member task (``text_lm``, ``mnist``, ``spoken_digits``...) names the modality it reads, its
head and its loss. The model holds one tokenizer per modality and one head per member; every member
runs through the same :class:`~omniformer.backbone.Backbone`. Batches come from
:class:`~omniformer.data.multitask.MultiTaskDataModule` as ``{member: batch}`` dicts (one member per
step with sampled mixing, every member with ``sampling=all``); a step's loss is the weighted sum
``Σ loss_weight_i · loss_i`` over the members present. Validation runs every member and logs
``<member>/val_loss`` plus the member's own metrics (``<member>/val_acc``, ``<member>/val_ppl``),
and ``val_loss`` = the same weighted sum of the members' validation losses.

With one member per step, the members' gradients share one AdamW, whose second-moment estimate of
each shared parameter mixes every member's gradient: a member whose gradients on the backbone are
smaller than the others' then moves it by smaller steps than it would alone. ``balance=grad_norm``
rescales each member's loss so that its backbone gradient has the same running norm as the others'
(the geometric mean of the members' running norms), in the spirit of GradNorm (Chen et al. 2018).
``balance=member_moments`` goes further: each member keeps its own AdamW state (moments and step
count) for every parameter, so a member's steps on the shared backbone are the steps its own
optimizer would take, whatever the other members' gradients look like.

Multi-task learning across modalities on one network: Kaiser et al. 2017 ("One Model To Learn
Them All"); examples-proportional task mixing: Raffel et al. 2020 (T5). A member is described in
config by a ``conf/tasks/<name>.yaml`` file (data module, tokenizer, head, loss); see
``docs/EXTENDING.md``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from torchmetrics import MeanMetric, MetricCollection

from omniformer.model import OmniModel
from omniformer.tasks.base import OmniTask

# ClassificationLoss and LanguageModelingLoss are also named here by configs stored in older checkpoints.
from omniformer.tasks.objectives import ClassificationLoss, LanguageModelingLoss, Objective  # noqa: F401
from omniformer.tasks.optim import OptimSettings

# --------------------------------------------------------------------------------------------- members
BALANCE = ("none", "grad_norm", "member_moments")
STATES_KEY = "multitask_member_optimizer_states"  # checkpoint entry of member_moments' states
MIXED = "*"  # the optimizer state of steps whose gradients several members made (member_moments)


@dataclass
class Member:
    """One member task: which tokenizer reads it, its head (named after the member), its loss.

    Attributes:
        modality: the tokenizer (by modality name) that reads this member's inputs.
        loss: the member's objective.
        loss_weight: this member's weight in each step's weighted sum of losses.
    """

    modality: str
    loss: Objective
    loss_weight: float = 1.0


def _build(node: Any, key: str) -> Any:
    """``node`` itself when it is already built, else ``instantiate(node)`` (Hydra's error names the
    ``_target_``); a mapping without ``_target_`` is an error naming ``key``."""
    if isinstance(node, (DictConfig, Mapping)):
        if "_target_" not in node:
            raise ValueError(f"{key} needs a _target_ (the class or function that builds it)")
        return instantiate(node)
    return node


def _same(a: Any, b: Any) -> bool:
    """Whether two tokenizer configs are the same (configs compared as plain containers)."""
    if isinstance(a, DictConfig):
        a = OmegaConf.to_container(a, resolve=True)
    if isinstance(b, DictConfig):
        b = OmegaConf.to_container(b, resolve=True)
    return isinstance(a, Mapping) and a == b


class MultiTaskTask(OmniTask):
    """Train several tasks, possibly of different modalities, through one shared backbone.

    Args:
        members: member name → ``{modality, tokenizer, head, loss, loss_weight}``. ``tokenizer``
            (config or module) is that modality's tokenizer; members of the same modality may repeat
            the same tokenizer config or leave it out (``null``), one tokenizer serves them all.
            ``head`` (config or module) becomes ``net.heads[<member>]``; ``loss`` is a
            :class:`Objective` (or its config); ``loss_weight`` >= 0 weighs the member's loss.
        backbone: the shared backbone (or its config).
        optim: optimizer and schedule settings (or their config).
        sampling: how the data module mixes members (``proportional``, ``uniform``, ``weights``,
            ``all``); the data module reads it from here (``data.sampling: ${task.sampling}``).
        weights: sampling weights by member (``sampling=weights``).
        mode: ``CombinedLoader`` mode with ``sampling=all``.
        steps_per_epoch: steps per sampled epoch (``None`` = the members' batches added up).
        balance: ``none`` (each step's loss is ``Σ loss_weight_i · loss_i``) or ``grad_norm`` (each
            member's loss is also multiplied by a scale that brings the running norm of its gradient
            on the backbone to the geometric mean of all members' running norms; logged as
            ``<member>/balance_scale``), or ``member_moments`` (each member keeps its own optimizer
            state, moments and step count, for every parameter; a step made by several members'
            gradients, with gradient accumulation, uses a state of its own). Needs one member per
            step (not ``sampling=all``).
        balance_momentum: momentum of the running (bias-corrected exponential) mean of each
            member's backbone gradient norm, updated on every step that member trains alone.

    Raises:
        ValueError: a member whose modality has no tokenizer, two different tokenizers for one
            modality, a negative loss weight, a member missing a head or loss, or a ``balance``
            that is unknown or needs one member per step under ``sampling=all``.
    """

    def __init__(
        self,
        members: Mapping[str, Any],
        backbone: Any,
        optim: Any,
        sampling: str = "proportional",
        weights: Mapping[str, float] | None = None,
        mode: str = "max_size_cycle",
        steps_per_epoch: int | None = None,
        balance: str = "none",
        balance_momentum: float = 0.9,
    ) -> None:
        if balance not in BALANCE:
            raise ValueError(f"task.balance={balance!r}; choose one of {', '.join(BALANCE)}")
        if balance != "none" and sampling == "all":
            raise ValueError(
                f"task.balance={balance} works on the steps each member trains alone, "
                "but task.sampling=all trains every member every step; use proportional, uniform or "
                "weights sampling, or task.balance=none"
            )
        if not 0 <= balance_momentum < 1:
            raise ValueError(f"task.balance_momentum must lie in [0, 1), got {balance_momentum}")
        if not members:
            raise ValueError("task.members is empty: list the tasks to train, e.g. tasks='[text_lm, mnist]'")
        tokenizer_cfgs: dict[str, tuple[str, Any]] = {}
        specs: dict[str, Member] = {}
        heads: dict[str, nn.Module] = {}
        for name, node in members.items():
            key = f"task.members.{name}"
            for required in ("modality", "head", "loss"):
                if node.get(required) is None:
                    raise ValueError(
                        f"{key}.{required} is missing: a member needs a modality, a head and a loss"
                    )
            modality = str(node["modality"])
            weight = float(node.get("loss_weight", 1.0))
            if not math.isfinite(weight) or weight < 0:
                raise ValueError(f"{key}.loss_weight={weight}: must be a finite number >= 0")
            tokenizer = node.get("tokenizer")
            if tokenizer is not None:
                if modality in tokenizer_cfgs and not (
                    tokenizer is tokenizer_cfgs[modality][1] or _same(tokenizer, tokenizer_cfgs[modality][1])
                ):
                    other = tokenizer_cfgs[modality][0]
                    raise ValueError(
                        f"{key}.tokenizer differs from task.members.{other}.tokenizer, both for modality "
                        f"{modality!r}: one tokenizer serves a modality. Drop one (tokenizer: null) or give "
                        f"{name} its own modality name"
                    )
                tokenizer_cfgs.setdefault(modality, (name, tokenizer))
            loss = _build(node["loss"], f"{key}.loss")
            if not isinstance(loss, Objective):
                raise TypeError(f"{key}.loss is a {type(loss).__name__}, not an Objective")
            specs[name] = Member(modality, loss, weight)
            heads[name] = _build(node["head"], f"{key}.head")
        for name, member in specs.items():
            if member.modality not in tokenizer_cfgs:
                configured = ", ".join(sorted(tokenizer_cfgs)) or "none"
                raise ValueError(
                    f"task.members.{name}.modality={member.modality!r}: no tokenizer is configured for "
                    f"modality {member.modality!r} (tokenizers: {configured}); add a tokenizer to "
                    f"task.members.{name}"
                )
        if all(m.loss_weight == 0 for m in specs.values()):
            raise ValueError("every task.members.*.loss_weight is 0: nothing would train")
        tokenizers = {
            modality: _build(cfg, f"task.members.{owner}.tokenizer")
            for modality, (owner, cfg) in tokenizer_cfgs.items()
        }
        net = OmniModel(tokenizers, _build(backbone, "model.backbone"), heads)
        optim = _build(optim, "optim")
        if not isinstance(optim, OptimSettings):
            raise TypeError(f"optim must be OptimSettings (or its config), got {type(optim).__name__}")
        super().__init__(net, optim)
        self.members = specs
        self.sampling, self.weights, self.mode = sampling, dict(weights) if weights else None, mode
        self.steps_per_epoch = steps_per_epoch
        self.val_metrics = nn.ModuleDict(
            {n: MetricCollection(m.loss.metrics(self.net.heads[n])) for n, m in specs.items()}
        )
        self.test_metrics = nn.ModuleDict(
            {n: MetricCollection(m.loss.metrics(self.net.heads[n])) for n, m in specs.items()}
        )
        self.val_losses = nn.ModuleDict({n: MeanMetric() for n in specs})
        self.test_losses = nn.ModuleDict({n: MeanMetric() for n in specs})
        self._names: dict[str, list[str]] = {}
        self.balance, self.balance_momentum = balance, balance_momentum
        self._step_members: set[str] = set()
        self._member_states: dict[str, dict[nn.Parameter, dict]] = {}
        self._states_to_place = False
        if balance == "grad_norm":
            # Running sums, saved with the weights so that a resumed run balances as the original.
            self.register_buffer("balance_norm_sum", torch.zeros(len(specs)))
            self.register_buffer("balance_weight_sum", torch.zeros(len(specs)))
        self._index = {name: i for i, name in enumerate(specs)}

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
        measured = self.balance_weight_sum > 0
        norms = torch.where(measured, self.balance_norm_sum / self.balance_weight_sum.clamp_min(1e-12), 1.0)
        logs = torch.where(measured, torch.log(norms), 0.0)  # no host synchronisation: no branches
        reference = torch.exp(logs.sum() / measured.sum().clamp_min(1))
        return torch.where(measured, reference / norms, 1.0).detach()

    def on_before_optimizer_step(self, optimizer) -> None:
        """Under ``balance=grad_norm``, fold this step's backbone gradient norm into its member's
        running norm when one member alone made the step's gradients; under ``member_moments``, give
        the optimizer that member's state."""
        members, self._step_members = self._step_members, set()
        if self.balance == "member_moments":
            self._use_member_state(optimizer, next(iter(members)) if len(members) == 1 else MIXED)
            return
        if self.balance == "none" or len(members) != 1:
            return
        name = next(iter(members))
        index = self._index[name]
        grads = [p.grad for p in self.net.backbone.parameters() if p.grad is not None]
        if not grads:
            return
        squares = torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()
        if self._trainer is not None and isinstance(self.trainer.strategy, FSDPStrategy):
            torch.distributed.all_reduce(squares)  # each rank holds a shard of the gradients
        norm = squares.sqrt() / self._loss_scale(optimizer)
        # The gradients are those of loss_weight · scale · loss: the running norm is the loss's own.
        norm = norm / (self.balance_scales()[index] * self.members[name].loss_weight)
        usable = torch.isfinite(norm) & (norm > 0)  # zero-initialised heads give 0 on the first step
        decay = self.balance_momentum
        self.balance_norm_sum[index] = torch.where(
            usable, decay * self.balance_norm_sum[index] + (1 - decay) * norm, self.balance_norm_sum[index]
        )
        self.balance_weight_sum[index] = torch.where(
            usable, decay * self.balance_weight_sum[index] + (1 - decay), self.balance_weight_sum[index]
        )

    def _use_member_state(self, optimizer, member: str) -> None:
        """Point the optimizer's per-parameter state at ``member``'s own (created empty on first use:
        the optimizer fills it on its first step, exactly as for a fresh parameter)."""
        if self._states_to_place:
            self._place_member_states(optimizer)
        states = self._member_states.setdefault(member, {})
        for group in optimizer.param_groups:
            for param in group["params"]:
                optimizer.state[param] = states.setdefault(param, {})

    def _place_member_states(self, optimizer) -> None:
        """Move states read from a checkpoint where the optimizer keeps them: moments on the
        parameter's device and dtype, the step count there too for fused or capturable groups."""
        self._states_to_place = False
        on_device = {
            param: bool(group.get("fused") or group.get("capturable"))
            for group in optimizer.param_groups
            for param in group["params"]
        }
        for states in self._member_states.values():
            for param, state in states.items():
                for key, value in state.items():
                    if not isinstance(value, Tensor):
                        continue
                    if key == "step":
                        device = param.device if on_device.get(param, False) else torch.device("cpu")
                        state[key] = value.to(device=device, dtype=torch.float32)
                    else:
                        state[key] = value.to(device=param.device, dtype=param.dtype)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Save every member's optimizer state (``member_moments``) by parameter name."""
        if self.balance != "member_moments":
            return
        names = {param: name for name, param in self.named_parameters()}
        checkpoint[STATES_KEY] = {
            member: {names[param]: dict(state) for param, state in states.items() if state}
            for member, states in self._member_states.items()
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Restore every member's optimizer state (``member_moments``); a parameter the model lacks
        is an error naming it."""
        if self.balance != "member_moments" or STATES_KEY not in checkpoint:
            return
        params = dict(self.named_parameters())
        restored: dict[str, dict[nn.Parameter, dict]] = {}
        for member, states in checkpoint[STATES_KEY].items():
            if member != MIXED and member not in self.members:
                raise ValueError(
                    f"the checkpoint holds optimizer state of member {member!r}, which this task lacks "
                    f"(members: {', '.join(self.members)})"
                )
            for name, state in states.items():
                if name not in params:
                    raise ValueError(
                        f"the checkpoint holds {member}'s optimizer state of parameter {name!r}, "
                        "which this model lacks"
                    )
                restored.setdefault(member, {})[params[name]] = dict(state)
        self._member_states = restored
        self._states_to_place = True

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
        member.loss.update(metrics, outputs, targets)
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
        if seen:
            self.log(f"{split}_loss", total, prog_bar=(split == "val"), add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
