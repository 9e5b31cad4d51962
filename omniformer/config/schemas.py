"""omniformer's structured configs: what Hydra merges each config group onto while composing.

A group file lists its schema in ``defaults`` (``model/_schema``, ``optim/_schema``,
``trainer/_schema``, ``data/_text_schema``...), so a wrong type or an unknown key fails while
composing; :func:`register_schemas` puts them in Hydra's ``ConfigStore`` and must run before the
first composition (the entry points call it).

The ``model`` and ``optim`` schemas are derived from the classes they configure, so each key is
declared once: :data:`ModelSchema` has one field per :class:`~omniformer.backbone.Backbone` argument
(type and default from its signature) plus the ``model.backbone`` node that hands every one of them to
the Backbone; :data:`OptimSchema` is :class:`~omniformer.tasks.optim.OptimSettings` itself with its
``_target_``. The Trainer's and the data modules' schemas list the arguments omniformer configures.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from omniformer.backbone import Backbone
from omniformer.tasks.optim import OptimSettings


def _field_type(hint: Any) -> Any:
    """An annotation as OmegaConf can type a field with: ``Literal`` choices become their type (the
    choices themselves are checked against the signature by :mod:`omniformer.config.targets`)."""
    if typing.get_origin(hint) is typing.Literal:
        kinds = {type(choice) for choice in typing.get_args(hint)}
        return kinds.pop() if len(kinds) == 1 else Any
    return hint


def _backbone_schema() -> type:
    params = list(inspect.signature(Backbone).parameters.values())
    hints = typing.get_type_hints(Backbone.__init__)
    fields = [(p.name, _field_type(hints.get(p.name, Any)), field(default=p.default)) for p in params]
    # conf/model/_backbone.yaml adds the node's _target_ (build_backbone) and its own keys.
    arguments = {p.name: f"${{model.{p.name}}}" for p in params}
    fields.append(("backbone", Any, field(default_factory=lambda: dict(arguments))))
    schema = dataclasses.make_dataclass("ModelSchema", fields)
    schema.__module__ = __name__
    schema.__doc__ = "The shared backbone's shape (``model`` group): Backbone's arguments, and ``backbone``."
    return schema


#: The ``model`` group: one field per Backbone argument, and the ``backbone`` node built from them.
ModelSchema = _backbone_schema()

#: The ``optim`` group: OptimSettings' fields and the ``_target_`` that builds it.
OptimSchema = dataclasses.make_dataclass(
    "OptimSchema", [("_target_", str, "omniformer.tasks.OptimSettings")], bases=(OptimSettings,)
)
OptimSchema.__module__ = __name__


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
    min_epochs: int | None = None
    min_steps: int | None = None
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
    root: Optional[str] = None
    split: str = "auto"  # auto | tail | per_file | files
    val_files: Optional[list[str]] = None


@dataclass
class TextFileDataSchema(TextDataSchema):
    """``data=textfile``: as :class:`TextDataSchema`, with ``path`` required (no bundled fallback)."""

    path: str = MISSING


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
    val_size: Any = 5000  # a count or a fraction (checked by train_rules)
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
    channels: Any = "auto"  # 1, 3 or auto (checked against the signature's Literal)
    augment: str = "auto"  # auto | photo | light | none
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
    cache_mb: float = 1024.0  # decoded clips kept in memory per loader process; 0 = off


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
    "_textfile_schema": TextFileDataSchema,
    "_image_schema": ImageDataSchema,
    "_image_folder_schema": ImageFolderDataSchema,
    "_spoken_digits_schema": SpokenDigitsDataSchema,
    "_speech_commands_schema": SpeechCommandsDataSchema,
    "_audio_folder_schema": AudioFolderDataSchema,
}


def schema_for(target: str) -> type | None:
    """The schema of a data-module ``_target_`` (also ``omniformer.data.<module>.<Class>``), or None."""
    if target in DATA_SCHEMAS:
        return DATA_SCHEMAS[target]
    tail = target.rsplit(".", 1)[-1]
    for name, schema in DATA_SCHEMAS.items():
        if name.rsplit(".", 1)[-1] == tail and target.startswith("omniformer.data."):
            return schema
    return None


def register_schemas(store: ConfigStore | None = None) -> None:
    """Register the schemas so group files can list them in ``defaults``: ``model/_schema``,
    ``optim/_schema``, ``trainer/_schema`` and ``data/_text_schema``, ``data/_image_schema``... (see
    :data:`DATA_SCHEMA_NAMES`). Idempotent; call it before composing (the entry points do)."""
    store = store or ConfigStore.instance()
    store.store(group="model", name="_schema", node=ModelSchema)
    store.store(group="optim", name="_schema", node=OptimSchema)
    store.store(group="trainer", name="_schema", node=TrainerSchema)
    for name, schema in DATA_SCHEMA_NAMES.items():
        store.store(group="data", name=name, node=schema)
