"""Config validation: typed schemas for the config groups, and checks across keys.

Two layers, both before any data is read:

* **Schemas** (dataclasses) for ``model``, ``optim``, ``trainer`` and every data module. Hydra merges
  a group's YAML onto its schema when the file lists it in ``defaults`` (``model.dim=abc`` then fails
  while composing); :func:`check_train_config` also merges ``data`` onto the schema its ``_target_``
  names, so data modules are checked even without that line.
* **Signatures** for every other ``_target_`` node (task, network, tokenizers, heads, callbacks,
  loggers, strategies): the keys must be arguments of the class, and values must fit the argument's
  annotation (``int``, ``float``, ``bool``, ``str``, ``Literal`` choices, ``Optional``). A data module
  from outside the package without a schema is checked the same way.
* **Cross-key checks** no single schema can express: heads dividing the width, rotary head size,
  block size vs positions, patch size vs image size, image tokens vs positions, which metric the
  checkpoint watches, a task reading the modality its data yields, a step limit and gradient
  clipping that mean something.
* **Keys nothing reads**: a top-level key that is not one of :data:`TRAIN_KEYS` (``+seeed=5``), and
  a callback or logger without a ``_target_`` (``+callbacks.checkpont.every_n_train_steps=5``), with
  the close matches.

Every problem is reported in one ``ConfigError`` listing ``key=value: reason`` lines.
"""

from __future__ import annotations

import difflib
import inspect
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from hydra.utils import get_object
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError


@dataclass
class ModelSchema:
    """The shared backbone's shape (``model`` group)."""

    dim: int = MISSING
    depth: int = MISSING
    heads: int = MISSING
    max_seq_len: int = 1024
    mlp_ratio: float = 4.0
    mlp: str = "gelu"
    norm: str = "layernorm"
    dropout: float = 0.0
    bias: bool = True
    rope: bool = True
    init: str = "scaled"
    backbone: Any = MISSING


@dataclass
class OptimSchema:
    """AdamW and schedule settings (``optim`` group); instantiated as :class:`OptimSettings`."""

    _target_: str = "omniformer.tasks.OptimSettings"
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])
    eps: float = 1e-8
    warmup_steps: int = 100
    min_lr: float = 1e-4
    schedule: str = "cosine"
    fused: bool | None = None


@dataclass
class TrainerSchema:
    """The ``lightning.Trainer`` arguments omniformer configures (``trainer`` group).

    Other Trainer arguments can be added on the command line with ``+trainer.KEY=VALUE``.
    """

    _target_: str = "lightning.Trainer"
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: Any = "auto"
    precision: Any = "32-true"
    max_steps: int = -1
    max_epochs: int | None = None
    val_check_interval: Any = 1.0
    check_val_every_n_epoch: int | None = 1
    limit_train_batches: Any = 1.0
    limit_val_batches: Any = 1.0
    limit_test_batches: Any = 1.0
    gradient_clip_val: float | None = None
    accumulate_grad_batches: int = 1
    log_every_n_steps: int = 50
    deterministic: Any = False
    benchmark: bool | None = None
    enable_model_summary: bool = True
    enable_progress_bar: bool = True
    num_sanity_val_steps: int = 2
    fast_dev_run: Any = False
    overfit_batches: Any = 0.0
    profiler: Any = None


# ---------------------------------------------------------------------------------------------- data
@dataclass
class TextDataSchema:
    """``omniformer.data.TextDataModule`` (``data=shakespeare``, ``data=textfile``)."""

    _target_: str = "omniformer.data.TextDataModule"
    path: Optional[str] = None
    tokenizer: str = "bpe"
    vocab_size: int = 512
    block_size: int = 128
    batch_size: int = 32
    val_fraction: float = 0.1
    seed: int = 1337
    num_workers: int = 0
    cache_dir: Optional[str] = None
    vocab_json: Optional[str] = None


@dataclass
class ImageDataSchema:
    """The torchvision image data modules (``data=mnist | fashion_mnist | cifar10 | cifar100``)."""

    _target_: str = MISSING
    root: Optional[str] = None
    download: bool = False
    image_size: Any = None  # int or [height, width]
    patch_size: Any = 4  # int or [height, width]
    batch_size: int = 128
    eval_batch_size: Optional[int] = None
    val_size: Any = 5000  # a count or a fraction (checked in _image_checks)
    split_seed: int = 0
    train_transforms: Any = None
    eval_transforms: Any = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    num_workers: int = 2
    pin_memory: Optional[bool] = None
    persistent_workers: bool = True


@dataclass
class ImageFolderDataSchema(ImageDataSchema):
    """``omniformer.data.ImageFolderDataModule`` (``data=image_folder``)."""

    _target_: str = "omniformer.data.ImageFolderDataModule"
    root: Optional[str] = MISSING
    channels: int = 3
    test_size: Any = 0.1  # a count or a fraction
    skip_corrupt: bool = False
    # torchvision's IMG_EXTENSIONS (ImageFolderDataModule's default; a test keeps them equal)
    extensions: list[str] = field(
        default_factory=lambda: [".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp"]
    )


@dataclass
class AudioDataSchema:
    """Arguments shared by the audio data modules."""

    _target_: str = MISSING
    root: Optional[str] = MISSING
    sample_rate: int = 16000
    batching: str = "variable"
    max_seconds: Optional[float] = None
    batch_size: int = 64
    bucket_by_length: bool = True
    num_workers: int = 0
    seed: int = 0
    skip_corrupt: bool = False


@dataclass
class SpokenDigitsDataSchema(AudioDataSchema):
    """``omniformer.data.SpokenDigitsDataModule`` (``data=spoken_digits``)."""

    _target_: str = "omniformer.data.SpokenDigitsDataModule"
    val_takes: int = 5
    sample_rate: int = 8000


@dataclass
class SpeechCommandsDataSchema(AudioDataSchema):
    """``omniformer.data.SpeechCommandsDataModule`` (``data=speech_commands``)."""

    _target_: str = "omniformer.data.SpeechCommandsDataModule"
    root: Optional[str] = "data"
    download: bool = False
    version: str = "speech_commands_v0.02"
    max_seconds: Optional[float] = 1.0


@dataclass
class AudioFolderDataSchema(AudioDataSchema):
    """``omniformer.data.AudioFolderDataModule`` (``data=audio_folder``)."""

    _target_: str = "omniformer.data.AudioFolderDataModule"
    val_fraction: float = 0.1
    test_fraction: float = 0.1


#: Data-module ``_target_`` → its schema (also under ``omniformer.data.<module>.<Class>``).
DATA_SCHEMAS: dict[str, type] = {
    "omniformer.data.TextDataModule": TextDataSchema,
    "omniformer.data.MNISTDataModule": ImageDataSchema,
    "omniformer.data.FashionMNISTDataModule": ImageDataSchema,
    "omniformer.data.CIFAR10DataModule": ImageDataSchema,
    "omniformer.data.CIFAR100DataModule": ImageDataSchema,
    "omniformer.data.ImageFolderDataModule": ImageFolderDataSchema,
    "omniformer.data.SpokenDigitsDataModule": SpokenDigitsDataSchema,
    "omniformer.data.SpeechCommandsDataModule": SpeechCommandsDataSchema,
    "omniformer.data.AudioFolderDataModule": AudioFolderDataSchema,
}
#: Names under which the data schemas are registered in the ``data`` group.
DATA_SCHEMA_NAMES = {
    "_text_schema": TextDataSchema,
    "_image_schema": ImageDataSchema,
    "_image_folder_schema": ImageFolderDataSchema,
    "_spoken_digits_schema": SpokenDigitsDataSchema,
    "_speech_commands_schema": SpeechCommandsDataSchema,
    "_audio_folder_schema": AudioFolderDataSchema,
}


def register_schemas(store: ConfigStore | None = None) -> None:
    """Register the schemas so group files can list them in ``defaults``: ``model/_schema``,
    ``optim/_schema``, ``trainer/_schema`` and ``data/_text_schema``, ``data/_image_schema``... (see
    :data:`DATA_SCHEMA_NAMES`)."""
    store = store or ConfigStore.instance()
    store.store(group="model", name="_schema", node=ModelSchema)
    store.store(group="optim", name="_schema", node=OptimSchema)
    store.store(group="trainer", name="_schema", node=TrainerSchema)
    for name, schema in DATA_SCHEMA_NAMES.items():
        store.store(group="data", name=name, node=schema)


# ---------------------------------------------------------------------------------------------- checks
class ConfigError(ValueError):
    """One or more invalid config values; the message lists ``key=value: reason`` per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config ({len(self.problems)} problem(s)):\n{lines}")


#: The validation metrics each task logs (what ``callbacks.checkpoint.monitor`` may watch).
TASK_METRICS = {
    "omniformer.tasks.LanguageModelingTask": {"val_loss", "val_ppl"},
    "omniformer.tasks.language_modeling.LanguageModelingTask": {"val_loss", "val_ppl"},
    "omniformer.tasks.ClassificationTask": {"val_loss", "val_acc", "val_f1", "val_acc_top5"},
    "omniformer.tasks.classification.ClassificationTask": {"val_loss", "val_acc", "val_f1", "val_acc_top5"},
}
_HYDRA_KEYS = {"_target_", "_partial_", "_convert_", "_recursive_", "_args_"}
#: The top-level keys of a ``train`` config: conf/train.yaml's groups and values (a test keeps them
#: equal), ``data_spec`` (filled in at run time) and ``hydra``. Anything else is read by nothing.
TRAIN_KEYS = (
    "seed",
    "ckpt_path",
    "compile",
    "test_after_fit",
    "data_spec",
    "data",
    "model",
    "optim",
    "trainer",
    "logger",
    "callbacks",
    "task",
    "hydra",
)
_UNSET = object()


def _show(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _value(node: DictConfig, key: Any) -> Any:
    """``node[key]`` resolved, or ``_UNSET`` when it cannot be resolved yet (``${data_spec...}``)."""
    try:
        value = node[key]
    except OmegaConfBaseException:
        return _UNSET
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            return _UNSET
    return value


def _schema_for(target: str) -> type | None:
    if target in DATA_SCHEMAS:
        return DATA_SCHEMAS[target]
    tail = target.rsplit(".", 1)[-1]
    for name, schema in DATA_SCHEMAS.items():
        if name.rsplit(".", 1)[-1] == tail and target.startswith("omniformer.data."):
            return schema
    return None


def _check_schema(node: DictConfig, schema: type, prefix: str, problems: list[str]) -> None:
    """Merge ``node`` onto ``schema``, one key at a time so that every bad key is reported."""
    base = OmegaConf.structured(schema)
    for key in node:
        value = _value(node, key)
        if value is _UNSET:
            continue
        try:
            OmegaConf.merge(base, OmegaConf.create({key: value}))
        except ConfigKeyError:
            valid = ", ".join(k for k in base if not str(k).startswith("_"))
            problems.append(
                f"{prefix}.{key}={_show(value)}: unknown key for {node.get('_target_')} ({valid})"
            )
        except ValidationError as err:
            reason = str(err.msg).splitlines()[0]
            problems.append(f"{prefix}.{key}={_show(value)}: {reason}")


def _parameters(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """Arguments a ``_target_`` accepts, their type hints, and whether it takes any keyword (``**kwargs``
    that no base class resolves)."""
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    functions = []
    if inspect.isclass(target):
        for cls in target.__mro__:
            if cls is object or "__init__" not in vars(cls):
                continue
            functions.append(cls.__init__)
    else:
        functions.append(target)
    open_kwargs = False
    for function in functions:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return params, hints, True
        try:
            function_hints = typing.get_type_hints(function)
        except Exception:  # unresolvable forward references: skip the type checks
            function_hints = {}
        has_kwargs = False
        for name, param in signature.parameters.items():
            if name == "self" or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                has_kwargs = True
                continue
            params.setdefault(name, param)
            if name in function_hints:
                hints.setdefault(name, function_hints[name])
        if not has_kwargs:
            return params, hints, False
        # omniformer's classes pass **kwargs on to their base class; elsewhere (DDPStrategy passes
        # them to DistributedDataParallel) the accepted keys are unknown.
        if not getattr(target, "__module__", "").startswith("omniformer."):
            return params, hints, True
        open_kwargs = True
    return params, hints, open_kwargs


def _fits(value: Any, hint: Any) -> bool:
    """Whether a config value suits a type hint (unknown hints accept anything)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(hint).__name__ == "UnionType"):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, Sequence, typing.Sequence) or (
        inspect.isclass(container) and issubclass(container, Sequence) and container is not str
    ):
        return isinstance(value, (list, tuple))
    if container in (dict, Mapping) or (inspect.isclass(container) and issubclass(container, Mapping)):
        return isinstance(value, dict)
    return True  # classes (modules, settings objects) are built from nested nodes


def _hint_name(hint: Any) -> str:
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _check_targets(node: Any, prefix: str, problems: list[str], schema_checked: set[str]) -> None:
    """Walk ``node``; check every ``_target_`` node's keys and value types against its signature."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)) and not item._is_none():
                _check_targets(item, f"{prefix}[{i}]", problems, schema_checked)
        return
    if not isinstance(node, DictConfig):
        return
    target_name = node.get("_target_") if "_target_" in node else None
    schema = _schema_for(target_name) if isinstance(target_name, str) else None
    if schema is not None and prefix not in schema_checked:  # a data module (also a multi-task member)
        _check_schema(node, schema, prefix, problems)
        schema_checked.add(prefix)
    if isinstance(target_name, str) and prefix not in schema_checked:
        try:
            target = get_object(target_name)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problems.append(f"{prefix}._target_={target_name!r}: cannot be imported ({reason})")
            target = None
        if target is not None:
            params, hints, open_kwargs = _parameters(target)
            for key in node:
                if key in _HYDRA_KEYS:
                    continue
                if key not in params and not open_kwargs:
                    valid = ", ".join(params) or "no arguments"
                    shown = _show(node._get_node(key))
                    problems.append(f"{prefix}.{key}={shown}: unknown key for {target_name} ({valid})")
                    continue
                value = _value(node, key)
                hint = hints.get(key)
                if value is _UNSET or hint is None or isinstance(node._get_node(key), DictConfig):
                    continue
                if not _fits(value, hint):
                    problems.append(
                        f"{prefix}.{key}={_show(value)}: {target_name} expects {_hint_name(hint)}"
                    )
    if node.get("_recursive_") is False:
        return  # the target builds its children itself, possibly with other arguments
    for key in node:
        child = node._get_node(key)
        if (
            isinstance(child, (DictConfig, ListConfig))
            and not OmegaConf.is_interpolation(node, key)
            and not child._is_none()
        ):
            _check_targets(child, f"{prefix}.{key}", problems, schema_checked)


def _pair(value: Any) -> tuple[int, int] | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value, value
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return int(value[0]), int(value[1])
    return None


def _data_modality(target: str) -> str | None:
    schema = _schema_for(target)
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
    dim = _value(model, "dim") if model is not None and "dim" in model else _UNSET
    heads = _value(model, "heads") if model is not None and "heads" in model else _UNSET
    max_len = _value(model, "max_seq_len") if model is not None and "max_seq_len" in model else _UNSET
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (dim, heads))
    if ints and (heads <= 0 or dim <= 0):
        problems.append(f"model.dim={dim}, model.heads={heads}: both must be positive")
    elif ints and dim % heads:
        problems.append(f"model.heads={heads} must divide model.dim={dim}")
    elif ints and model.get("rope") and (dim // heads) % 2:
        problems.append(
            f"model.dim={dim}, model.heads={heads}: rotary positions (model.rope=true) need an even head "
            f"size, got {dim // heads}"
        )
    target = data.get("_target_") if data is not None else None
    block = _value(data, "block_size") if data is not None and "block_size" in data else _UNSET
    if isinstance(block, int) and isinstance(max_len, int) and block > max_len:
        problems.append(
            f"data.block_size={block} exceeds model.max_seq_len={max_len}; lower data.block_size or raise "
            "model.max_seq_len"
        )
    modality = _data_modality(target) if isinstance(target, str) else None
    if modality == "image":
        _image_checks(cfg, target, dim, max_len, problems)
    # The task must read what the data yields.
    task_modality = _value(task, "modality") if task is not None and "modality" in task else _UNSET
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
    # The checkpoint can only watch a metric the task logs.
    checkpoint = callbacks.get("checkpoint") if isinstance(callbacks, DictConfig) else None
    monitor = _value(checkpoint, "monitor") if checkpoint is not None and "monitor" in checkpoint else None
    metrics = TASK_METRICS.get(task_target) if isinstance(task_target, str) else None
    if isinstance(monitor, str) and metrics is not None and monitor not in metrics:
        problems.append(
            f"callbacks.checkpoint.monitor={monitor!r}: {task_target.rsplit('.', 1)[-1]} logs "
            f"{', '.join(sorted(metrics))}"
        )
    # An endless sampler needs a step limit.
    max_steps = _value(trainer, "max_steps") if trainer is not None and "max_steps" in trainer else _UNSET
    if modality == "text" and not classifies and isinstance(max_steps, int) and max_steps < 0:
        problems.append(
            f"trainer.max_steps={max_steps}: language-model windows are sampled endlessly; set a positive "
            "trainer.max_steps"
        )
    # FSDP runs on GPUs only (Lightning refuses it on CPU once the data is loaded).
    strategy = trainer.get("strategy") if trainer is not None else None
    strategy_target = strategy.get("_target_") if isinstance(strategy, DictConfig) else strategy
    accelerator = _value(trainer, "accelerator") if trainer is not None and "accelerator" in trainer else None
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
    clip = _value(trainer, "gradient_clip_val") if trainer is not None else None
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
        value = _value(cfg, key) if key in cfg else _UNSET
        if value is not _UNSET and (
            not isinstance(value, kinds) or (kinds == (int,) and isinstance(value, bool))
        ):
            problems.append(f"{key}={_show(value)}: expected {expected}")


def _image_checks(cfg: DictConfig, target: str, dim: Any, max_len: Any, problems: list[str]) -> None:
    data = cfg.data
    for key in ("val_size", "test_size"):
        value = _value(data, key) if key in data else None
        if value not in (None, _UNSET) and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0
        ):
            problems.append(f"data.{key}={_show(value)}: expected a count or a fraction between 0 and 1")
    for key in ("image_size", "patch_size"):
        value = _value(data, key) if key in data else None
        if value not in (None, _UNSET) and (_pair(value) is None or min(_pair(value)) <= 0):
            problems.append(f"data.{key}={_show(value)}: expected a positive int or [height, width]")
            return
    size = _pair(_value(data, "image_size")) if "image_size" in data else None
    if size is None and _value(data, "image_size") in (None, _UNSET):
        try:
            size = getattr(get_object(target), "native_size", None)
        except Exception:
            size = None
    patch = _pair(_value(data, "patch_size")) if "patch_size" in data else None
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
    if image is not None and _value(image, "positions") == "sincos" and isinstance(dim, int) and dim % 4:
        problems.append(f"model.dim={dim}: 2-D sin-cos image positions need a width divisible by 4")


def _image_tokenizer(cfg: DictConfig) -> DictConfig | None:
    try:
        node = OmegaConf.select(cfg, "task.net.tokenizers.image", throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return None
    return node if isinstance(node, DictConfig) else None


def _close(key: str, known: Any, prefix: str = "") -> str:
    """``; did you mean <prefix><match>?`` for the known names closest to ``key`` (or nothing)."""
    matches = difflib.get_close_matches(key, [str(k) for k in known], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + m for m in matches)}?" if matches else ""


def _unread_keys(cfg: DictConfig, problems: list[str]) -> None:
    """Keys nothing reads: unknown top-level keys, callbacks and loggers without a ``_target_``."""
    for key in cfg:
        if key not in TRAIN_KEYS:
            problems.append(
                f"{key}={_show(cfg._get_node(key))}: unknown top-level key{_close(str(key), TRAIN_KEYS)} "
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
                f"class to build){_close(str(name), others, 'callbacks.')}"
            )
    loggers = cfg._get_node("logger") if "logger" in cfg else None
    if isinstance(loggers, ListConfig) and not loggers._is_none():
        for i, node in enumerate(loggers):
            if isinstance(node, DictConfig) and not node._is_none() and "_target_" not in node:
                problems.append(f"logger[{i}]={_show(node)}: a logger needs a _target_ (the class to build)")


def check_train_config(cfg) -> None:
    """Validate a composed ``train`` config; raise :class:`ConfigError` before any data is read.

    Checks the data node against its schema, every ``_target_`` node against its signature, the
    cross-key rules, and keys that nothing reads (see the module docstring).
    """
    problems: list[str] = []
    _unread_keys(cfg, problems)
    schema_checked: set[str] = set()
    data = cfg.get("data")
    if isinstance(data, DictConfig) and isinstance(data.get("_target_"), str):
        schema = _schema_for(data._target_)
        if schema is not None:
            _check_schema(data, schema, "data", problems)
            schema_checked.add("data")
    for key in cfg:
        if key in ("hydra", "data_spec"):
            continue
        child = cfg._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_none():
            _check_targets(child, str(key), problems, schema_checked)
    _cross_checks(cfg, problems)
    if problems:
        raise ConfigError(problems)
