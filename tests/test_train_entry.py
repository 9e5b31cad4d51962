"""The training entry point's small contracts: what a sweeper gets back, which warnings it silences."""

from __future__ import annotations

import warnings

from omniformer.known_warnings import silence_known_warnings
from omniformer.train import monitored_value
from tests.helpers.runs import compose_train


def test_main_returns_the_metric_the_checkpoint_watches():
    """A sweeper gets ``val_acc`` from a classifier and ``val_loss`` from a language model (main()
    returned ``val_loss`` whatever the task monitored)."""
    results = {"val_loss": 0.7, "val_acc": 0.9}
    assert monitored_value(compose_train(["task=image_classification", "data=mnist"]), results) == 0.9
    assert monitored_value(compose_train([]), results) == 0.7


def test_only_the_lightning_leafspec_deprecation_warning_is_silenced():
    from lightning.pytorch.utilities._pytree import _tree_flatten

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        silence_known_warnings()
        _tree_flatten({"loss": 1.0})  # builds a LeafSpec inside lightning
        text = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
        warnings.warn_explicit(text, FutureWarning, "elsewhere.py", 1, module="elsewhere")
        pytree = "lightning.pytorch.utilities._pytree"
        warnings.warn_explicit("something else", FutureWarning, "_pytree.py", 21, module=pytree)
    assert sorted(str(w.message) for w in caught) == sorted([text, "something else"])
