"""Checkpoints written under ``torch.compile`` load into an eager model and vice versa."""

from __future__ import annotations

import pytest
import torch

from omniformer.checkpoint import load_checkpoint, task_from_checkpoint
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.train import run
from tests.test_resume import LM, crash, losses, record

ARGS = [a for a in LM if not a.startswith(("trainer.max_steps", "model.dropout"))]
ARGS += ["trainer.max_steps=6", "model.dropout=0.0"]


@pytest.fixture(scope="module")
def eager_checkpoint(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eager")
    run([*ARGS, "trainer.max_steps=3"], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def test_state_dicts_with_compile_prefixes_load_everywhere(eager_checkpoint, tmp_path):
    """A checkpoint written around a ``torch.compile`` wrapper (``_orig_mod.`` in every backbone key)
    loads for inference and resumes training."""
    checkpoint = load_checkpoint(eager_checkpoint)
    checkpoint["state_dict"] = {
        k.replace("net.backbone.", "net.backbone._orig_mod."): v for k, v in checkpoint["state_dict"].items()
    }
    assert any("_orig_mod." in k for k in checkpoint["state_dict"])
    prefixed = tmp_path / "prefixed.ckpt"
    AtomicCheckpointIO().save_checkpoint(checkpoint, prefixed)  # as a writer with the wrapper would
    task = task_from_checkpoint(load_checkpoint(prefixed))
    reference = task_from_checkpoint(load_checkpoint(eager_checkpoint))
    ids = torch.randint(0, 300, (2, 8))
    with torch.no_grad():
        assert torch.equal(
            task.net("text", "lm", ids, causal=True), reference.net("text", "lm", ids, causal=True)
        )
    results = run([*ARGS, f"ckpt_path={prefixed}"], tmp_path / "resumed")
    assert results["steps"] == 6 and results["resumed_at_step"] == 3
    written = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any("_orig_mod" in k for k in written)


@pytest.mark.slow
def test_compiled_and_eager_checkpoints_resume_each_other(tmp_path):
    """compile=true → crash → resume eager, and eager → crash → resume compiled: both repeat the
    uninterrupted eager run's losses (compiled kernels round differently: within 1e-4)."""
    run([*ARGS, *record(tmp_path / "eager.jsonl")], tmp_path / "eager")
    reference = losses(tmp_path / "eager.jsonl")
    for first, then in (("true", "false"), ("false", "true")):
        name = f"{first}-{then}"
        with pytest.raises(RuntimeError, match="simulated crash"):
            run([*ARGS, f"compile={first}", *crash(4), *record(tmp_path / f"{name}.jsonl")], tmp_path / name)
        written = load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")
        assert written["global_step"] == 4 and not any("_orig_mod" in k for k in written["state_dict"])
        run(
            [*ARGS, f"compile={then}", "ckpt_path=last", *record(tmp_path / f"{name}.jsonl")], tmp_path / name
        )
        curve = losses(tmp_path / f"{name}.jsonl")
        assert sorted(curve) == list(range(1, 7))
        for step, loss in curve.items():
            assert loss == pytest.approx(reference[step], abs=1e-4), (name, step)
