"""End-to-end runs of the console entry points on tiny configs, and the errors users get.

The commands run their ``main()`` in this process with a command line (``run_main``: a second, where
a Python process costs 6-13 s); training, generate, eval and a bad input also run as their own
processes in the slow set (the ``entry_point`` fixture).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.overrides import LM_CLI
from tests.helpers.paths import REPO
from tests.helpers.runs import read_results, run_main


@pytest.fixture(scope="module")
def trained_lm(tmp_path_factory) -> Path:
    """One tiny BPE language model trained by omniformer-train's main() with a command line, shared by
    the tests below (test_char_tokenizer_on_a_user_text_file[subprocess] trains in its own process)."""
    run_dir = tmp_path_factory.mktemp("lm_run")
    run_main("omniformer.train", *LM_CLI, f"hydra.run.dir={run_dir}")
    return run_dir


@pytest.mark.slow
def test_training_writes_checkpoints_vocabulary_logs_and_results(trained_lm):
    assert (trained_lm / "checkpoints" / "last.ckpt").is_file()
    assert (trained_lm / "checkpoints" / "best.ckpt").is_file()
    assert json.loads((trained_lm / "vocab.json").read_text())["omniformer_vocab"] == "bpe"
    assert (trained_lm / "logs" / "metrics.csv").is_file()
    results = read_results(trained_lm)
    for key in ("val_loss", "val_ppl", "tokens_per_sec", "steps", "wall_seconds"):
        assert key in results, key
    assert results["steps"] == 6
    assert results["val_ppl"] == pytest.approx(2.718281828 ** results["val_loss"], rel=1e-3)
    assert results["tokens_per_sec"] > 0
    assert (trained_lm / "sample.txt").read_text() == results["sample"]


def test_checkpoint_carries_config_and_vocabulary_and_loads_weights_only(trained_lm):
    checkpoint = torch.load(trained_lm / "checkpoints" / "last.ckpt", weights_only=True)
    section = checkpoint["omniformer"]
    assert section["config"]["model"]["dim"] == 32
    assert section["config"]["data_spec"]["vocab_size"] == 300
    assert "vocab.json" in section["artifacts"]
    assert not any("_orig_mod" in key for key in checkpoint["state_dict"])


def test_generate_reads_the_checkpoint(trained_lm, entry_point):
    proc = entry_point(
        "omniformer.generate",
        f"ckpt={trained_lm / 'checkpoints' / 'last.ckpt'}",
        "prompt=ROMEO:",
        "max_new_tokens=20",
        "temperature=0.8",
        "top_k=50",
    )
    assert proc.stdout.startswith("ROMEO:")
    assert len(proc.stdout) > len("ROMEO:")


@pytest.mark.slow
def test_eval_reports_validation_metrics(trained_lm, tmp_path):
    run_main(
        "omniformer.evaluate",
        f"ckpt={trained_lm / 'checkpoints' / 'best.ckpt'}",
        "split=val",
        f"out_dir={tmp_path}",
    )
    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["split"] == "val" and report["val_loss"] > 0


@pytest.mark.slow
def test_help_and_cfg_job_show_the_composed_config():
    help_text = run_main("omniformer.train", "--help").stdout
    assert "task: language_modeling" in help_text or "language_modeling" in help_text
    job = run_main("omniformer.train", "--cfg", "job", "model=small", "data.block_size=256").stdout
    assert "dim: 384" in job and "block_size: 256" in job


@pytest.mark.slow
def test_char_tokenizer_on_a_user_text_file(tmp_path, entry_point):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question\n" * 200)
    run_dir = tmp_path / "run"
    entry_point(
        "omniformer.train",
        *LM_CLI,
        "data=textfile",
        f"data.path={corpus}",
        "data.tokenizer=char",
        f"hydra.run.dir={run_dir}",
    )
    assert json.loads((run_dir / "vocab.json").read_text())["omniformer_vocab"] == "char"
    assert read_results(run_dir)["steps"] == 6


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data=textfile", "data.path=/nonexistent/corpus.txt"], "/nonexistent/corpus.txt does not exist"),
        (["data.block_size=4096"], "data.block_size=4096 exceeds model.max_seq_len=1024"),
        (["model.widht=3"], "widht"),
        (["optim.lr=fast"], "optim.lr"),
        (["ckpt_path=/nonexistent/last.ckpt"], "/nonexistent/last.ckpt does not exist"),
    ],
)
def test_bad_training_input_fails_with_one_clear_error(args, message, tmp_path):
    proc = run_main("omniformer.train", *args, f"hydra.run.dir={tmp_path}", check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "checkpoints").exists()


def test_non_utf8_corpus_names_the_file_and_offset(tmp_path):
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes(b"hello \xff world")
    proc = run_main(
        "omniformer.train", "data=textfile", f"data.path={corpus}", f"hydra.run.dir={tmp_path}", check=False
    )
    assert proc.returncode != 0
    assert "bad.txt is not valid UTF-8: byte offset 6" in proc.stdout + proc.stderr


class _Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


@pytest.mark.slow
def test_generate_refuses_missing_foreign_and_unsafe_checkpoints(tmp_path):
    missing = run_main("omniformer.generate", f"ckpt={tmp_path / 'nope.ckpt'}", check=False)
    assert missing.returncode != 0 and "nope.ckpt does not exist" in missing.stderr
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    proc = run_main("omniformer.generate", f"ckpt={foreign}", check=False)
    assert proc.returncode != 0 and "is not an omniformer checkpoint" in proc.stderr
    unsafe = tmp_path / "unsafe.ckpt"
    with open(unsafe, "wb") as handle:
        pickle.dump({"omniformer": _Payload(), "state_dict": {}}, handle)
    proc = run_main("omniformer.generate", f"ckpt={unsafe}", check=False)
    assert proc.returncode != 0 and "refusing to load" in proc.stderr
    assert "payload ran" not in proc.stdout


@pytest.mark.slow
def test_configs_ship_with_a_plain_pip_install(tmp_path):
    """A non-editable install (no source checkout on the path) still composes and instantiates."""
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    assert (target / "omniformer" / "conf" / "train.yaml").is_file()
    assert (target / "omniformer" / "data" / "assets" / "tinyshakespeare.txt").is_file()
    code = (
        "import sys; sys.argv=['omniformer-train','--cfg','job','model=base'];"
        "import omniformer.train as t; assert t.__file__.startswith(sys.path[0]), t.__file__; t.main()"
    )
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "dim: 768" in proc.stdout
