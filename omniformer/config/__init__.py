"""Config validation: a composed config is checked before any data is read, and every problem is
reported at once in one :class:`ConfigError` listing ``key=value: reason`` lines.

* :mod:`~omniformer.config.targets` — generic: every ``_target_`` node against its class (signature,
  a schema where one exists, the class's own ``check_config`` rules; see
  :mod:`omniformer.argument_checks`). Works for any class, a plug-in's included.
* :mod:`~omniformer.config.schemas` — omniformer's structured configs for the ``model``, ``optim``,
  ``trainer`` and ``data`` groups (the first two derived from Backbone and OptimSettings), which Hydra
  merges while composing once :func:`register_schemas` has run.
* :mod:`~omniformer.config.train_rules` — omniformer's rules across the keys of a ``train`` config
  (:func:`check_train_config`).
"""

from omniformer.config.schemas import (
    DATA_SCHEMA_NAMES,
    DATA_SCHEMAS,
    AudioDataSchema,
    AudioFolderDataSchema,
    ImageDataSchema,
    ImageFolderDataSchema,
    ModelSchema,
    OptimSchema,
    SpeechCommandsDataSchema,
    SpokenDigitsDataSchema,
    TextDataSchema,
    TrainerSchema,
    register_schemas,
)
from omniformer.config.targets import ConfigError
from omniformer.config.train_rules import TASK_METRICS, TRAIN_KEYS, check_train_config

__all__ = [
    "DATA_SCHEMAS",
    "DATA_SCHEMA_NAMES",
    "TASK_METRICS",
    "TRAIN_KEYS",
    "AudioDataSchema",
    "AudioFolderDataSchema",
    "ConfigError",
    "ImageDataSchema",
    "ImageFolderDataSchema",
    "ModelSchema",
    "OptimSchema",
    "SpeechCommandsDataSchema",
    "SpokenDigitsDataSchema",
    "TextDataSchema",
    "TrainerSchema",
    "check_train_config",
    "register_schemas",
]
