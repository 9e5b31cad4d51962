"""AdamW with decoupled weight decay on matrices only, and a warmup + cosine schedule.

Shared by every task (one implementation). The split follows GPT-2 / nanoGPT: weight matrices and
embeddings decay, biases and norm gains don't.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from omniformer.argument_checks import require_valid

log = logging.getLogger("omniformer")


@dataclass
class OptimSettings:
    """Optimizer and learning-rate schedule settings; also the ``optim`` group's schema
    (:mod:`omniformer.config.schemas`), so a setting is declared here only."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_steps: float = 100  # optimizer steps, or a fraction in (0, 1) of the run's steps
    min_lr: float = 1e-4
    schedule: str = "cosine"
    fused: bool | None = None

    def __post_init__(self) -> None:
        require_valid(self.check_config, **vars(self))

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the settings in ``args`` (see :mod:`omniformer.argument_checks`)."""
        problems = []
        lr, min_lr = args.get("lr"), args.get("min_lr")
        if lr is not None and lr <= 0:
            problems.append("{lr} must be positive")
        elif lr is not None and min_lr is not None and not 0 <= min_lr <= lr:
            problems.append("{min_lr} must lie between 0 and {lr}")
        warmup = args.get("warmup_steps", 0)
        if warmup < 0:
            problems.append("{warmup_steps} must be >= 0")
        elif warmup >= 1 and warmup != int(warmup):
            problems.append("{warmup_steps} must be a whole number of steps or a fraction in (0, 1)")
        if args.get("schedule", "cosine") not in ("cosine", "constant"):
            problems.append("{schedule}; choose 'cosine' or 'constant'")
        if "betas" in args and len(args["betas"]) != 2:
            problems.append("{betas} needs two values")
        return problems


class WarmupCosine:
    """Multiplier of the peak lr at a step: linear warmup, then cosine decay to ``min_lr / lr``.

    A callable object rather than a lambda so the scheduler's state stays plain data in
    checkpoints (loadable with ``weights_only=True``).
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float, cosine: bool = True) -> None:
        self.warmup_steps, self.total_steps = warmup_steps, max(total_steps, 1)
        self.min_ratio, self.cosine = min_ratio, cosine

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.cosine:
            return 1.0
        span = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / span, 1.0)
        return self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))


def warmup_length(warmup_steps: float, total_steps: int) -> int:
    """Warmup steps for a run of ``total_steps`` optimizer steps: ``warmup_steps`` in (0, 1) is that
    share of the run (at least one step), a whole number is a number of steps; either is capped at
    the run's length. A warning names both numbers when the configured warmup is not shorter than
    the run (the learning rate would still be rising at its last step)."""
    steps = max(1, round(warmup_steps * total_steps)) if 0 < warmup_steps < 1 else int(warmup_steps)
    if steps >= total_steps > 0 and warmup_steps >= 1:
        log.warning(
            "optim.warmup_steps=%d is not shorter than the run's %d optimizer steps: the learning rate "
            "would still be rising at the last step (warmup capped at %d). Set a fraction of the run, "
            "e.g. optim.warmup_steps=0.05, or train longer",
            steps,
            total_steps,
            total_steps,
        )
    return min(steps, max(total_steps, 1))


# The parameter groups' names, in the optimizer's order. Lightning's LearningRateMonitor reads a group's
# "name": the logged columns (and omniformer-plot's figures) are lr-AdamW/decay and lr-AdamW/no_decay.
GROUP_NAMES = ("decay", "no_decay")


def parameter_groups(module: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed group (``decay``: ndim >= 2, weight matrices and
    embeddings) and an undecayed one (``no_decay``: biases and norm gains), each named (``"name"``)."""
    params = [p for p in module.parameters() if p.requires_grad]  # tied weights appear once
    decay, no_decay = GROUP_NAMES
    return [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "name": decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "name": no_decay},
    ]


def keep_group_names(optimizer: torch.optim.Optimizer, state_dict: dict) -> dict:
    """``load_state_dict`` pre-hook: the optimizer's group names win over a checkpoint's.

    ``Optimizer.load_state_dict`` replaces each group's settings by the saved ones; a checkpoint written
    before the groups had names would otherwise strip them, and a resumed run would log ``lr-AdamW/pg1``
    again. The saved state dict is not changed in place."""
    groups = state_dict.get("param_groups", [])
    names = [group.get("name") for group in optimizer.param_groups]
    if len(groups) != len(names):  # torch's own check names the mismatch
        return state_dict
    named = [{**saved, "name": name} if name is not None else saved for saved, name in zip(groups, names)]
    return {**state_dict, "param_groups": named}


def build_optimizer(
    module: nn.Module, settings: OptimSettings, total_steps: int, *, clips_scaled_grads: bool = False
) -> dict:
    """AdamW and a per-step warmup/cosine scheduler, as ``configure_optimizers`` returns them.

    Args:
        total_steps: the run's optimizer steps (``trainer.estimated_stepping_batches``: ``max_steps``,
            or epochs x batches per epoch / accumulation); the warmup is fitted to it
            (:func:`warmup_length`).
        clips_scaled_grads: a gradient scaler (``16-mixed``) is active and gradients are clipped.
            Fused AdamW unscales the gradients inside its own step, after clipping would have seen
            them still scaled, so Lightning refuses that combination: ``fused=None`` then picks the
            unfused AdamW, and ``fused=True`` is refused here with the way out.
    """
    fused = settings.fused
    if fused and clips_scaled_grads:
        raise ValueError(
            "optim.fused=true cannot be combined with trainer.precision=16-mixed and "
            "trainer.gradient_clip_val: fused AdamW unscales gradients inside its step, so they would "
            "be clipped while still scaled. Set optim.fused=null (unfused AdamW here), use "
            "trainer.precision=bf16-mixed, or set trainer.gradient_clip_val=null"
        )
    if fused is None:
        fused = not clips_scaled_grads and all(p.device.type in ("cuda", "cpu") for p in module.parameters())
    optimizer = torch.optim.AdamW(
        parameter_groups(module, settings.weight_decay),
        lr=settings.lr,
        betas=tuple(settings.betas),
        eps=settings.eps,
        fused=fused,
    )
    optimizer.register_load_state_dict_pre_hook(keep_group_names)
    schedule = WarmupCosine(
        warmup_length(settings.warmup_steps, total_steps),
        total_steps,
        settings.min_lr / settings.lr,
        settings.schedule == "cosine",
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
