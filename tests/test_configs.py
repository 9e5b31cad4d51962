"""The default config, the model sizes, the nanoGPT preset and the README's commands compose as
documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.runs import compose_train

# Every option of every group composes and passes omniformer's checks:
# tests/test_config_validation.py::test_every_shipped_option_composes_and_passes_the_checks.


def test_default_is_bpe_language_modelling_on_shakespeare():
    cfg = compose_train()
    assert cfg.task._target_.endswith("LanguageModelingTask")
    assert cfg.data._target_.endswith("TextDataModule") and cfg.data.path is None
    assert cfg.data.tokenizer == "bpe"
    assert (cfg.model.dim, cfg.model.depth, cfg.model.heads) == (128, 4, 4)


@pytest.mark.parametrize(("size", "dim", "depth"), [("tiny", 128, 4), ("small", 384, 6), ("base", 768, 12)])
def test_model_sizes(size, dim, depth):
    cfg = compose_train([f"model={size}"])
    assert (cfg.model.dim, cfg.model.depth) == (dim, depth)
    assert cfg.model.backbone.dim == dim  # the Backbone is built from the size's keys


def test_documented_override_keys_exist():
    cfg = compose_train(
        [
            "trainer.max_steps=5",
            "data.block_size=32",
            "data.batch_size=3",
            "data.tokenizer=char",
            "optim.lr=3e-4",
        ]
    )
    assert cfg.trainer.max_steps == 5 and cfg.optim.lr == 3e-4 and "ckpt_path" in cfg and "seed" in cfg


def test_nanogpt_preset_matches_the_reference_configuration():
    cfg = compose_train(["experiment=shakespeare_char"])
    assert cfg.data.tokenizer == "char" and cfg.data.block_size == 64 and cfg.data.batch_size == 12
    assert (cfg.model.dim, cfg.model.depth, cfg.model.heads, cfg.model.dropout) == (128, 4, 4, 0.0)
    assert cfg.trainer.max_steps == 2000 and cfg.trainer.gradient_clip_val == 1.0
    assert (cfg.optim.lr, cfg.optim.min_lr, cfg.optim.warmup_steps) == (1e-3, 1e-4, 100)
    assert list(cfg.optim.betas) == [0.9, 0.99] and cfg.optim.weight_decay == 0.1


def readme_train_commands() -> list[list[str]]:
    """The overrides of every ``omniformer-train`` command in the README: whole lines of its code
    blocks, and inline code spans elsewhere (the results table)."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    commands, in_block = [], False
    for raw in readme.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if in_block:
            lines = [raw.split("#", 1)[0].strip()]
        else:
            lines = re.findall(r"`(omniformer-train[^`]*)`", raw)
        for line in lines:
            if "omniformer-train" not in line or "--multirun" in line or "<" in line or "searchpath" in line:
                continue
            words = shlex.split(line[line.index("omniformer-train") :])[1:]
            commands.append([w for w in words if w not in ("--help", "...") and not w.startswith("--cfg")])
    return commands


@pytest.mark.slow
@pytest.mark.parametrize("overrides", readme_train_commands(), ids=" ".join)
def test_readme_training_commands_compose(overrides):
    cfg = compose_train(overrides)
    assert cfg.task and cfg.data and cfg.model
