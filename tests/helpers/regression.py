"""A tiny regression task fitted by a bare Lightning Trainer, for what happens around the optimizer
step (gradient clipping, the non-finite guard, the progress bar) without omniformer's data or CLI."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from omniformer.tasks import OmniTask, OptimSettings


class TinyTask(OmniTask):
    """Regression with a large loss (gradients far above the clip value); records the gradients
    just before and just after clipping (``before``, ``after``: one list of tensors per step)."""

    def __init__(self, optim: OptimSettings | None = None) -> None:
        net = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 1))
        super().__init__(net, optim or OptimSettings())
        self.before: list[list[torch.Tensor]] = []
        self.after: list[list[torch.Tensor]] = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return 100.0 * nn.functional.mse_loss(self.net(x).float(), y)

    def _grads(self, optimizer) -> list[torch.Tensor]:
        return [p.grad.detach().float().clone() for g in optimizer.param_groups for p in g["params"]]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        self.before.append(self._grads(optimizer))
        super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        self.after.append(self._grads(optimizer))


def regression_loader() -> DataLoader:
    """32 fixed samples in 4 batches of 8."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=generator)
    return DataLoader(TensorDataset(x, 5 * x.sum(1, keepdim=True)), batch_size=8)


def fit(task: TinyTask, steps: int = 4, **trainer_args) -> L.Trainer:
    """Fit ``task`` for ``steps`` optimizer steps on the CPU, quietly; return the trainer."""
    options = dict(logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, enable_model_summary=False, **{**options, **trainer_args}
    )
    trainer.fit(task, regression_loader())
    return trainer


def global_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The L2 norm of all of ``grads`` together (what norm clipping bounds)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
