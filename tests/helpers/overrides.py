"""The tiny command lines tests train with, composed from shared pieces.

Every run here is a 32-wide, one-block, two-head model on the CPU without a progress bar; what
differs is the task and the data. Lists are plain Hydra overrides: add to them, or change a key
with :func:`replace` (a later duplicate would win too, but the composed command would read twice).
"""

from __future__ import annotations

from pathlib import Path

from tests.helpers.paths import FIXTURES

# -- pieces ------------------------------------------------------------------------------------------
TINY_MODEL = ["model.dim=32", "model.depth=1", "model.heads=2"]
ON_CPU = ["trainer.accelerator=cpu", "callbacks.progress=null"]
# BPE on the bundled Tiny Shakespeare: 16-token windows, 4 per batch, a 300-id vocabulary.
TINY_LM_DATA = ["data.block_size=16", "data.batch_size=4", "data.vocab_size=300"]
# The bundled MNIST excerpt (20 training digits, 4 of them held out for validation, 10 test digits).
MNIST_FIXTURE_DATA = ["data=mnist", f"data.root={FIXTURES / 'mnist'}", "data.val_size=4"]
# The six bundled FSDD recordings (digits 0 and 1; take 5 held out for validation).
FSDD_FIXTURE_DATA = ["data=spoken_digits", f"data.root={FIXTURES / 'fsdd'}", "data.val_takes=1"]
# Paired data (media → text) at its smallest: 8 training pairs, 4 validation and 4 test, batches of 4.
TINY_PAIRS = [
    "data.train_size=8",
    "data.val_size=4",
    "data.test_size=4",
    "data.batch_size=4",
    "data.eval_batch_size=4",
]


def replace(base: list[str], *overrides: str) -> list[str]:
    """``base`` with the value of each key in ``overrides`` replaced in place (new keys appended)."""
    new = {o.split("=", 1)[0]: o for o in overrides}
    out = [new.pop(o.split("=", 1)[0], o) for o in base]
    return [*out, *new.values()]


def member(name: str, data: list[str]) -> list[str]:
    """Single-task data overrides (``data.x=...``) as those of multi-task member ``name``; the data
    group choice (``data=mnist``) is dropped, since ``tasks=[...]`` picks each member's data."""
    return [f"data.members.{name}.{o.removeprefix('data.')}" for o in data if o.startswith("data.")]


# -- language modelling ------------------------------------------------------------------------------
# In process (omniformer.train.run): 12 steps, validation every 4, last.ckpt every 3, dropout on (so
# resumes exercise the RNG too), no sampling or test pass.
LM = [
    *TINY_MODEL,
    "model.dropout=0.1",
    *TINY_LM_DATA,
    "trainer.max_steps=12",
    "trainer.val_check_interval=4",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=2",
    "task.sample_tokens=0",
    "callbacks.checkpoint.every_n_train_steps=3",
    "test_after_fit=false",
    *ON_CPU,
]
# Through omniformer-train: 6 steps, validation every 3, and a 12-token sample at the end.
LM_CLI = [
    *TINY_MODEL,
    *TINY_LM_DATA,
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "task.sample_tokens=12",
    *ON_CPU,
]
# Big enough (256 wide, 4 blocks) that writing last.ckpt (every step) takes long enough to be caught.
BIG_LM = replace(
    LM,
    "model.dim=256",
    "model.depth=4",
    "trainer.max_steps=16",
    "callbacks.checkpoint.every_n_train_steps=1",
)
# Compiled and eager runs compared step by step: compiled kernels draw dropout differently.
LM_WITHOUT_DROPOUT = replace(LM, "trainer.max_steps=6", "model.dropout=0.0")

# -- classification ----------------------------------------------------------------------------------
IMAGE = [
    "task=image_classification",
    *TINY_MODEL,
    "optim.warmup_steps=2",
    "trainer.log_every_n_steps=1",
    *ON_CPU,
]
AUDIO = ["task=audio_classification", *TINY_MODEL, "trainer.log_every_n_steps=1", *ON_CPU]
TEXT_CLASSIFICATION = [*TINY_MODEL, "trainer.enable_model_summary=false", *ON_CPU]
# The examples/video plug-in: 4-frame 32×32 Moving-MNIST clips, 8 training clips, one epoch.
VIDEO = [
    *TINY_MODEL,
    "data.frames=4",
    "data.image_size=32",
    "data.train_clips=8",
    "data.val_clips=4",
    "data.test_clips=4",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    *ON_CPU,
]


def image_args(root: Path) -> list[str]:
    """ImageFolder classification (see :func:`tests.helpers.data.image_folder`): 20 training images,
    5 batches of 4 per epoch, 3 epochs, dropout on, in process."""
    return [
        "task=image_classification",
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=8",
        "data.patch_size=4",
        "data.batch_size=4",
        "data.eval_batch_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "data.num_workers=0",
        *TINY_MODEL,
        "model.dropout=0.1",
        "trainer.max_epochs=3",
        "trainer.log_every_n_steps=1",
        "optim.warmup_steps=2",
        "test_after_fit=false",
        *ON_CPU,
    ]


# -- multi-task: a text LM, MNIST digits and spoken digits on one backbone ---------------------------
MULTITASK = [
    "task=multitask",
    "tasks=[text_lm, mnist, spoken_digits]",
    *TINY_MODEL,
    *member("text_lm", TINY_LM_DATA),
    *member("mnist", [*MNIST_FIXTURE_DATA, "data.batch_size=4"]),
    *member("spoken_digits", [*FSDD_FIXTURE_DATA, "data.batch_size=2"]),
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    *ON_CPU,
]
# For exact resume: weighted sampling over 5-step schedule epochs (LM 1, MNIST 3, audio 1 of them),
# 16 training digits in 4 batches and 2 training clips in 2 batches per member pass, dropout on.
MULTITASK_RESUMABLE = [
    "task=multitask",
    "tasks=[text_lm, mnist, spoken_digits]",
    "data.sampling=weights",
    "data.weights={text_lm: 1, mnist: 2, spoken_digits: 1}",
    "data.steps_per_epoch=5",
    *TINY_MODEL,
    "model.dropout=0.1",
    *member("text_lm", TINY_LM_DATA),
    *member("mnist", [*MNIST_FIXTURE_DATA, "data.batch_size=4", "data.eval_batch_size=4"]),
    *member("spoken_digits", [*FSDD_FIXTURE_DATA, "data.batch_size=1"]),
    "trainer.max_steps=14",
    "trainer.limit_val_batches=1",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=2",
    "test_after_fit=false",
    *ON_CPU,
]
