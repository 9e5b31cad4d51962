"""Deployable graphs (issue #16): ONNX and torch.export graphs of the tiny trained runs equal eager
PyTorch (pixels, waveforms and ids in; 10 cached decode steps for the LM), take other batch sizes,
and are refused (deleted) when they disagree; untraceable tokenizers, unknown formats and a missing
onnxruntime fail with one error naming the culprit."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import omniformer.graph_export.export as graph_export_module
from omniformer.backbone import Backbone
from omniformer.checkpoint import datamodule_from_checkpoint, load_checkpoint, task_from_checkpoint
from omniformer.graph_export import (
    GraphExportError,
    GraphMismatchError,
    export_graph,
    export_net,
)
from omniformer.heads import ClassificationHead
from omniformer.model import OmniModel
from omniformer.tokens import Tokens
from tests.helpers.paths import FIXTURES

TOLERANCE = 1e-4
DIGITS = sorted((FIXTURES / "mnist" / "png").glob("*.png"))
RECORDINGS = sorted((FIXTURES / "fsdd" / "recordings").glob("*.wav"))


@dataclass
class StandIn:
    """What export_graph reads from a loaded model (omniformer.load's object)."""

    net: OmniModel
    kind: str
    modality: str
    head: str


def checkpoint_of(run_dir: Path) -> Path:
    folder = run_dir / "checkpoints"
    return folder / "best.ckpt" if (folder / "best.ckpt").is_file() else folder / "last.ckpt"


def task_and_inputs(run_dir: Path, files: list[Path]):
    """The trained task and ``files`` read as its data module's evaluation transforms read them."""
    checkpoint = load_checkpoint(checkpoint_of(run_dir))
    datamodule = datamodule_from_checkpoint(checkpoint)
    return task_from_checkpoint(checkpoint), datamodule.load_inputs([str(f) for f in files])


def digits(run_dir: Path):
    """The image task and six digits: the two bundled PNGs as the data module reads them, and their
    mirror images."""
    task, pixels = task_and_inputs(run_dir, DIGITS)
    return task, torch.cat([pixels, pixels.flip(-1), pixels.flip(-2)])


def eager(task, *inputs) -> torch.Tensor:
    with torch.no_grad():
        if len(inputs) == 2:
            return task.net(task.modality, task.head, inputs[0], lengths=inputs[1])
        return task.net(task.modality, task.head, inputs[0])


def assert_close(report) -> None:
    assert report.max_abs_diff, report
    assert max(report.max_abs_diff.values()) <= TOLERANCE, report.checks


# -- equality with eager PyTorch ----------------------------------------------------------------------
@pytest.mark.slow
def test_image_classifier_onnx_takes_pixels_and_any_batch(tiny_mnist_run, tmp_path):
    import onnxruntime

    task, pixels = digits(tiny_mnist_run)
    report = export_net(
        task.net, "classifier", task.modality, task.head, tmp_path / "d.onnx", "onnx", (pixels[:2],)
    )
    assert_close(report)
    assert report.input_names == ["pixels"] and report.dynamic_axes["pixels"] == {0: "batch"}
    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    for batch in (pixels[2:5], pixels[:1]):  # traced with 2 images, run with 3 and 1
        (logits,) = session.run(None, {"pixels": batch.numpy()})
        assert np.abs(logits - eager(task, batch).numpy()).max() <= TOLERANCE


@pytest.mark.slow  # torch.export of an image graph is also covered by the raw-pixels test below
def test_image_classifier_torch_export_matches_eager(tiny_mnist_run, tmp_path):
    task, pixels = digits(tiny_mnist_run)
    report = export_graph(
        StandIn(task.net, "classifier", "image", "classifier"), tmp_path / "d.pt2", "torch_export"
    )
    assert_close(report)
    program = torch.export.load(str(report.path)).module()
    assert (program(pixels[:3]) - eager(task, pixels[:3])).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_image_graph_can_normalise_raw_pixels_itself(tiny_mnist_run, tmp_path):
    task, pixels = digits(tiny_mnist_run)
    mean, std = [0.1307], [0.3081]
    raw = pixels * std[0] + mean[0]  # back to [0, 1] pixels
    out = tmp_path / "raw.pt2"
    report = export_net(
        task.net,
        "classifier",
        "image",
        "classifier",
        out,
        "torch_export",
        (raw,),
        pixel_mean=mean,
        pixel_std=std,
    )
    assert_close(report)
    assert (torch.export.load(str(out)).module()(raw) - eager(task, pixels)).abs().max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_audio_classifier_takes_waveforms_with_log_mel_inside(tiny_fsdd_run, tmp_path, fmt):
    task, (waveform, lengths) = task_and_inputs(tiny_fsdd_run, RECORDINGS[:2])
    report = export_net(
        task.net, "classifier", "audio", "classifier", tmp_path / f"a.{fmt}", fmt, (waveform, lengths)
    )
    assert_close(report)
    assert report.input_names == ["waveform", "lengths"]
    # Checked on the two real clips, and on three clips of other lengths (dynamic batch and samples).
    assert any("3×" in check for check in report.checks), report.checks


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["torch_export", "onnx"])
def test_language_model_decodes_ten_steps_with_its_cache(tiny_lm_checkpoint, tmp_path, fmt):
    task = task_from_checkpoint(load_checkpoint(tiny_lm_checkpoint))
    prompt = torch.randint(
        0, task.net.tokenizers["text"].vocab_size, (2, 5), generator=torch.Generator().manual_seed(1)
    )
    model = StandIn(task.net, "language_model", task.modality, task.head)
    report = export_graph(model, tmp_path / f"lm.{fmt}", fmt, example_inputs=(prompt,))
    assert_close(report)
    depth = task.net.backbone.depth
    assert report.input_names[:2] == ["ids", "position_offset"] and len(report.input_names) == 2 + 2 * depth
    assert report.output_names[0] == "logits" and f"present_value_{depth - 1}" in report.output_names
    assert "10 cached decode steps" in report.checks[0]


# -- refusal and errors -------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_graph_that_disagrees_is_deleted_and_the_difference_named(tiny_mnist_run, tmp_path, monkeypatch):
    task, _ = digits(tiny_mnist_run)
    real = graph_export_module.load_runner

    def off_by_a_little(path, fmt):
        run = real(path, fmt)
        return lambda args: [t + 0.003 for t in run(args)]

    monkeypatch.setattr(graph_export_module, "load_runner", off_by_a_little)
    out = tmp_path / "digits.pt2"
    with pytest.raises(GraphMismatchError, match=r"'logits' differs by up to 0\.003") as err:
        export_net(task.net, "classifier", "image", "classifier", out, "torch_export")
    assert "deleted" in str(err.value)
    assert list(tmp_path.iterdir()) == []


class ThresholdTokenizer(nn.Module):
    """A plug-in tokenizer that branches on a tensor value: fine eagerly, untraceable."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Linear(4, dim)

    def forward(self, x: torch.Tensor) -> Tokens:
        if float(x.abs().max()) > 100:  # data-dependent control flow
            x = x / 100
        return Tokens(self.proj(x))


def test_an_untraceable_tokenizer_is_named_with_its_op(tmp_path):
    net = OmniModel(
        {"odd": ThresholdTokenizer(8)}, Backbone(8, 1, 2), {"classifier": ClassificationHead(8, 3)}
    )
    out = tmp_path / "odd.pt2"
    with pytest.raises(
        GraphExportError, match=r"tokenizer 'odd' \(ThresholdTokenizer\).*float\(x\.abs\(\)\.max\(\)\)"
    ):
        export_net(
            net.eval(), "classifier", "odd", "classifier", out, "torch_export", (torch.randn(2, 5, 4),)
        )
    assert not out.exists()


def test_an_unknown_format_lists_the_known_ones(tmp_path):
    net = OmniModel(
        {"odd": ThresholdTokenizer(8)}, Backbone(8, 1, 2), {"classifier": ClassificationHead(8, 3)}
    )
    with pytest.raises(ValueError, match=r"unknown graph format 'tflite'.*'onnx'.*'torch_export'"):
        export_graph(StandIn(net, "classifier", "odd", "classifier"), tmp_path / "m.tflite", "tflite")


def test_onnx_without_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a)
    )
    net = OmniModel(
        {"odd": ThresholdTokenizer(8)}, Backbone(8, 1, 2), {"classifier": ClassificationHead(8, 3)}
    )
    with pytest.raises(ImportError, match=r"missing: onnxruntime.*pip install 'omniformer\[export\]'"):
        export_net(net, "classifier", "odd", "classifier", tmp_path / "m.onnx", "onnx")
