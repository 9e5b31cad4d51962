"""Determinism switch: ``seed`` + ``trainer.deterministic=true`` gives bit-identical CPU runs."""

from __future__ import annotations

import pytest
import torch

from omniformer.checkpoint import load_checkpoint
from omniformer.train import run
from tests.helpers.data import image_folder
from tests.helpers.overrides import LM, image_args


def final_weights(run_dir) -> dict[str, torch.Tensor]:
    return load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"]


@pytest.mark.slow
def test_two_deterministic_runs_end_with_identical_weights(tmp_path):
    # Image classification: shuffling, random crops and flips, dropout — every random stream in play.
    args = [
        *image_args(image_folder(tmp_path / "images")),
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
    ]
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        run([*args, f"seed={seed}"], tmp_path / name)
    first, second, other = (final_weights(tmp_path / name) for name in "abc")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)  # bit for bit
    assert any(not torch.equal(first[k], other[k]) for k in first)  # the seed does matter


@pytest.mark.slow
def test_two_deterministic_language_model_runs_are_bit_identical(tmp_path):
    args = [*LM, "trainer.max_steps=6", "trainer.deterministic=true"]
    run(args, tmp_path / "a")
    run(args, tmp_path / "b")
    first, second = final_weights(tmp_path / "a"), final_weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert torch.are_deterministic_algorithms_enabled()
    run([*LM, "trainer.max_steps=1"], tmp_path / "c")  # and the switch is off again without it
    assert not torch.are_deterministic_algorithms_enabled()
