"""The Python API (issue #16): ``omniformer.load`` → ``predict`` / ``generate``, ``omniformer.train``, and
the README's own snippets, run against the session's tiny models."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import omniformer
from omniformer.export import export
from omniformer.generate import generate_text
from omniformer.predict import predict
from tests.helpers.overrides import IMAGE, LM, MNIST_FIXTURE_DATA
from tests.helpers.paths import FIXTURES, REPO
from tests.helpers.runs import run_main

DIGITS = [FIXTURES / "mnist" / "png" / "t10k_0_label7.png", FIXTURES / "mnist" / "png" / "t10k_1_label2.png"]
CLIPS = sorted((FIXTURES / "fsdd" / "recordings").glob("*.wav"))[:2]


@pytest.fixture(scope="module")
def lm_folder(tiny_lm_checkpoint, tmp_path_factory) -> Path:
    return export(tiny_lm_checkpoint, tmp_path_factory.mktemp("api") / "shakespeare").path


@pytest.fixture(scope="module")
def digits_folder(tiny_mnist_run, tmp_path_factory) -> Path:
    return export(
        tiny_mnist_run / "checkpoints" / "best.ckpt", tmp_path_factory.mktemp("api") / "digits"
    ).path


def test_generate_equals_generate_text_from_the_folder_and_the_checkpoint(lm_folder, tiny_lm_checkpoint):
    settings = {"max_new_tokens": 8, "temperature": 0.9, "top_k": 20, "seed": 5, "num_samples": 2}
    expected = generate_text(str(tiny_lm_checkpoint), "ROMEO:", device="cpu", **settings)
    assert omniformer.load(lm_folder).generate("ROMEO:", **settings) == expected
    assert omniformer.load(tiny_lm_checkpoint).generate("ROMEO:", **settings) == expected
    assert len(expected) == 2 and expected[0] != expected[1] and expected[0].startswith("ROMEO:")


def test_the_generate_cli_reads_a_model_folder(lm_folder, tiny_lm_checkpoint):
    args = ["prompt=ROMEO:", "max_new_tokens=5", "seed=3", "device=cpu"]
    from_folder = run_main("omniformer.generate", f"ckpt={lm_folder}", *args).stdout
    assert from_folder == run_main("omniformer.generate", f"ckpt={tiny_lm_checkpoint}", *args).stdout


def test_predict_equals_the_predict_command_for_images_and_audio(
    digits_folder, tiny_mnist_run, tiny_fsdd_run
):
    ckpt = tiny_mnist_run / "checkpoints" / "best.ckpt"
    rows = omniformer.load(digits_folder).predict(DIGITS, top_k=3)
    assert rows == predict(str(ckpt), [str(p) for p in DIGITS], top_k=3)
    assert [row["input"] for row in rows] == [str(p) for p in DIGITS] and len(rows[0]["top"]) == 3
    audio = omniformer.load(tiny_fsdd_run / "checkpoints" / "best.ckpt")
    top = audio.predict(CLIPS)[0]["top"]
    assert {t["label"] for t in top} == {"0", "1"} and sum(t["prob"] for t in top) == pytest.approx(
        1, abs=1e-5
    )
    proc = run_main("omniformer.predict", f"ckpt={digits_folder}", f"inputs=[{DIGITS[0]}]", "top_k=2")
    assert proc.stdout.startswith(f"{DIGITS[0]}: {rows[0]['top'][0]['label']}")


def test_the_model_object_says_what_it_is_and_refuses_the_wrong_call(digits_folder, lm_folder):
    digits, lm = omniformer.load(digits_folder), omniformer.load(lm_folder)
    assert (digits.kind, lm.kind) == ("classifier", "language_model")
    assert not digits.net.training and digits.config["classes"] == digits.class_names
    assert isinstance(digits, omniformer.Model) and "classifier" in repr(digits)
    with pytest.raises(
        ValueError, match=r"was trained as ClassificationTask, a classifier, not a language model"
    ):
        digits.generate("x")
    with pytest.raises(ValueError, match=r"a language model, not a classifier: predict needs a classifier"):
        lm.predict(DIGITS)
    with pytest.raises(ValueError, match=r"^temperature=-1"):
        lm.generate("x", temperature=-1)
    with pytest.raises(ValueError, match=r"top_k=0: give a whole number >= 1"):
        digits.predict(DIGITS, top_k=0)


@pytest.mark.slow
def test_import_omniformer_is_light_and_offers_load_and_fit():
    import subprocess
    import sys

    script = "import sys, omniformer; print('torch' in sys.modules, callable(omniformer.load))"
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert proc.stdout.split() == ["False", "True"], proc.stderr[-2000:]
    assert callable(omniformer.fit)


def test_train_from_python_returns_results_and_the_run_folder(tmp_path):
    results, run_dir = omniformer.fit(overrides=[*LM, "trainer.max_steps=2"], run_dir=tmp_path / "run")
    assert run_dir == (tmp_path / "run").resolve()
    assert results["val_loss"] > 0 and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "results.json").is_file()


# -- the README's snippets ---------------------------------------------------------------------------------
def readme_snippets(section: str) -> list[str]:
    """The ```python blocks of the README section headed ``section``."""
    text = (REPO / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


def test_the_readme_load_predict_generate_snippet_runs(digits_folder, lm_folder, capsys):
    snippet = readme_snippets("Use a trained model from Python")[0]
    for old, new in {
        '"models/digits"': repr(str(digits_folder)),
        '"models/shakespeare"': repr(str(lm_folder)),
        '"seven.png"': repr(str(DIGITS[0])),
        "max_new_tokens=100": "max_new_tokens=5",
    }.items():
        assert old in snippet
        snippet = snippet.replace(old, new)
    exec(compile(snippet, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith(str(DIGITS[0])) and printed[1].startswith("ROMEO:")


@pytest.mark.slow
def test_the_readme_training_snippet_runs(tmp_path, capsys):
    snippet = readme_snippets("Use a trained model from Python")[1]
    tiny = [*IMAGE, *MNIST_FIXTURE_DATA, "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=1"]
    overrides = re.search(r"overrides=\[.*?\]", snippet).group(0)
    snippet = snippet.replace(overrides, f"overrides={tiny!r}")
    snippet = snippet.replace('"outputs/digits"', repr(str(tmp_path / "digits")))
    scope: dict = {}
    exec(compile(snippet, "README.md", "exec"), scope)
    assert scope["model"].kind == "classifier" and 0 <= scope["results"]["val_acc"] <= 1
