"""Residual-contribution diagnostic: values against a direct computation, history files, grad norm."""

from __future__ import annotations

import csv
import json
import struct

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from omniformer.backbone import Backbone
from omniformer.data import TextDataModule
from omniformer.diagnostics import ResidualDiagnostics, gradient_norm, probe_forward, residual_contributions
from omniformer.heads import LMHead
from omniformer.model import OmniModel
from omniformer.tasks import LanguageModelingTask, OptimSettings
from omniformer.tokenizers import TextTokenizer
from tests.helpers.runs import compose_train


def lm_task(vocab: int = 40, dim: int = 16, depth: int = 3, init: str = "scaled") -> LanguageModelingTask:
    torch.manual_seed(0)
    backbone = Backbone(dim=dim, depth=depth, heads=2, max_seq_len=64, init=init)
    net = OmniModel({"text": TextTokenizer(vocab, dim, max_len=64)}, backbone, {"lm": LMHead(dim, vocab)})
    return LanguageModelingTask(net, OptimSettings(lr=3e-3, warmup_steps=0), sample_tokens=0)


def direct_ratios(task: LanguageModelingTask, ids: torch.Tensor) -> list[float]:
    """‖block(x) − x‖ / ‖x‖ block by block, by running the blocks by hand."""
    backbone = task.net.backbone
    tokens = task.net.tokenizers["text"](ids)
    rotary = backbone.rotary(tokens.positions)
    x, ratios = tokens.x, []
    for block in backbone.blocks:
        y = block(x, is_causal=True, rotary=rotary)
        ratios.append(float((y - x).norm() / x.norm()))
        x = y
    return ratios


def test_residual_contributions_match_a_direct_computation():
    task = lm_task().eval()
    with torch.no_grad():  # move the residual projections off their near-zero init
        for block in task.net.backbone.blocks:
            block.attn.proj.weight.normal_(std=0.2)
            block.mlp.proj.weight.normal_(std=0.2)
    ids = torch.randint(40, (4, 12))
    with torch.no_grad():
        got = residual_contributions(task.net.backbone.blocks, lambda: probe_forward(task, (ids, ids)))
        expected = direct_ratios(task, ids)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(expected, rel=1e-5)
    assert min(expected) > 0.05  # the check is not vacuous
    # the hooks are gone afterwards
    assert all(not block._forward_hooks for block in task.net.backbone.blocks)


def test_zero_init_blocks_start_as_the_identity():
    task = lm_task(init="zero").eval()
    ids = torch.randint(40, (2, 8))
    with torch.no_grad():
        ratios = residual_contributions(task.net.backbone.blocks, lambda: probe_forward(task, (ids, ids)))
    assert ratios.tolist() == [0.0, 0.0, 0.0]


def test_gradient_norm_is_the_global_l2_norm():
    a, b = torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(2, 2))
    a.grad, b.grad = torch.tensor([3.0, 0.0, 0.0]), torch.full((2, 2), 2.0)
    assert float(gradient_norm([a, b])) == pytest.approx((9 + 16) ** 0.5)
    assert gradient_norm([torch.nn.Parameter(torch.zeros(1))]) is None


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_callback_records_history_files_and_logs_grad_norm(tmp_path):
    task = lm_task(vocab=65, dim=16, depth=2)
    data = TextDataModule(tokenizer="char", block_size=16, batch_size=4)
    callback = ResidualDiagnostics(every_n_steps=3, grad_norm_every_n_steps=2, probe_samples=2)
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=7,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        log_every_n_steps=2,
        gradient_clip_val=1.0,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=CSVLogger(tmp_path, name="logs", version=""),
        callbacks=[callback],
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=data)

    history = json.loads((tmp_path / "diagnostics" / "residual.json").read_text())
    assert history["steps"] == [0, 3, 6, 7]  # before the first update, every 3 steps, the end
    assert history["blocks"] == 2 and all(len(row) == 4 for row in history["ratios"])
    assert history["grad_norm"]["steps"] == [0, 2, 4, 6]
    assert all(v > 0 for v in history["grad_norm"]["values"])
    # the probe is fixed: recomputing the last probe by hand gives the recorded values
    probe_ids = callback.probe[0]
    with torch.no_grad():
        expected = direct_ratios(task.eval(), probe_ids)
    assert [row[-1] for row in history["ratios"]] == pytest.approx(expected, rel=1e-4)

    rows = list(csv.DictReader((tmp_path / "diagnostics" / "residual.csv").open()))
    assert [int(r["step"]) for r in rows] == history["steps"] and set(rows[0]) == {
        "step",
        "block_0",
        "block_1",
    }
    width, height = _png_size(tmp_path / "diagnostics" / "residual_heatmap.png")
    assert width > 200 and height > 100

    metrics = list(csv.DictReader((tmp_path / "logs" / "metrics.csv").open()))
    logged = {int(r["step"]): float(r["grad_norm"]) for r in metrics if r.get("grad_norm")}
    assert logged == dict(zip(history["grad_norm"]["steps"], history["grad_norm"]["values"]))
    resid = [int(r["step"]) for r in metrics if r.get("resid/block_0")]
    assert resid == history["steps"]


def test_state_dict_round_trip_keeps_history_and_probe():
    callback = ResidualDiagnostics()
    callback.probe = (torch.arange(6).view(2, 3), torch.arange(6).view(2, 3))
    callback.steps, callback._ratios = [0, 50], [torch.tensor([0.1, 0.2]), torch.tensor([0.3, 0.4])]
    callback.grad_steps, callback._grad_norms = [0], [torch.tensor(1.5)]
    restored = ResidualDiagnostics()
    restored.load_state_dict(callback.state_dict())
    assert restored.history() == callback.history()
    assert torch.equal(restored.probe[0], callback.probe[0])


def test_bad_settings_and_tasks_fail_clearly():
    with pytest.raises(ValueError, match="every_n_steps"):
        ResidualDiagnostics(every_n_steps=0)
    with pytest.raises(ValueError, match="probe_samples"):
        ResidualDiagnostics(probe_samples=0)
    with pytest.raises(TypeError, match=r"net\.backbone\.blocks"):
        ResidualDiagnostics._backbone(L.LightningModule())


def test_callbacks_diagnostics_config_keeps_the_defaults():
    cfg = compose_train(["callbacks=diagnostics"])
    assert cfg.callbacks.diagnostics._target_ == "omniformer.diagnostics.ResidualDiagnostics"
    assert {"checkpoint", "lr_monitor", "progress"} <= set(cfg.callbacks)
