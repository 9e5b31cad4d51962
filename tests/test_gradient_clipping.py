"""Gradient clipping on the GPU path, checked on the CPU: clipping with fused AdamW under
``bf16-mixed``, the unfused optimizer a gradient scaler gets, and norm clipping under FSDP."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision
from torch import nn

from omniformer.tasks import OmniTask, OptimSettings
from omniformer.tasks.optim import build_optimizer
from tests.helpers.regression import TinyTask, fit, global_norm


def test_bf16_mixed_with_fused_adamw_trains_and_clips_by_norm():
    task = TinyTask()
    trainer = fit(task, precision="bf16-mixed", gradient_clip_val=1.0)
    assert trainer.global_step == 4
    assert trainer.optimizers[0].defaults["fused"] is True  # the combination Lightning refused
    for before, after in zip(task.before, task.after):
        norm = global_norm(before)
        assert norm > 1.0  # clipping had something to do
        scale = 1.0 / (norm + 1e-6)  # what clip_grad_norm_ multiplies by
        for b, a in zip(before, after):
            torch.testing.assert_close(a, b * scale)
        assert global_norm(after) == pytest.approx(1.0, rel=1e-4)
    assert all(torch.isfinite(p).all() for p in task.parameters())


def test_bf16_mixed_with_fused_adamw_clips_by_value():
    task = TinyTask()
    fit(task, steps=2, precision="bf16-mixed", gradient_clip_val=0.01, gradient_clip_algorithm="value")
    for before, after in zip(task.before, task.after):
        assert max(float(b.abs().max()) for b in before) > 0.01
        for b, a in zip(before, after):
            torch.testing.assert_close(a, b.clamp(-0.01, 0.01))


def test_without_clipping_gradients_are_left_alone():
    task = TinyTask()
    fit(task, steps=2, precision="bf16-mixed", gradient_clip_val=None)
    for before, after in zip(task.before, task.after):
        for b, a in zip(before, after):
            assert torch.equal(a, b)


def test_a_gradient_scaler_with_clipping_gets_unfused_adamw_which_lightning_unscales_then_clips():
    # 16-mixed with a GradScaler (what CUDA gets); the CPU has a GradScaler too
    scaled = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=1.0))
    task = TinyTask()
    trainer = fit(task, plugins=[scaled], gradient_clip_val=1.0)
    assert trainer.optimizers[0].defaults["fused"] is False
    finite = [a for a in task.after if all(torch.isfinite(g).all() for g in a)]  # the scaler skips the rest
    assert finite and all(global_norm(a) <= 1.0 + 1e-3 for a in finite)  # unscaled, then clipped


def test_fused_true_with_a_gradient_scaler_and_clipping_is_refused_with_the_way_out():
    net = nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"optim\.fused=true cannot be combined .* Set optim\.fused=null"):
        build_optimizer(net, OptimSettings(fused=True), 10, clips_scaled_grads=True)
    fused = [
        build_optimizer(net, OptimSettings(), 10, clips_scaled_grads=scaled)["optimizer"].defaults["fused"]
        for scaled in (False, True)
    ]
    assert fused == [True, False]


# -- FSDP -------------------------------------------------------------------------------------------
class ShardedRoot(nn.Module):
    """Stands in for the FSDP root module on rank 0 of 2: it holds this rank's shard of the
    parameters, and its ``clip_grad_norm_`` clips by the norm over both ranks' shards, as FSDP's does
    (its all-reduce brings in the other rank's shard norm, a given number here)."""

    def __init__(self, shard: nn.Module, other_rank_norm: float) -> None:
        super().__init__()
        self.shard, self.other_rank_norm = shard, other_rank_norm

    def clip_grad_norm_(self, max_norm: float) -> torch.Tensor:
        grads = [p.grad for p in self.shard.parameters()]
        total = torch.sqrt(global_norm(grads) ** 2 + self.other_rank_norm**2)
        for grad in grads:
            grad.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return total


def test_under_fsdp_the_norm_is_clipped_by_the_root_modules_own_clip_grad_norm():
    """Lightning's FSDP precision refuses norm clipping; the task hands it to the FSDP root module,
    whose ``clip_grad_norm_`` reduces the norm across ranks. FSDP cannot run on a CPU, so the strategy
    is the real class without its setup, holding a stand-in root: the gradients on this rank come out
    scaled by the norm over both ranks, not clipped to the norm of this rank's shard alone."""
    from lightning.pytorch.strategies import FSDPStrategy

    task = OmniTask(nn.Linear(2, 1), OptimSettings())
    for p in task.parameters():
        p.grad = torch.full_like(p, 3.0)  # this shard's norm: sqrt(3 · 9) ≈ 5.2
    before = [p.grad.clone() for p in task.parameters()]
    strategy = FSDPStrategy.__new__(FSDPStrategy)
    strategy._model, strategy._lightning_module = ShardedRoot(task, other_rank_norm=4.0), None
    task._trainer = SimpleNamespace(strategy=strategy, precision_plugin=None)
    optimizer = torch.optim.SGD(task.parameters(), lr=0.1)
    task.configure_gradient_clipping(optimizer, gradient_clip_val=0.5, gradient_clip_algorithm="norm")

    total = (27.0 + 16.0) ** 0.5  # both shards
    for b, p in zip(before, task.parameters()):
        torch.testing.assert_close(p.grad, b * 0.5 / (total + 1e-6))
    local = float(global_norm([p.grad for p in task.parameters()]))
    assert local == pytest.approx(0.5 * 27**0.5 / total, rel=1e-4) and local < 0.45  # not 0.5: global
