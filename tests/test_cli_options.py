"""omniformer-generate's sampling settings reach the model or fail naming the key; omniformer-eval's
default output folder is the run's ``eval/`` or sits beside a checkpoint copied anywhere else."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from omniformer import inference
from omniformer.evaluate import default_out_dir, evaluate
from omniformer.generate import generate_text
from omniformer.sampling import sample_next
from omniformer.train import run
from tests.helpers.overrides import LM
from tests.helpers.runs import run_main

BLOCK_SIZE = 16  # data.block_size in LM


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    run([*LM, "trainer.max_steps=2"], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


# -- generate -------------------------------------------------------------------------------------
@pytest.mark.parametrize("top_k", [None, 0, 50, 80])
def test_top_k_zero_none_or_at_least_the_vocabulary_sample_the_full_distribution(top_k):
    logits = torch.randn(4, 50)
    full = [sample_next(logits, 1.0, None, torch.Generator().manual_seed(i)) for i in range(20)]
    draws = [sample_next(logits, 1.0, top_k, torch.Generator().manual_seed(i)) for i in range(20)]
    assert all(torch.equal(a, b) for a, b in zip(full, draws))


def test_top_k_one_is_the_arg_max():
    logits = torch.randn(4, 50)
    assert torch.equal(sample_next(logits, 1.0, 1), logits.argmax(dim=-1, keepdim=True))


def test_the_cli_samples_with_top_k_zero(trained):
    """``top_k=0`` used to end in a shape error inside ``torch.topk``."""
    proc = run_main(
        "omniformer.generate", f"ckpt={trained}", "prompt=ROMEO:", "max_new_tokens=5", "top_k=0", "device=cpu"
    )
    assert proc.stdout.startswith("ROMEO:")


@pytest.mark.parametrize(
    "setting, value",
    [
        ("top_k", -1),
        ("top_k", 2.5),
        ("temperature", -0.5),
        ("temperature", float("nan")),
        ("max_new_tokens", -1),
        ("context_len", 1),
        ("context_len", -4),
        ("num_samples", 0),
        ("top_p", 0),
        ("top_p", 1.5),
        ("top_p", "high"),
        ("stop", ""),
        ("stop", ["\n", ""]),
    ],
)
def test_bad_sampling_settings_fail_naming_the_key(setting, value, trained):
    with pytest.raises(ValueError, match=rf"^{setting}="):
        generate_text(str(trained), "ROMEO:", device="cpu", **{setting: value})


@pytest.fixture
def sampled_with(monkeypatch) -> list[dict]:
    """The settings each sample is drawn with, recorded at the one sampling path of
    ``omniformer-generate`` and ``omniformer.load(...).generate`` (no text is generated)."""
    calls = []

    def record(net, vocab, prompt, *, window, top_k, temperature, **_):  # the rest: seed, top_p, stop...
        calls.append({"context_len": window, "top_k": top_k, "temperature": temperature})
        return prompt

    monkeypatch.setattr(inference, "sample_text", record)
    return calls


def run_generate_main(monkeypatch, *args: str) -> None:
    """``omniformer-generate <args>`` in this process (so that the task's settings can be seen)."""
    from omniformer.generate import main

    monkeypatch.setattr(sys, "argv", ["omniformer-generate", *args])
    main()


@pytest.mark.slow
def test_the_cli_passes_context_len_to_the_model(trained, sampled_with, monkeypatch):
    run_generate_main(monkeypatch, f"ckpt={trained}", "max_new_tokens=1", "device=cpu", "context_len=3")
    run_generate_main(monkeypatch, f"ckpt={trained}", "max_new_tokens=1", "device=cpu", "top_k=0")
    assert sampled_with == [
        {"context_len": 3, "top_k": 200, "temperature": 0.8},
        {"context_len": BLOCK_SIZE, "top_k": 0, "temperature": 0.8},  # default: the training block size
    ]


# -- eval's output folder -------------------------------------------------------------------------
def test_default_out_dir_is_the_run_s_eval_folder_or_beside_the_checkpoint(tmp_path):
    root = tmp_path.resolve()
    assert default_out_dir(root / "run" / "checkpoints" / "best.ckpt") == root / "run" / "eval"
    assert default_out_dir(root / "x" / "model.ckpt") == root / "x" / "eval"
    assert default_out_dir(root / "model.ckpt") == root / "eval"


@pytest.mark.slow
def test_eval_of_a_copied_checkpoint_writes_beside_the_copy_not_above_it(trained, tmp_path):
    copy = tmp_path / "x" / "model.ckpt"
    copy.parent.mkdir()
    shutil.copyfile(trained, copy)
    evaluate(str(copy), split="val", figures=False, accelerator="cpu")
    assert (tmp_path / "x" / "eval" / "eval.json").is_file()
    assert not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_eval_of_a_run_checkpoint_writes_into_the_run(trained):
    evaluate(str(trained), split="val", figures=False, accelerator="cpu")
    assert (trained.parent.parent / "eval" / "eval.json").is_file()
