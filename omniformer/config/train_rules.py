"""omniformer's rules for a composed ``train`` config, across the keys no single class sees together.

:func:`check_train_config` runs, before any data is read:

* every ``_target_`` node through :mod:`omniformer.config.targets` (signatures, data schemas, each
  class's ``check_config``), and the ``model`` group as the Backbone's arguments;
* rules across nodes: block size vs positions, patch size vs image size, image tokens vs positions,
  the task reading the modality its data yields, the metric the checkpoint watches, a step limit for
  endless sampling, FSDP on CPU, a step limit and gradient clipping that mean something, the types of
  the top-level values;
* required keys left without a value (``data.path`` of ``data=textfile``);
* keys nothing reads: a top-level key that is not one of :data:`TRAIN_KEYS` (``+seeed=5``), and a
  callback or logger without a ``_target_`` (``+callbacks.checkpont.every_n_train_steps=5``), with the
  close matches.
"""

from __future__ import annotations

from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from omniformer.backbone import Backbone
from omniformer.config.schemas import AudioDataSchema, ImageDataSchema, TextDataSchema, schema_for
from omniformer.config.targets import UNSET, ConfigError, check_arguments, check_targets, close_matches
from omniformer.config.targets import show as _show
from omniformer.config.targets import value_of as _value

#: The validation metrics each task logs (what ``callbacks.checkpoint.monitor`` may watch).
TASK_METRICS = {
    "omniformer.tasks.LanguageModelingTask": {"val_loss", "val_ppl"},
    "omniformer.tasks.language_modeling.LanguageModelingTask": {"val_loss", "val_ppl"},
    "omniformer.tasks.ClassificationTask": {"val_loss", "val_acc", "val_f1", "val_acc_top5"},
    "omniformer.tasks.classification.ClassificationTask": {"val_loss", "val_acc", "val_f1", "val_acc_top5"},
    "omniformer.tasks.prefix_lm.PrefixLMTask": {"val_loss", "val_exact", "val_cer", "val_wer"},
}
#: The top-level keys of a ``train`` config: conf/train.yaml's groups and values (a test keeps them
#: equal), ``data_spec`` (filled in at run time) and ``hydra``. Anything else is read by nothing.
TRAIN_KEYS = (
    "seed",
    "ckpt_path",
    "compile",
    "test_after_fit",
    "data_spec",
    "paths",
    "data",
    "model",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "task",
    "hydra",
)


def check_train_config(cfg: DictConfig) -> None:
    """Validate a composed ``train`` config; raise :class:`ConfigError` before any data is read.

    Lists every problem at once (see the module docstring for what is checked).
    """
    problems: list[str] = []
    _missing_values(cfg, problems)
    if problems:  # the other checks would read the missing values
        raise ConfigError(problems)
    _unread_keys(cfg, problems)
    for key in cfg:
        if key in ("hydra", "data_spec"):
            continue
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            check_targets(child, str(key), problems, schema_for)
    model = cfg.get("model")
    if isinstance(model, DictConfig):  # the model group holds the Backbone's arguments (and `backbone`)
        check_arguments(Backbone, model, "model", problems, ignore={"backbone"})
    _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(problems)


def _missing_values(cfg: DictConfig, problems: list[str]) -> None:
    """A required key left without a value (``???``), e.g. ``data.path`` of ``data=textfile``."""

    def walk(node: Any, path: str) -> None:
        keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
        for key in keys:
            child, where = node._get_node(key), f"{path}.{key}" if path else str(key)
            if child._is_missing():  # `???` itself, never an interpolation (those resolve later)
                problems.append(f"{where} is required and has no value: set it, e.g. {where}=...")
            elif isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
                walk(child, where)

    walk(cfg, "")


def _get(node: Any, key: str, default: Any = UNSET) -> Any:
    """``node[key]`` resolved, or ``default`` when the node or key is absent."""
    return _value(node, key) if isinstance(node, DictConfig) and key in node else default


def _data_modality(target: str) -> str | None:
    schema = schema_for(target)
    if schema is TextDataSchema:
        return "text"
    if schema is not None and issubclass(schema, ImageDataSchema):
        return "image"
    if schema is not None and issubclass(schema, AudioDataSchema):
        return "audio"
    return None


def _cross_checks(cfg: DictConfig, problems: list[str]) -> None:
    model, data = cfg.get("model"), cfg.get("data")
    task, trainer, callbacks = cfg.get("task"), cfg.get("trainer"), cfg.get("callbacks") or {}
    max_len = _get(model, "max_seq_len")
    target = data.get("_target_") if data is not None else None
    block = _get(data, "block_size")
    if isinstance(block, int) and isinstance(max_len, int) and block > max_len:
        problems.append(
            f"data.block_size={block} exceeds model.max_seq_len={max_len}; lower data.block_size or raise "
            "model.max_seq_len"
        )
    modality = _data_modality(target) if isinstance(target, str) else None
    if modality == "image":
        _image_checks(cfg, target, max_len, problems)
    # The task must read what the data yields.
    task_modality = _get(task, "modality")
    if modality is not None and isinstance(task_modality, str) and task_modality != modality:
        problems.append(
            f"task.modality={task_modality!r}: the data (data._target_={target}) yields {modality}; pick a "
            f"{task_modality} data module or the task for {modality}"
        )
    task_target = task.get("_target_") if task is not None else None
    classifies = isinstance(task_target, str) and task_target.endswith("ClassificationTask")
    if modality == "text" and classifies:
        problems.append(
            f"task._target_={task_target}: data._target_={target} yields next-token windows for language "
            "modelling, not labelled texts; pick a labelled data module (data=movie_reviews, data=text_csv)"
        )
    # The checkpoint and early stopping can only watch a metric the task logs.
    metrics = TASK_METRICS.get(task_target) if isinstance(task_target, str) else None
    for name in ("checkpoint", "early_stopping"):
        watcher = callbacks.get(name) if isinstance(callbacks, DictConfig) else None
        monitor = _get(watcher, "monitor", None)
        if isinstance(monitor, str) and metrics is not None and monitor not in metrics:
            problems.append(
                f"callbacks.{name}.monitor={monitor!r}: {task_target.rsplit('.', 1)[-1]} logs "
                f"{', '.join(sorted(metrics))}"
            )
    # An endless sampler needs a step limit.
    max_steps = _get(trainer, "max_steps")
    if modality == "text" and not classifies and isinstance(max_steps, int) and max_steps < 0:
        problems.append(
            f"trainer.max_steps={max_steps}: language-model windows are sampled endlessly; set a positive "
            "trainer.max_steps"
        )
    # FSDP runs on GPUs only (Lightning refuses it on CPU once the data is loaded).
    strategy = trainer.get("strategy") if trainer is not None else None
    strategy_target = strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy
    accelerator = _get(trainer, "accelerator", None)
    if isinstance(strategy_target, str) and "fsdp" in strategy_target.lower() and accelerator == "cpu":
        problems.append(
            "trainer.accelerator='cpu': Lightning's FSDP strategy needs GPUs; for several CPU processes use "
            "trainer=ddp_cpu"
        )
    # A step limit of 0 trains nothing and reports the random init; negative clipping clips nothing.
    if isinstance(max_steps, int) and (max_steps == 0 or max_steps < -1):
        problems.append(
            f"trainer.max_steps={max_steps}: must be a positive number of optimizer steps, or -1 for no step "
            "limit (trainer.max_epochs decides)"
        )
    clip = _get(trainer, "gradient_clip_val", None)
    if isinstance(clip, (int, float)) and not isinstance(clip, bool) and clip < 0:
        problems.append(
            f"trainer.gradient_clip_val={clip}: must be positive (the largest gradient norm or value), or "
            "null or 0 for no clipping"
        )
    # Top-level keys.
    for key, kinds, expected in (
        ("seed", (int,), "an int"),
        ("compile", (bool,), "true or false"),
        ("test_after_fit", (bool,), "true or false"),
        ("ckpt_path", (str, type(None)), "a path, 'last', 'auto' or null"),
    ):
        value = _get(cfg, key)
        if value is not UNSET and (
            not isinstance(value, kinds) or (kinds == (int,) and isinstance(value, bool))
        ):
            problems.append(f"{key}={_show(value)}: expected {expected}")


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def _image_checks(cfg: DictConfig, target: str, max_len: Any, problems: list[str]) -> None:
    data = cfg.data
    for key in ("val_size", "test_size"):
        value = _get(data, key, None)
        if value not in (None, UNSET) and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            problems.append(f"data.{key}={_show(value)}: expected a count or a fraction between 0 and 1")
    for key in ("image_size", "patch_size"):
        value = _get(data, key, None)
        if value not in (None, UNSET) and (_pair(value) is None or min(_pair(value)) <= 0):
            problems.append(f"data.{key}={_show(value)}: expected a positive int or [height, width]")
            return
    size = _pair(_get(data, "image_size", None))
    if size is None and _get(data, "image_size", None) in (None, UNSET):
        try:
            size = getattr(get_object(target), "native_size", None)
        except Exception:
            size = None
    patch = _pair(_get(data, "patch_size", None))
    if size is None or patch is None or min(patch) <= 0:
        return
    if size[0] % patch[0] or size[1] % patch[1]:
        problems.append(
            f"data.patch_size={_value(data, 'patch_size')}: does not divide data.image_size="
            f"{list(size) if size[0] != size[1] else size[0]}; pick a patch size that divides both sides"
        )
        return
    tokens = (size[0] // patch[0]) * (size[1] // patch[1])
    image = _image_tokenizer(cfg)
    if image is not None and _value(image, "cls_token") is True:
        tokens += 1
    if isinstance(max_len, int) and tokens > max_len:
        problems.append(
            f"data.image_size={size[0] if size[0] == size[1] else list(size)}, data.patch_size="
            f"{_value(data, 'patch_size')}: {tokens} image tokens exceed model.max_seq_len={max_len}; "
            "use larger patches or raise model.max_seq_len"
        )


def _image_tokenizer(cfg: DictConfig) -> DictConfig | None:
    try:
        node = OmegaConf.select(cfg, "task.net.tokenizers.image", throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return None
    return node if isinstance(node, DictConfig) else None


def _unread_keys(cfg: DictConfig, problems: list[str]) -> None:
    """Keys nothing reads: unknown top-level keys, callbacks and loggers without a ``_target_``."""
    for key in cfg:
        if key not in TRAIN_KEYS:
            hint = close_matches(str(key), TRAIN_KEYS)
            problems.append(
                f"{key}={_show(cfg._get_node(key))}: unknown top-level key{hint} "
                f"(top-level keys: {', '.join(k for k in TRAIN_KEYS if k != 'hydra')})"
            )
    callbacks = cfg._get_node("callbacks") if "callbacks" in cfg else None
    if isinstance(callbacks, DictConfig) and not callbacks._is_none():
        untargeted = [
            name
            for name in callbacks
            if isinstance(callbacks._get_node(name), DictConfig)
            and not callbacks._get_node(name)._is_none()
            and "_target_" not in callbacks._get_node(name)
        ]
        for name in untargeted:
            others = [k for k in callbacks if k not in untargeted]
            problems.append(
                f"callbacks.{name}={_show(callbacks._get_node(name))}: a callback needs a _target_ (the "
                f"class to build){close_matches(str(name), others, 'callbacks.')}"
            )
    loggers = cfg._get_node("logger") if "logger" in cfg else None
    if isinstance(loggers, ListConfig) and not loggers._is_none():
        for i, node in enumerate(loggers):
            if isinstance(node, DictConfig) and not node._is_none() and "_target_" not in node:
                problems.append(f"logger[{i}]={_show(node)}: a logger needs a _target_ (the class to build)")
