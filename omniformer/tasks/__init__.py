"""LightningModules: each task owns its loss, metrics, optimizer and schedule."""

from omniformer.tasks.base import OmniTask
from omniformer.tasks.classification import ClassificationTask
from omniformer.tasks.language_modeling import LanguageModelingTask
from omniformer.tasks.optim import OptimSettings

__all__ = ["ClassificationTask", "LanguageModelingTask", "OmniTask", "OptimSettings"]
