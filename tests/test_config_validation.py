"""Config validation: wrong types, unknown keys and impossible combinations fail before any data is
read, each with a message naming the key and the value."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import MISSING, OmegaConf, open_dict

from omniformer.backbone import Backbone
from omniformer.config import DATA_SCHEMA_NAMES, TRAIN_KEYS, ConfigError, check_train_config
from omniformer.train import run
from tests.helpers.runs import compose_train

CONF = Path(__file__).resolve().parents[1] / "omniformer" / "conf"
IMAGE = ["task=image_classification", "data=mnist"]
FOLDER = ["task=image_classification", "data=image_folder", "data.root=/photos"]
AUDIO = ["task=audio_classification", "data=spoken_digits", "data.root=/fsdd"]

# (overrides, the message that must appear)
CASES = [
    # wrong types
    (
        ["data.batch_size=1.5"],
        "data.batch_size=1.5: Value '1.5' of type 'float' could not be converted to Integer",
    ),
    (
        ["data.val_fraction=most"],
        "data.val_fraction='most': Value 'most' of type 'str' could not be converted to Float",
    ),
    (
        [*AUDIO, "data.sample_rate=fast"],
        "data.sample_rate='fast': Value 'fast' of type 'str' could not be converted",
    ),
    ([*IMAGE, "data.download=maybe"], "data.download='maybe': Value 'maybe' is not a valid bool"),
    ([*IMAGE, "data.image_size=big"], "data.image_size='big': expected a positive int or [height, width]"),
    (
        [*FOLDER, "data.patch_size=[8,0]"],
        "data.patch_size=[8, 0]: expected a positive int or [height, width]",
    ),
    (["task.top_k=abc"], "task.top_k='abc': omniformer.tasks.LanguageModelingTask expects int | None"),
    (["task.temperature=hot"], "task.temperature='hot': omniformer.tasks.LanguageModelingTask expects float"),
    (
        [*IMAGE, "task.net.heads.classifier.pool=max"],
        "task.net.heads.classifier.pool='max': omniformer.heads.ClassificationHead expects one of 'cls', "
        "'mean'",
    ),
    (
        ["callbacks.checkpoint.every_n_train_steps=often"],
        "callbacks.checkpoint.every_n_train_steps='often': omniformer.run_checkpoint.RunCheckpoint "
        "expects int | None",
    ),
    (
        ["callbacks.nonfinite.action=ignore"],
        "callbacks.nonfinite.action='ignore': omniformer.callbacks.NonFiniteGuard expects one of "
        "'stop', 'skip'",
    ),
    (["seed=abc"], "seed='abc': expected an int"),
    (["compile=maybe"], "compile='maybe': expected true or false"),
    (["ckpt_path=123"], "ckpt_path=123: expected a path, 'last', 'auto' or null"),
    # unknown keys and targets
    (["+data.blok_size=3"], "data.blok_size=3: unknown key for omniformer.data.TextDataModule"),
    ([*IMAGE, "+data.img_size=32"], "data.img_size=32: unknown key for omniformer.data.MNISTDataModule"),
    (
        ["+task.label_smothing=0.1"],
        "task.label_smothing=0.1: unknown key for omniformer.tasks.LanguageModelingTask",
    ),
    (
        ["+trainer.use_distributed_samplr=false"],
        "trainer.use_distributed_samplr=False: unknown key for lightning.Trainer",
    ),
    (["+callbacks.checkpoint.every_n_step=5"], "callbacks.checkpoint.every_n_step=5: unknown key for"),
    (["+seeed=5"], "seeed=5: unknown top-level key; did you mean seed? (top-level keys: seed, ckpt_path,"),
    (["+steps=5"], "steps=5: unknown top-level key (top-level keys: seed,"),
    (
        ["+callbacks.checkpont.every_n_train_steps=5"],
        "callbacks.checkpont={'every_n_train_steps': 5}: a callback needs a _target_ (the class to build); "
        "did you mean callbacks.checkpoint?",
    ),
    (
        ["task.net.tokenizers.text._target_=omniformer.tokenizers.Nope"],
        "task.net.tokenizers.text._target_='omniformer.tokenizers.Nope': cannot be imported",
    ),
    # impossible combinations
    (["model.dim=30"], "model.heads=4 must divide model.dim=30"),
    (
        ["model.dim=36", "model.heads=4"],
        "model.dim=36, model.heads=4: rotary positions (model.rope=True) need an even head size, got 9",
    ),
    (["model.depth=0"], "model.depth=0 must be positive"),
    (["model.mlp=relu"], "model.mlp='relu': omniformer.backbone.Backbone expects one of 'gelu', 'swiglu'"),
    (["optim.min_lr=1"], "optim.min_lr=1.0 must lie between 0 and optim.lr=0.001"),
    (
        [*AUDIO, "task.net.tokenizers.audio.tokens=patches", "task.net.tokenizers.audio.patch_size=[7,4]"],
        "task.net.tokenizers.audio.patch_size=[7, 4]: the mel bands per patch must divide "
        "task.net.tokenizers.audio.n_mels=64",
    ),
    (
        ["task=multitask", "task.net.tokenizers.audio.max_tokens=0"],
        "task.net.tokenizers.audio.max_tokens=0 leaves no room for one column of 1 patches",
    ),
    (["data.block_size=2048"], "data.block_size=2048 exceeds model.max_seq_len=1024"),
    ([*IMAGE, "data.patch_size=5"], "data.patch_size=5: does not divide data.image_size=28"),
    (
        [*FOLDER, "data.image_size=[32,48]", "data.patch_size=[8,5]"],
        "data.patch_size=[8, 5]: does not divide data.image_size=[32, 48]",
    ),
    (
        [*IMAGE, "data.patch_size=1", "model.max_seq_len=512"],
        "data.image_size=28, data.patch_size=1: 784 image tokens exceed model.max_seq_len=512",
    ),
    (
        [*IMAGE, "model.dim=34", "model.heads=2", "model.rope=false"],
        "model.dim=34: 2-D sin-cos image positions need a width divisible by 4",
    ),
    (
        ["task=image_classification"],
        "task.modality='image': the data (data._target_=omniformer.data.TextDataModule) yields text",
    ),
    (
        ["task=audio_classification", "data=mnist"],
        "task.modality='audio': the data (data._target_=omniformer.data.MNISTDataModule) yields image",
    ),
    (
        ["task=text_classification", "data=shakespeare"],
        "yields next-token windows for language modelling, not labelled texts",
    ),
    (
        ["callbacks.checkpoint.monitor=val_acc"],
        "callbacks.checkpoint.monitor='val_acc': LanguageModelingTask logs val_loss, val_ppl",
    ),
    (
        [*IMAGE, "callbacks.checkpoint.monitor=val_accuracy"],
        "callbacks.checkpoint.monitor='val_accuracy': ClassificationTask logs",
    ),
    (["trainer.max_steps=-1"], "trainer.max_steps=-1: language-model windows are sampled endlessly"),
    (
        ["trainer.max_steps=0"],
        "trainer.max_steps=0: must be a positive number of optimizer steps, or -1 for no step limit",
    ),
    ([*IMAGE, "trainer.max_steps=-5"], "trainer.max_steps=-5: must be a positive number of optimizer steps"),
    (
        ["trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val=-1.0: must be positive (the largest gradient norm or value), or null or 0",
    ),
    (
        ["trainer=fsdp", "trainer.accelerator=cpu"],
        "trainer.accelerator='cpu': Lightning's FSDP strategy needs GPUs",
    ),
    ([*IMAGE, "data.val_size=-5"], "data.val_size=-5: expected a count or a fraction between 0 and 1"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("overrides", "message"), CASES, ids=[" ".join(c[0])[-60:] for c in CASES])
def test_each_bad_config_is_named_with_its_value(overrides, message):
    try:
        cfg = compose_train(overrides)
    except ConfigCompositionException as err:
        # Data groups whose YAML lists a schema refuse a wrong type even earlier, while composing,
        # naming the override (key and value) they could not merge.
        assert f"Error merging override {overrides[-1]}" in str(err)
        return
    with pytest.raises(ConfigError) as caught:
        check_train_config(cfg)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.dim=abc", "model.dim=abc"),
        ("optim.lr=fast", "optim.lr=fast"),
        ("trainer.max_steps=abc", "trainer.max_steps=abc"),
        ("model.widht=3", "model.widht"),
        ("data.block_size=abc", "data.block_size=abc"),
    ],
)
def test_groups_with_schemas_in_their_defaults_fail_while_composing(override, key):
    with pytest.raises(ConfigCompositionException) as caught:
        compose_train([override])
    assert key in str(caught.value)


@pytest.mark.slow
def test_every_problem_is_listed_in_one_error():
    with pytest.raises(ConfigError) as caught:
        check_train_config(compose_train(["model.dim=30", "task.temperature=hot", "compile=x"]))
    message = str(caught.value)
    for part in ("model.heads=4 must divide model.dim=30", "task.temperature='hot'", "compile='x'"):
        assert part in message
    assert len(caught.value.problems) >= 3  # and whatever interpolates them (task.context_len...)


# What each option needs beside it to make a valid run: its matching task or data, and the keys a user
# must set (``???`` in its file).
DATA_TASK = {
    "mnist": ["task=image_classification"],
    "fashion_mnist": ["task=image_classification"],
    "cifar10": ["task=image_classification"],
    "cifar100": ["task=image_classification"],
    "image_folder": ["task=image_classification", "data.root=/x"],
    "shakespeare": ["task=language_modeling"],
    "textfile": ["task=language_modeling", "data.path=/x"],
    "spoken_digits": ["task=audio_classification", "data.root=/x"],
    "speech_commands": ["task=audio_classification"],
    "audio_folder": ["task=audio_classification", "data.root=/x"],
    "movie_reviews": ["task=text_classification"],
    "text_csv": ["task=text_classification", "data.path=/x"],
    "digit_strings": ["task=prefix_lm", "prefix=image"],
    "spoken_digit_utterances": ["task=prefix_lm", "prefix=audio", "data.root=/x"],
    "paired": ["task=prefix_lm", "prefix=image"],
    "multitask": ["task=multitask"],
}
TASK_DATA = {
    "image_classification": ["data=mnist"],
    "audio_classification": ["data=spoken_digits", "data.root=/x"],
    "text_classification": ["data=movie_reviews"],
    "prefix_lm": ["data=digit_strings", "prefix=image"],
}
PREFIX_DATA = {"image": ["data=digit_strings"], "audio": ["data=spoken_digit_utterances", "data.root=/x"]}
NEEDS_ROOT = {"spoken_digits", "transcribe_digits"}  # experiments whose data.root is required
TRAIN_GROUPS = [
    "task",
    "paths",
    "data",
    "prefix",
    "model",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "experiment",
    "debug",
]


def group_options(group: str) -> list[str]:
    """The options of a config group: its YAML files, less the partials (``_name.yaml``)."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml") if not p.stem.startswith("_"))


def shipped_combinations() -> list[list[str]]:
    """Every option of every group omniformer-train composes, each with what it needs beside it."""
    combos = []
    for group in TRAIN_GROUPS:
        for option in group_options(group):
            needs = {
                "data": DATA_TASK.get(option, []),
                "task": TASK_DATA.get(option, []),
                "prefix": ["task=prefix_lm", *PREFIX_DATA.get(option, [])],
                "experiment": ["data.root=/x"] if option in NEEDS_ROOT else [],
            }.get(group, [])
            combos.append([f"{group}={option}", *needs])
    return combos


def test_every_option_of_every_group_is_listed():
    """A new config group omniformer-train composes must join TRAIN_GROUPS (so its options are checked)."""
    groups = {p.name for p in CONF.iterdir() if p.is_dir() and not p.name.startswith("_")}
    # multitask members: tests/test_multitask.py; Optuna presets need an optional plugin: tests/test_sweeps.py
    assert groups - set(TRAIN_GROUPS) <= {"tasks", "hparams_search"}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", shipped_combinations(), ids=lambda o: " ".join(o))
def test_every_shipped_option_composes_and_passes_the_checks(overrides):
    cfg = compose_train(overrides)
    check_train_config(cfg)
    # Everything but run-time values (data_spec, Hydra's run dir) must resolve.
    container = OmegaConf.to_container(cfg, resolve=False)
    assert container["task"] and container["data"] and container["model"]


def test_the_top_level_keys_are_those_train_yaml_composes():
    assert set(compose_train([]).keys()) | {"hydra"} == set(TRAIN_KEYS)


def test_the_model_group_is_the_backbones_arguments_declared_once():
    """The model schema is Backbone's signature, and model.backbone hands every argument on."""
    cfg = compose_train(["model=small", "model.mlp=swiglu"])
    params = inspect.signature(Backbone).parameters
    assert [k for k in cfg.model if k != "backbone"] == list(params)
    assert {k: cfg.model.backbone[k] for k in params} == {k: cfg.model[k] for k in params}
    assert cfg.model.backbone.mlp == "swiglu" and cfg.model.backbone.dim == 384
    defaults = compose_train([]).model
    assert all(defaults[k] == p.default for k, p in params.items() if k not in ("dim", "depth", "heads"))


def test_the_optim_schema_is_optim_settings():
    from omniformer.config import OptimSchema
    from omniformer.tasks import OptimSettings

    assert issubclass(OptimSchema, OptimSettings)
    names = [f.name for f in dataclasses.fields(OptimSchema)]
    assert names == [f.name for f in dataclasses.fields(OptimSettings)] + ["_target_"]


class Grouped:
    """A class from outside omniformer's config tree with a rule among its arguments."""

    def __init__(self, dim: int, groups: int = 3) -> None:
        self.dim, self.groups = dim, groups

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        if args["groups"] <= 0 or args["dim"] % args["groups"]:
            return ["{groups} must divide {dim}"]
        return []


def test_any_target_with_check_config_is_checked_naming_the_keys_a_user_sets():
    cfg = compose_train(["model.dim=128"])
    with open_dict(cfg):
        cfg.task.net.tokenizers.grouped = {"_target_": f"{__name__}.Grouped", "dim": "${model.dim}"}
    with pytest.raises(ConfigError) as caught:
        check_train_config(cfg)
    # the interpolated dim is named by its source, the default groups by the node's own key
    assert caught.value.problems == ["task.net.tokenizers.grouped.groups=3 must divide model.dim=128"]
    with open_dict(cfg):
        cfg.task.net.tokenizers.grouped.groups = 4
    check_train_config(cfg)


def test_data_schemas_are_registered_for_the_defaults_lists():
    from hydra.core.config_store import ConfigStore

    from omniformer.config import register_schemas

    register_schemas()
    stored = ConfigStore.instance().repo["data"]
    assert {f"{name}.yaml" for name in DATA_SCHEMA_NAMES} <= set(stored)


def test_a_bad_config_fails_before_any_data_is_read(tmp_path):
    missing = tmp_path / "no-such-corpus.txt"
    cache = tmp_path / "cache"
    with pytest.raises(ConfigError, match=r"model\.heads=4 must divide model\.dim=30"):
        run(
            ["data=textfile", f"data.path={missing}", f"data.cache_dir={cache}", "model.dim=30"],
            tmp_path / "run",
        )
    assert not cache.exists()  # the corpus was never looked for, nothing tokenised
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_data_schema_defaults_are_the_data_modules_defaults():
    """A data YAML that lists its schema in ``defaults`` gets the schema's values for keys it does not
    set; they must be what the data module would use anyway."""
    import inspect
    from dataclasses import fields

    from hydra.utils import get_class

    from omniformer.config import DATA_SCHEMAS

    for target, schema in DATA_SCHEMAS.items():
        cls = get_class(target)
        defaults = {}
        for klass in reversed(cls.__mro__):
            if "__init__" in vars(klass):
                for name, param in inspect.signature(klass.__init__).parameters.items():
                    if param.default is not inspect.Parameter.empty:
                        defaults[name] = param.default
        for f in fields(schema):
            if f.name.startswith("_") or f.name not in defaults:
                continue
            value = f.default_factory() if callable(f.default_factory) else f.default
            if value is MISSING or f.name in ("seed", "sample_rate", "max_seconds", "val_size", "root"):
                continue  # set by every YAML (or by the subclass's own signature)
            expected = defaults[f.name]
            expected = list(expected) if isinstance(expected, tuple) else expected
            assert value == expected, (
                f"{schema.__name__}.{f.name}={value!r}, {target} defaults to {expected!r}"
            )
