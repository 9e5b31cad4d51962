"""The training entry point's small contracts: what a sweeper gets back."""

from __future__ import annotations

from omniformer.train import monitored_value
from tests.conftest import compose_train


def test_main_returns_the_metric_the_checkpoint_watches():
    """A sweeper gets ``val_acc`` from a classifier and ``val_loss`` from a language model (main()
    returned ``val_loss`` whatever the task monitored)."""
    results = {"val_loss": 0.7, "val_acc": 0.9}
    assert monitored_value(compose_train(["task=image_classification", "data=mnist"]), results) == 0.9
    assert monitored_value(compose_train([]), results) == 0.7
