"""What every omniformer task shares: the network, the optimizer and the schedule."""

from __future__ import annotations

import lightning as L

from omniformer.model import OmniModel
from omniformer.tasks.optim import OptimSettings, build_optimizer


class OmniTask(L.LightningModule):
    """A LightningModule around an :class:`OmniModel`; subclasses add the loss and metrics.

    Args:
        net: the model (tokenizers, shared backbone, heads).
        optim: optimizer and schedule settings.
    """

    def __init__(self, net: OmniModel, optim: OptimSettings) -> None:
        super().__init__()
        self.net = net
        self.optim = optim

    def configure_optimizers(self):
        total = int(self.trainer.estimated_stepping_batches) if self._trainer is not None else 1
        return build_optimizer(self, self.optim, total)
