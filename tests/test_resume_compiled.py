"""Checkpoints written under ``torch.compile`` load into an eager model and vice versa."""

from __future__ import annotations

import pytest
import torch

from omniformer.checkpoint import load_checkpoint, task_from_checkpoint
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.train import run
from tests.helpers.callbacks import crash, losses, record
from tests.helpers.overrides import LM, LM_WITHOUT_DROPOUT


@pytest.mark.slow
def test_state_dicts_with_compile_prefixes_load_everywhere(tiny_lm_checkpoint, tmp_path):
    """A checkpoint written around a ``torch.compile`` wrapper (``_orig_mod.`` in every backbone key)
    loads for inference and resumes training."""
    checkpoint = load_checkpoint(tiny_lm_checkpoint)  # step 3, written without torch.compile
    checkpoint["state_dict"] = {
        k.replace("net.backbone.", "net.backbone._orig_mod."): v for k, v in checkpoint["state_dict"].items()
    }
    assert any("_orig_mod." in k for k in checkpoint["state_dict"])
    prefixed = tmp_path / "prefixed.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, prefixed)  # as a writer with the wrapper would
    task = task_from_checkpoint(load_checkpoint(prefixed))
    reference = task_from_checkpoint(load_checkpoint(tiny_lm_checkpoint))
    ids = torch.randint(0, 300, (2, 8))
    with torch.no_grad():
        assert torch.equal(
            task.net("text", "lm", ids, causal=True), reference.net("text", "lm", ids, causal=True)
        )
    results = run([*LM, "trainer.max_steps=6", f"ckpt_path={prefixed}"], tmp_path / "resumed")
    assert results["steps"] == 6 and results["resumed_at_step"] == 3
    written = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any("_orig_mod" in k for k in written)


@pytest.mark.slow
def test_compiled_and_eager_checkpoints_resume_each_other(tmp_path):
    """compile=true → crash → resume eager, and eager → crash → resume compiled: both repeat the
    uninterrupted eager run's losses (compiled kernels round differently: within 1e-4)."""
    run([*LM_WITHOUT_DROPOUT, *record(tmp_path / "eager.jsonl")], tmp_path / "eager")
    reference = losses(tmp_path / "eager.jsonl")
    for first, then in (("true", "false"), ("false", "true")):
        name = f"{first}-{then}"
        with pytest.raises(RuntimeError, match="simulated crash"):
            run(
                [*LM_WITHOUT_DROPOUT, f"compile={first}", *crash(4), *record(tmp_path / f"{name}.jsonl")],
                tmp_path / name,
            )
        written = load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")
        assert written["global_step"] == 4 and not any("_orig_mod" in k for k in written["state_dict"])
        run(
            [*LM_WITHOUT_DROPOUT, f"compile={then}", "ckpt_path=last", *record(tmp_path / f"{name}.jsonl")],
            tmp_path / name,
        )
        curve = losses(tmp_path / f"{name}.jsonl")
        assert sorted(curve) == list(range(1, 7))
        for step, loss in curve.items():
            assert loss == pytest.approx(reference[step], abs=1e-4), (name, step)
