"""Secure loading: a checkpoint that would run code when unpickled is refused, and the code never runs.

The payload's ``__reduce__`` creates a folder; every test checks the folder does not exist afterwards.
A control test shows the payload is live: a plain ``torch.load(weights_only=False)`` does run it.
"""

from __future__ import annotations

import io
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from omniformer.checkpoint import load_checkpoint
from omniformer.checkpoint_io import AtomicCheckpointIO
from omniformer.evaluate import evaluate
from omniformer.generate import generate_text
from omniformer.predict import predict
from omniformer.train import run
from tests.helpers.overrides import LM

PACKAGE = Path(__file__).resolve().parents[1] / "omniformer"


class Payload:
    """Unpickling this object calls ``os.mkdir(marker)``."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("trained")
    run([*LM, "trainer.max_steps=2"], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def malicious_files(folder: Path, trained: Path, marker: Path) -> dict[str, Path]:
    """The payload as a plain pickle (protocols 2 and 5), a torch zip file, and hidden inside an
    otherwise genuine omniformer checkpoint (in its config, and among its weights)."""
    genuine = torch.load(trained, weights_only=True)
    files: dict[str, Path] = {}

    def save(name: str, obj, as_pickle: int | None = None) -> None:
        files[name] = folder / f"{name}.ckpt"
        if as_pickle is None:
            torch.save(obj, files[name])
        else:
            files[name].write_bytes(pickle.dumps(obj, protocol=as_pickle))

    save("pickle-protocol-2", {"omniformer": Payload(marker), "state_dict": {}}, as_pickle=2)
    save("pickle-protocol-5", {"omniformer": Payload(marker), "state_dict": {}}, as_pickle=5)
    save("torch-zip", Payload(marker))
    hidden_config = dict(genuine)
    hidden_config["omniformer"] = {**genuine["omniformer"], "config": Payload(marker)}
    save("in-config", hidden_config)
    hidden_weights = dict(genuine)
    hidden_weights["state_dict"] = {**genuine["state_dict"], "evil": Payload(marker)}
    save("in-weights", hidden_weights)
    return files


def test_the_payload_is_live_when_loaded_unsafely(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "payload.ckpt"
    torch.save(Payload(marker), path)
    torch.load(path, weights_only=False)  # what must never happen in omniformer
    assert marker.is_dir()


def test_every_entry_point_refuses_a_malicious_checkpoint_and_the_payload_never_runs(trained, tmp_path):
    marker = tmp_path / "pwned"
    files = malicious_files(tmp_path, trained, marker)
    loaders = {
        "load_checkpoint": load_checkpoint,
        "evaluate": lambda p: evaluate(str(p), split="val", figures=False, accelerator="cpu"),
        "generate": lambda p: generate_text(str(p), "ROMEO:", max_new_tokens=2, device="cpu"),
        "predict": lambda p: predict(str(p), ["x.png"]),
        "resume (CheckpointIO)": AtomicCheckpointIO().load_checkpoint,
    }
    try:
        from omniformer.transfer import read_state  # the transfer engineer's loader, when present

        loaders["transfer"] = read_state
    except ImportError:
        pass
    cases = 0
    for file_name, path in files.items():
        for loader_name, load in loaders.items():
            with pytest.raises(ValueError, match="refusing to load") as caught:
                load(path)
            assert str(path) in str(caught.value), (file_name, loader_name)
            assert not marker.exists(), f"{loader_name} ran the payload of {file_name}"
            cases += 1
    assert cases >= 25


def test_resuming_training_from_a_malicious_checkpoint_is_refused_before_training(trained, tmp_path):
    marker = tmp_path / "pwned"
    path = malicious_files(tmp_path, trained, marker)["in-weights"]
    with pytest.raises(ValueError, match=rf"refusing to load {re.escape(str(path))}"):
        run([*LM, f"ckpt_path={path}"], tmp_path / "run")
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_the_payload_error_says_why():
    buffer = io.BytesIO()
    torch.save(Payload(Path("/nonexistent/never")), buffer)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"omniformer-payload-{os.getpid()}.ckpt"
    path.write_bytes(buffer.getvalue())
    try:
        with pytest.raises(ValueError) as caught:
            load_checkpoint(path)
    finally:
        path.unlink()
    assert "need arbitrary code to unpickle" in str(caught.value) and "mkdir" in str(caught.value)


def test_no_code_in_the_package_loads_pickles_unsafely():
    """Every ``torch.load`` in omniformer/ passes ``weights_only=True``; no plain ``pickle.load``."""
    offenders = []
    for source in PACKAGE.rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        for match in re.finditer(r"torch\.load\((?P<args>[^)]*)\)", text):
            if "weights_only=True" not in match.group("args"):
                offenders.append(f"{source.relative_to(PACKAGE)}: {match.group(0)}")
        offenders += [
            f"{source.relative_to(PACKAGE)}: pickle.load" for _ in re.finditer(r"pickle\.loads?\(", text)
        ]
        offenders += [
            f"{source.relative_to(PACKAGE)}: weights_only=False"
            for _ in re.finditer("weights_only=False", text)
        ]
    assert offenders == []
