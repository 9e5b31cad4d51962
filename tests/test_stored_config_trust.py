"""A checkpoint's stored config builds only omniformer's own classes: an edited ``_target_`` never runs.

``torch.load(weights_only=True)`` keeps pickled code out, but the config inside a checkpoint is plain
data that anyone who can write the file can edit, and eval / generate / predict rebuild the task and
data module from it. Each payload below is harmless but visible (it creates, copies or deletes a file
in the test's folder); a control test shows every payload runs when the config is built unchecked.
Every entry point must refuse each payload by its config key and target, before anything is built.
"""

from __future__ import annotations

import copy
import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from omniformer.evaluate import evaluate
from omniformer.generate import generate_text
from omniformer.predict import predict
from omniformer.train import run
from tests.helpers.overrides import LM, VIDEO
from tests.helpers.paths import FIXTURES
from tests.helpers.plugin import EXAMPLE, forget_plugin
from tests.helpers.runs import compose_train, run_main


class MkdirOnUnpickle:
    """Unpickling this object calls ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@dataclass
class Payload:
    """Where a payload goes in the stored config, and how to tell whether it ran.

    Attributes:
        place: ``dotted.key → value`` settings applied to the stored config (a value may use ``{tmp}``).
        key: the config key the refusal must name.
        target: the ``_target_`` the refusal must name.
        ran: whether the payload's effect is visible in ``tmp``.
    """

    place: Callable[[Path], dict[str, Any]]
    key: str
    target: str
    ran: Callable[[Path], bool]


def _touch(path: Path) -> dict[str, Any]:
    return {"_target_": "pathlib.Path.touch", "self": str(path)}


def _unpickle(tmp: Path, target: str = "torch.load") -> dict[str, Any]:
    torch.save(MkdirOnUnpickle(tmp / "unpickled"), tmp / "payload.pkl")
    return {"_target_": target, "f": str(tmp / "payload.pkl"), "weights_only": False}


def _victim(tmp: Path) -> str:
    (tmp / "victim.txt").write_text("keep me")
    return str(tmp / "victim.txt")


PAYLOADS: dict[str, Payload] = {
    "Path.touch as a tokenizer": Payload(
        lambda tmp: {"task.net.tokenizers.text": _touch(tmp / "touched")},
        "task.net.tokenizers.text._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "shutil.copyfile in the data config": Payload(
        lambda tmp: {
            "data.vocab_json": {
                "_target_": "shutil.copyfile",
                "src": _victim(tmp),
                "dst": str(tmp / "copied.txt"),
            }
        },
        "data.vocab_json._target_",
        "shutil.copyfile",
        lambda tmp: (tmp / "copied.txt").exists(),
    ),
    "Path.unlink as the optimizer settings": Payload(
        lambda tmp: {"task.optim": {"_target_": "pathlib.Path.unlink", "self": _victim(tmp)}},
        "task.optim._target_",
        "pathlib.Path.unlink",
        lambda tmp: not (tmp / "victim.txt").exists(),
    ),
    "torch.load(weights_only=False) as a head": Payload(
        lambda tmp: {"task.net.heads.lm": _unpickle(tmp)},
        "task.net.heads.lm._target_",
        "torch.load",
        lambda tmp: (tmp / "unpickled").exists(),
    ),
    "torch.load re-exported by an omniformer module": Payload(
        lambda tmp: {"task.net.backbone": _unpickle(tmp, "omniformer.tasks.language_modeling.torch.load")},
        "task.net.backbone._target_",
        "omniformer.tasks.language_modeling.torch.load",
        lambda tmp: (tmp / "unpickled").exists(),
    ),
    "positional _args_ inside nested lists": Payload(
        lambda tmp: {
            "task.net.heads.lm.tie_to": [
                [{"_target_": "pathlib.Path.touch", "_args_": [str(tmp / "touched")]}]
            ]
        },
        "task.net.heads.lm.tie_to[0][0]._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "a _partial_ node": Payload(
        lambda tmp: {
            "task.optim": {
                "_target_": "shutil.copyfile",
                "_partial_": True,
                "src": _victim(tmp),
                "dst": str(tmp / "copied.txt"),
            }
        },
        "task.optim._target_",
        "shutil.copyfile",
        lambda tmp: (tmp / "copied.txt").exists(),
    ),
    "an interpolation into a subtree that is never checked": Payload(
        lambda tmp: {
            "callbacks.evil": _touch(tmp / "touched"),
            "task.net.tokenizers.text": "${callbacks.evil}",
        },
        "task.net.tokenizers.text._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "a _target_ that is an interpolation": Payload(
        lambda tmp: {
            "callbacks.name": "pathlib.Path.touch",
            "task.net.tokenizers.text": {"_target_": "${callbacks.name}", "self": str(tmp / "touched")},
        },
        "task.net.tokenizers.text._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "a node decoded from a string by oc.decode": Payload(
        lambda tmp: {
            "task.net.tokenizers.text": "${oc.decode:'{_target_: pathlib.Path.touch, self: "
            + str(tmp / "touched")
            + "}'}"
        },
        "task.net.tokenizers.text._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "an image transform step": Payload(
        lambda tmp: {
            "data": {
                "_target_": "omniformer.data.MNISTDataModule",
                "root": str(FIXTURES / "mnist"),
                "val_size": 4,
                "num_workers": 0,
                "train_transforms": {
                    "crop": {"_target_": "torchvision.transforms.v2.RandomCrop", "size": 28},
                    "evil": _touch(tmp / "touched"),
                },
            }
        },
        "data.train_transforms.evil._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
    "an image transform step under _recursive_: false": Payload(
        lambda tmp: {
            "data": {
                "_target_": "omniformer.data.MNISTDataModule",
                "_recursive_": False,
                "root": str(FIXTURES / "mnist"),
                "val_size": 4,
                "num_workers": 0,
                "eval_transforms": [_touch(tmp / "touched")],
            }
        },
        "data.eval_transforms[0]._target_",
        "pathlib.Path.touch",
        lambda tmp: (tmp / "touched").exists(),
    ),
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    run([*LM, "trainer.max_steps=2"], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def stored_config(path: Path) -> dict[str, Any]:
    """The plain config dict a checkpoint carries."""
    return torch.load(path, weights_only=True)["omniformer"]["config"]


def with_settings(config: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with each ``dotted.key`` set to its value (missing parents created)."""
    config = copy.deepcopy(config)
    for dotted, value in settings.items():
        node = config
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def tampered(trained: Path, folder: Path, settings: dict[str, Any], name: str = "tampered") -> Path:
    """A copy of the genuine checkpoint whose stored config has ``settings`` applied."""
    checkpoint = torch.load(trained, weights_only=True)
    checkpoint["omniformer"] = {
        **checkpoint["omniformer"],
        "config": with_settings(checkpoint["omniformer"]["config"], settings),
    }
    path = folder / f"{name}.ckpt"
    torch.save(checkpoint, path)
    return path


def assert_refused(caught: pytest.ExceptionInfo, payload: Payload) -> None:
    message = str(caught.value)
    assert f"{payload.key}='{payload.target}'" in message, message
    assert "allow_targets" in message, message


ENTRY_POINTS: dict[str, Callable[[Path, Path], Any]] = {
    "evaluate": lambda path, tmp: evaluate(
        str(path), split="val", out_dir=str(tmp / "eval"), figures=False, accelerator="cpu"
    ),
    "generate_text": lambda path, tmp: generate_text(str(path), "ROMEO:", max_new_tokens=2, device="cpu"),
    "predict": lambda path, tmp: predict(str(path), [str(tmp / "x.png")]),
}


@pytest.mark.parametrize("name", list(PAYLOADS))
def test_each_payload_runs_when_the_stored_config_is_built_unchecked(name, trained, tmp_path):
    """The control: what the entry points must prevent really happens with a plain ``instantiate``."""
    payload = PAYLOADS[name]
    config = OmegaConf.create(with_settings(stored_config(trained), payload.place(tmp_path)))
    node = OmegaConf.select(config, payload.key.rsplit("._target_", 1)[0].split("[")[0])
    built = instantiate(node)
    for item in built if isinstance(built, list) else [built]:
        if isinstance(item, functools.partial):
            item()
    assert payload.ran(tmp_path)


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("name", list(PAYLOADS))
def test_every_entry_point_refuses_every_payload_before_building(name, entry, trained, tmp_path):
    payload = PAYLOADS[name]
    path = tampered(trained, tmp_path, payload.place(tmp_path))
    with pytest.raises(ValueError) as caught:
        ENTRY_POINTS[entry](path, tmp_path)
    assert not payload.ran(tmp_path), f"{entry} ran the payload {name!r}"
    assert_refused(caught, payload)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    "target",
    [
        "builtins.eval",
        "omniformer.train.run",
        "omniformer.evaluate.evaluate",
        "omniformer.checkpoint.torch.load",
        "omniformer.files.os.remove",
        "omniformer.model.nn.Linear",  # a class, but torch's: re-exported, not defined in omniformer
        "omniformer.run_checkpoint.RunCheckpoint",  # omniformer's own class, but a callback that writes files
        "omniformer.tasks.LanguageModelingTask.load_from_checkpoint",  # a method that reads another file
        "omniformer.model.OmniModel.__init__.__globals__",
        "omniformer.bench.__main__.main",  # importing it would run it
        "torchvision.io.write_png",
        "torchvision.transforms.v2.Lambda",  # a transform that calls any function it is given
        "omniformer.no_such_module.Thing",
        "not a dotted name",
    ],
)
def test_targets_that_are_not_omniformer_classes_are_refused_by_key(target, trained, tmp_path):
    path = tampered(trained, tmp_path, {"task.net.heads.lm._target_": target})
    with pytest.raises(ValueError) as caught:
        generate_text(str(path), "ROMEO:", max_new_tokens=2, device="cpu")
    assert f"task.net.heads.lm._target_={target!r}" in str(caught.value)


def test_a_non_string_target_is_refused_by_key(trained, tmp_path):
    path = tampered(trained, tmp_path, {"task.net.heads.lm._target_": 42})
    with pytest.raises(ValueError, match=r"task\.net\.heads\.lm\._target_=42"):
        generate_text(str(path), "ROMEO:", max_new_tokens=2, device="cpu")


def test_an_escaped_interpolation_cannot_turn_into_a_live_one(trained, tmp_path):
    """``\\${...}`` resolves to the text ``${...}``; rebuilt from plain data it would resolve again."""
    marker = tmp_path / "touched"
    path = tampered(
        trained,
        tmp_path,
        {"callbacks.evil": _touch(marker), "task.net.tokenizers.text": "\\${callbacks.evil}"},
    )
    with pytest.raises(ValueError, match=r"task\.net\.tokenizers\.text='\$\{callbacks\.evil\}'"):
        generate_text(str(path), "ROMEO:", max_new_tokens=2, device="cpu")
    assert not marker.exists()


def test_the_eval_cli_refuses_a_payload_and_names_the_key(trained, tmp_path):
    # in process: omniformer-eval as its own process is test_a_plugin_checkpoint_evaluates_with_the_flag's
    payload = PAYLOADS["Path.touch as a tokenizer"]
    path = tampered(trained, tmp_path, payload.place(tmp_path))
    proc = run_main(
        "omniformer.evaluate",
        f"ckpt={path}",
        "split=val",
        "figures=false",
        "accelerator=cpu",
        f"out_dir={tmp_path / 'eval'}",
        check=False,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert f"{payload.key}='{payload.target}'" in output, output[-3000:]
    assert not payload.ran(tmp_path) and not (tmp_path / "eval").exists()


@pytest.mark.slow
def test_a_genuine_checkpoint_still_evaluates_generates_and_predicts(trained, tmp_path):
    metrics = evaluate(str(trained), split="val", out_dir=str(tmp_path), figures=False, accelerator="cpu")
    assert "val_loss" in metrics and (tmp_path / "eval.json").is_file()
    assert len(generate_text(str(trained), "ROMEO:", max_new_tokens=3, device="cpu")[0]) > len("ROMEO:")
    with pytest.raises(ValueError, match="not a classifier"):  # refused for what it is, not for trust
        predict(str(trained), ["x.png"])


@pytest.mark.slow
def test_init_from_reads_only_tensors_of_a_checkpoint_with_a_malicious_config(trained, tmp_path):
    """``model.backbone.init_from`` copies the backbone's tensors and never builds the stored config."""
    payload = PAYLOADS["Path.touch as a tokenizer"]
    source = tampered(trained, tmp_path, payload.place(tmp_path))
    results = run([*LM, "trainer.max_steps=1", f"model.backbone.init_from={source}"], tmp_path / "run")
    assert results["steps"] == 1
    assert not payload.ran(tmp_path)


def test_resuming_from_a_checkpoint_with_a_malicious_config_builds_only_the_current_config(trained, tmp_path):
    """``ckpt_path`` restores weights and compares the stored config; it never builds it."""
    payload = PAYLOADS["torch.load(weights_only=False) as a head"]
    source = tampered(trained, tmp_path, payload.place(tmp_path))
    results = run([*LM, "trainer.max_steps=3", f"ckpt_path={source}"], tmp_path / "run")
    assert results["steps"] == 3
    assert not payload.ran(tmp_path)


@pytest.mark.slow
def test_the_eval_view_of_a_transfer_run_does_not_read_init_from_again(trained, tmp_path):
    """A checkpoint's own weights replace the pretrained ones: eval needs no pretrained file."""
    copy_of_source = tmp_path / "pretrained.ckpt"
    copy_of_source.write_bytes(trained.read_bytes())
    run([*LM, "trainer.max_steps=1", f"model.backbone.init_from={copy_of_source}"], tmp_path / "run")
    copy_of_source.unlink()
    metrics = evaluate(
        str(tmp_path / "run" / "checkpoints" / "last.ckpt"), split="val", figures=False, accelerator="cpu"
    )
    assert "val_loss" in metrics


# -- every shipped config passes; plug-ins only with the flag ----------------------------------------
SHIPPED = [
    ["task=language_modeling"],
    ["task=image_classification", "data=mnist"],
    ["task=image_classification", "data=fashion_mnist"],
    ["task=image_classification", "data=cifar10"],
    ["task=image_classification", "data=cifar100"],
    ["task=image_classification", "data=image_folder", "data.root=/x"],
    ["task=audio_classification", "data=spoken_digits"],
    ["task=audio_classification", "data=speech_commands"],
    ["task=audio_classification", "data=audio_folder", "data.root=/x"],
    ["task=text_classification", "data=movie_reviews"],
    ["task=multitask"],
    ["task=multitask", "tasks=[text_lm,movie_reviews]"],
]


@pytest.mark.slow
@pytest.mark.parametrize("overrides", SHIPPED, ids=lambda o: " ".join(o))
def test_every_shipped_task_and_data_config_is_buildable_from_a_checkpoint(overrides):
    from omniformer.trusted_config import untrusted_targets

    cfg = compose_train(overrides)
    for part in ("task", "data"):
        tree = OmegaConf.to_container(cfg[part], resolve=False)
        assert untrusted_targets(tree, part) == [], (overrides, part)


@pytest.fixture(scope="module")
def video_checkpoint(tmp_path_factory) -> Path:
    """The examples/video plug-in trained for two steps (its classes on sys.path while it trains)."""
    run_dir = tmp_path_factory.mktemp("video")
    patch = pytest.MonkeyPatch()
    patch.syspath_prepend(str(EXAMPLE))
    try:
        run(
            [
                f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]",
                "task=video_classification",
                f"data.root={FIXTURES / 'mnist'}",
                *VIDEO,
                "trainer.max_epochs=-1",
                "trainer.max_steps=2",
                "test_after_fit=false",
            ],
            run_dir,
        )
    finally:
        patch.undo()
        forget_plugin()
    return run_dir / "checkpoints" / "last.ckpt"


def test_a_plugin_checkpoint_is_refused_without_the_flag_and_names_it(video_checkpoint, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    with pytest.raises(ValueError) as caught:
        evaluate(str(video_checkpoint), split="val", figures=False, accelerator="cpu")
    message = str(caught.value)
    assert "task.net.tokenizers.video._target_='omniformer_video.TubeletTokenizer'" in message
    assert "data._target_='omniformer_video.MovingMNISTDataModule'" in message
    assert "allow_targets" in message
    assert "omniformer_video" not in sys.modules  # refused by name, never imported


@pytest.mark.slow
def test_a_plugin_checkpoint_evaluates_with_the_flag(video_checkpoint, tmp_path, monkeypatch, entry_point):
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE))  # the subprocess variant
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the in-process one
    proc = entry_point(
        "omniformer.evaluate",
        f"ckpt={video_checkpoint}",
        "split=val",
        "figures=false",
        "accelerator=cpu",
        f"out_dir={tmp_path}",
        "allow_targets=[omniformer_video]",
    )
    assert "val_acc" in proc.stdout and (tmp_path / "eval.json").is_file()


def test_the_flag_trusts_only_what_the_named_package_defines(video_checkpoint, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    path = tampered(
        video_checkpoint,
        tmp_path,
        {"task.net.heads.classifier": _unpickle(tmp_path, "omniformer_video.tokenizer.torch.load")},
    )
    with pytest.raises(ValueError) as caught:
        evaluate(str(path), split="val", figures=False, accelerator="cpu", allow_targets=["omniformer_video"])
    assert "task.net.heads.classifier._target_='omniformer_video.tokenizer.torch.load'" in str(caught.value)
    assert not (tmp_path / "unpickled").exists()


@pytest.mark.parametrize("value", ["", "pathlib", "os.path", "torch", "omniformer", "bad name"])
def test_the_flag_refuses_packages_that_are_not_plugins(value, trained):
    with pytest.raises(ValueError, match=r"allow_targets"):
        generate_text(str(trained), "x", max_new_tokens=1, device="cpu", allow_targets=[value])


def test_a_stored_config_cannot_make_eval_download_or_cache_where_it_says(tmp_path):
    """``download`` and ``cache_dir`` are values, not targets: a stored config would otherwise make
    eval download into, or write a tokenised cache to, a folder of its choosing. They are reset; the
    user's own ``data.*`` overrides still set them."""
    from omegaconf import OmegaConf

    from omniformer.trusted_config import buildable_parts

    stored = OmegaConf.create(
        {
            "task": {"_target_": "omniformer.tasks.ClassificationTask"},
            "data": {
                "_target_": "omniformer.data.multitask.MultiTaskDataModule",
                "members": {
                    "mnist": {
                        "_target_": "omniformer.data.MNISTDataModule",
                        "root": "/etc",
                        "download": True,
                    },
                    "text": {"_target_": "omniformer.data.TextDataModule", "cache_dir": str(tmp_path)},
                },
            },
        }
    )
    data = buildable_parts(stored)["data"]
    assert data["members"]["mnist"]["download"] is False and data["members"]["text"]["cache_dir"] is None
    mine = buildable_parts(stored, data_overrides={"members": {"mnist": {"download": True}}})["data"]
    assert mine["members"]["mnist"]["download"] is True
