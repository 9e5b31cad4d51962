"""Image classification end to end: metrics by hand, training on real MNIST digits, eval figures,
predictions, image folders in process, and the attention-rollout picture."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from omniformer.backbone import Backbone
from omniformer.evaluate import evaluate
from omniformer.heads import ClassificationHead
from omniformer.model import OmniModel
from omniformer.predict import predict
from omniformer.tasks import ClassificationTask, OptimSettings
from omniformer.tokenizers import ImagePatchTokenizer
from omniformer.train import train
from omniformer.viz.attention import attention_rollout, save_attention_maps
from tests.helpers.data import make_image_folder
from tests.helpers.overrides import IMAGE
from tests.helpers.paths import FIXTURES, SHARED_DATA, needs_shared_data
from tests.helpers.runs import compose_train, read_results, run_main

DIGITS = sorted((FIXTURES / "mnist" / "png").glob("*.png"))


def tiny_task(channels: int = 1, size: int = 28, patch: int = 7, cls: bool = False, classes: int = 10):
    net = OmniModel(
        {"image": ImagePatchTokenizer(channels, size, patch, dim=32, cls_token=cls)},
        Backbone(dim=32, depth=2, heads=2),
        {"classifier": ClassificationHead(32, classes, pool="cls" if cls else "mean")},
    )
    return ClassificationTask(net, OptimSettings(), modality="image", num_classes=classes)


# -- metrics against hand-computed values ----------------------------------------------------------
class LogitsGiven(torch.nn.Module):
    """A "model" whose output for any modality and head is the logits it is given."""

    def forward(self, modality, head, inputs, **kwargs):
        return inputs


def test_metrics_match_hand_computed_values():
    """6 images, 10 classes; labels 0 0 1 1 2 2, predictions 0 1 1 1 2 0, label of the last one 6th."""
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    logits = torch.full((6, 10), -1.0)
    for i, (pred, second) in enumerate([(0, 1), (1, 0), (1, 3), (1, 4), (2, 5), (0, 9)]):
        logits[i, pred], logits[i, second] = 3.0, 1.0
    logits[5, [1, 3, 4, 5]] = 0.5  # label 2 (-1.0) ranks 7th: outside the top 5
    task = ClassificationTask(LogitsGiven(), OptimSettings(), "image", num_classes=10, label_smoothing=0.1)
    task.validation_step((logits[:4], labels[:4]), 0)  # two batches: metrics accumulate over both
    task.validation_step((logits[4:], labels[4:]), 1)
    metrics = {k: float(v) for k, v in task.val_metrics.compute().items()}

    assert metrics["val_acc"] == pytest.approx(4 / 6)
    assert metrics["val_acc_top5"] == pytest.approx(5 / 6)
    # Per class (only classes that occur count in the macro mean):
    # 0: tp 1 fp 1 fn 1 → F1 0.5;  1: tp 2 fp 1 fn 0 → P 2/3 R 1 F1 0.8;  2: tp 1 fp 0 fn 1 → F1 2/3.
    assert metrics["val_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)

    def smoothed_ce(row: list[float], label: int, eps: float = 0.1) -> float:
        log_z = math.log(sum(math.exp(v) for v in row))
        nll = [log_z - v for v in row]
        return (1 - eps) * nll[label] + eps * sum(nll) / len(row)

    expected = sum(smoothed_ce(logits[i].tolist(), int(labels[i])) for i in range(6)) / 6
    assert float(task.val_loss.compute()) == pytest.approx(expected, rel=1e-5)


def test_task_refuses_labels_outside_the_head():
    task = tiny_task(classes=3)
    images = torch.randn(2, 1, 28, 28)
    assert task.on_before_batch_transfer((images, torch.tensor([0, 2])), 0)[1].tolist() == [0, 2]
    with pytest.raises(ValueError, match=r"label 7 is out of range for the classifier head \(num_classes=3"):
        task.on_before_batch_transfer((images, torch.tensor([0, 7])), 0)


def test_image_task_uses_xavier_init():
    cfg = compose_train(["task=image_classification", "data=mnist"])
    assert cfg.model.init == "xavier"
    backbone = Backbone(dim=128, depth=2, heads=4, init="xavier")
    qkv = backbone.blocks[0].attn.qkv.weight
    assert qkv.std().item() == pytest.approx(math.sqrt(2 / (128 + 384)), rel=0.05)
    assert backbone.blocks[1].mlp.proj.weight.std().item() == pytest.approx(math.sqrt(2 / 640), rel=0.05)


# -- attention rollout -----------------------------------------------------------------------------
def test_rollout_reads_the_backbone_s_own_attention_and_the_task_s_logits():
    """The rollout's logits are the task's, and its first step is the backbone's head-averaged
    attention (no second implementation of attention in the figure code)."""
    task = tiny_task(channels=3, size=16, patch=4, cls=True).eval()
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        relevance, logits = attention_rollout(task, images)
        assert torch.allclose(logits, task(images), atol=1e-5)
        tokens = task.net.tokenizers["image"](images)
        _, attention = task.net.backbone(tokens, return_attention=True)
    assert len(attention) == len(task.net.backbone.blocks)
    assert attention[0].shape == (2, task.net.backbone.heads, 17, 17)
    assert relevance.shape == (2, 4, 4)


@pytest.mark.parametrize("cls", [False, True])
def test_rollout_is_a_distribution_over_patches(cls):
    task = tiny_task(cls=cls).eval()
    relevance, logits = attention_rollout(task, torch.randn(3, 1, 28, 28))
    assert relevance.shape == (3, 4, 4) and logits.shape == (3, 10)
    assert torch.allclose(relevance.sum(dim=(1, 2)), torch.ones(3)) and (relevance >= 0).all()


def test_attention_figure_is_a_png(tmp_path):
    task = tiny_task(channels=3, size=32, patch=8).train()
    batch = [torch.randn(5, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4])]
    paths = save_attention_maps(task, batch, [f"class {i}" for i in range(10)], tmp_path / "eval")
    assert paths == [tmp_path / "eval" / "attention_rollout.png"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Image.open(paths[0]).size[0] > 500
    assert task.training  # the caller's mode is restored


# -- real MNIST digits: training, omniformer-eval and -predict ----------------------------------------
def test_training_writes_results_classes_and_checkpoints(tiny_mnist_run):
    results = read_results(tiny_mnist_run)
    for key in ("val_acc", "val_f1", "val_acc_top5", "test_acc", "test_f1", "test_loss", "samples_per_sec"):
        assert key in results, key
    assert results["steps"] == 6 and 0.0 <= results["test_acc"] <= 1.0
    classes = json.loads((tiny_mnist_run / "classes.json").read_text())
    assert classes[7] == "7 - seven"
    assert json.loads((tiny_mnist_run / "normalization.json").read_text()) == {
        "mean": [0.1307],
        "std": [0.3081],
    }
    checkpoint = torch.load(tiny_mnist_run / "checkpoints" / "best.ckpt", weights_only=True)
    spec = checkpoint["omniformer"]["config"]["data_spec"]
    assert (spec["in_channels"], spec["image_size"], spec["patch_size"]) == (1, 28, 7)
    assert "net.tokenizers.image.proj.weight" in checkpoint["state_dict"]


@pytest.mark.slow
def test_eval_writes_metrics_confusion_matrix_and_attention_maps(tiny_mnist_run, tmp_path):
    metrics = evaluate(
        str(tiny_mnist_run / "checkpoints" / "best.ckpt"), out_dir=str(tmp_path), accelerator="cpu"
    )
    assert metrics["test_acc"] == pytest.approx(read_results(tiny_mnist_run)["test_acc"])
    for name in ("eval.json", "confusion_matrix.png", "attention_rollout.png"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_predict_cli_labels_digit_files(tiny_mnist_run, tmp_path, entry_point):
    ckpt = tiny_mnist_run / "checkpoints" / "best.ckpt"
    proc = entry_point("omniformer.predict", f"ckpt={ckpt}", f"inputs=[{DIGITS[0]},{DIGITS[1]}]", "top_k=3")
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(DIGITS[0]))
    assert len(lines[0].split(": ", 1)[1].split(", ")) == 3
    # A big RGB-saved grey digit is converted and resized; a colour photo is refused by name.
    big = tmp_path / "big_grey.jpg"
    Image.open(DIGITS[0]).convert("RGB").resize((200, 200)).save(big)
    rows = predict(str(ckpt), [str(big)], top_k=10)
    assert sum(t["prob"] for t in rows[0]["top"]) == pytest.approx(1.0, abs=1e-4)
    colour = tmp_path / "colour.png"
    Image.fromarray(np.dstack([np.full((28, 28), v, np.uint8) for v in (200, 30, 30)])).save(colour)
    with pytest.raises(
        ValueError, match=r"colour\.png is a colour \(RGB\) image but the model reads 1-channel"
    ):
        predict(str(ckpt), [str(colour)])


@pytest.mark.slow
@needs_shared_data("MNIST", "raw", "train-images-idx3-ubyte")
def test_readme_command_on_shared_mnist(tmp_path):
    """`omniformer-train task=image_classification data=mnist data.root=../shared/data`, a few steps
    (in process: the command as its own Python process is test_predict_cli_labels_digit_files')."""
    run_main(
        "omniformer.train",
        *IMAGE,
        "data=mnist",
        f"data.root={SHARED_DATA}",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=5",
        "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2",
        f"hydra.run.dir={tmp_path}",
    )
    results = read_results(tmp_path)
    assert results["steps"] == 5 and "test_acc" in results


# -- image folders and CIFAR through train() in process --------------------------------------------
def in_process(overrides: list[str], run_dir: Path) -> dict:
    cfg = compose_train(
        [
            *IMAGE,
            f"callbacks.checkpoint.dirpath={run_dir}/checkpoints",
            "logger=none",
            "callbacks.lr_monitor=null",
            "trainer.max_epochs=2",
            *overrides,
        ]
    )
    return train(cfg, run_dir)


def colour_folder(root, patch_size: int) -> list[str]:
    """Overrides that train on a generated colour ImageFolder of 16×16 images (36 files, 6 per batch)."""
    return [
        "data=image_folder",
        f"data.root={root}",
        "data.image_size=16",
        f"data.patch_size={patch_size}",
        "data.batch_size=6",
        "data.num_workers=0",
        "data.val_size=6",
        "data.test_size=6",
        "optim.lr=5e-3",
    ]


@pytest.mark.slow
def test_image_folder_trains_and_learns_colours(tmp_path):
    """Three colour classes, generated PNG/JPEG files: learnable in a few steps."""
    root = make_image_folder(tmp_path / "photos", per_class=12)
    results = in_process(
        [*colour_folder(root, patch_size=8), "trainer.max_epochs=6"],
        tmp_path / "run",
    )
    assert results["steps"] == 24
    assert results["test_acc"] >= 0.5  # chance is 1/3
    assert json.loads((tmp_path / "run" / "classes.json").read_text()) == ["blue", "green", "red"]


def test_learned_positions_and_cls_pooling_from_config(tmp_path):
    root = make_image_folder(tmp_path / "photos", per_class=4, size=(24, 16))
    cfg = compose_train(
        [
            *IMAGE,
            "data=image_folder",
            f"data.root={root}",
            "data.image_size=[16,24]",
            "data.patch_size=8",
            "task.net.tokenizers.image.positions=learned",
            "task.net.tokenizers.image.cls_token=true",
            "task.net.heads.classifier.pool=cls",
        ]
    )
    dm = instantiate(cfg.data)
    dm.setup("fit")
    cfg.data_spec = dm.spec()
    task = instantiate(cfg.task)
    assert task.net.tokenizers["image"].pos_embed.shape == (2, 3, 32)
    images, _ = next(iter(dm.train_dataloader()))
    assert images.shape[-2:] == (16, 24) and task(images).shape == (images.shape[0], 3)


@pytest.mark.slow
def test_conv_stem_from_config_trains_on_an_image_folder(tmp_path):
    """``task.net.tokenizers.image.stem=conv`` (as experiment=fashion_mnist sets it) trains end to end."""
    root = make_image_folder(tmp_path / "photos", per_class=12)
    results = in_process(
        [
            *colour_folder(root, patch_size=4),
            "trainer.max_epochs=4",
            "task.net.tokenizers.image.stem=conv",
            "task.net.tokenizers.image.stem_channels=8",
        ],
        tmp_path / "run",
    )
    assert results["steps"] == 16 and results["test_acc"] >= 0.5  # chance is 1/3


def test_fashion_mnist_preset_uses_the_conv_stem():
    cfg = compose_train(["experiment=fashion_mnist"])
    tokenizer = cfg.task.net.tokenizers.image
    assert (tokenizer.stem, cfg.data.patch_size, cfg.trainer.max_epochs) == ("conv", 4, 12)
