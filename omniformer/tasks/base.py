"""What every omniformer task shares: the network, the optimizer, the schedule and gradient clipping."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import GradClipAlgorithmType
from torch import Tensor

from omniformer.model import OmniModel
from omniformer.tasks.optim import OptimSettings, build_optimizer


class OmniTask(L.LightningModule):
    """A LightningModule around an :class:`OmniModel`; subclasses add the loss and metrics.

    Args:
        net: the model (tokenizers, shared backbone, heads).
        optim: optimizer and schedule settings.
    """

    def __init__(self, net: OmniModel, optim: OptimSettings) -> None:
        super().__init__()
        self.net = net
        self.optim = optim

    def model_step(self, batch: Any) -> tuple[Tensor, Any, Any]:
        """``(loss, outputs, targets)`` of one batch: the task's objective, used by training,
        validation, testing, the diagnostics probe and the benchmarks alike."""
        raise NotImplementedError(f"{type(self).__name__} does not define model_step(batch)")

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return build_optimizer(self, self.optim, total, clips_scaled_grads=self._clips_scaled_grads())

    def _clips_scaled_grads(self) -> bool:
        """A gradient scaler (``16-mixed``) is active and gradients are clipped."""
        if self._trainer is None:
            return False
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return scaler is not None and bool(self.trainer.gradient_clip_val)

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clip as Lightning does, except under ``bf16-mixed`` with a fused optimizer.

        Lightning's mixed-precision plugin refuses to clip for any optimizer that unscales its
        gradients inside ``step`` (fused AdamW), because with ``16-mixed`` the gradients it would clip
        are still multiplied by the loss scale. ``bf16-mixed`` has no gradient scaler, so its
        gradients are the true ones and clipping them is correct: that case is clipped here with
        ``clip_grad_norm_`` / ``clip_grad_value_`` (no host synchronisation). Every other case
        (32-bit, ``16-mixed``, ...) goes to Lightning unchanged; for ``16-mixed`` with clipping,
        :func:`~omniformer.tasks.optim.build_optimizer` picks the unfused AdamW, which Lightning
        unscales before clipping.

        Under FSDP, Lightning refuses norm clipping (``clip_grad_norm_`` over local shards would
        compute a wrong norm); the norm is clipped by the FSDP root module's own ``clip_grad_norm_``,
        which reduces the norm across ranks (``trainer=fsdp`` sets ``gradient_clip_val`` like every
        trainer).
        """
        if gradient_clip_val and self._fabric is None and isinstance(self.trainer.strategy, FSDPStrategy):
            algorithm = GradClipAlgorithmType((gradient_clip_algorithm or "norm").lower())
            root = self.trainer.strategy.model
            if algorithm == GradClipAlgorithmType.NORM and hasattr(root, "clip_grad_norm_"):
                root.clip_grad_norm_(gradient_clip_val)
                return
        plugin = self.trainer.precision_plugin if self._fabric is None else None
        if isinstance(plugin, MixedPrecision) and plugin.scaler is None and gradient_clip_val:
            algorithm = GradClipAlgorithmType((gradient_clip_algorithm or "norm").lower())
            params = [p for group in optimizer.param_groups for p in group["params"]]
            if algorithm == GradClipAlgorithmType.VALUE:
                torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
            else:
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
            return
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
