"""Per-tensor checksums: a bit flipped in any tensor of a saved checkpoint is named at every load.

``torch.load`` accepts such a file without a word (the first test shows it), so these tests flip
single bits inside the real zip records of a checkpoint written by ``omniformer-train`` and load it
through each path users take: eval / generate / predict (``load_checkpoint``), resuming
(``ckpt_path=``), and backbone transfer (``model.backbone.init_from``).
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest
import torch

from omniformer.checkpoint import load_checkpoint, safe_torch_load
from omniformer.checksums import (
    CHECKSUM_KEY,
    CorruptCheckpointError,
    tensor_checksums,
    verify_checksums,
    with_checksums,
)
from omniformer.generate import generate_text
from omniformer.train import run
from tests.helpers.overrides import LM


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("checksummed")
    run([*LM, "trainer.max_steps=3"], run_dir)
    return run_dir / "checkpoints" / "last.ckpt"


def tensor_records(path: Path) -> list[tuple[str, int, int]]:
    """``(name, data offset, size)`` of every tensor-storage record in a torch zip checkpoint."""
    records = []
    with zipfile.ZipFile(path) as archive, open(path, "rb") as raw:
        for info in archive.infolist():
            if "/data/" not in info.filename or info.file_size == 0:
                continue
            raw.seek(info.header_offset)
            header = raw.read(30)
            name_len = int.from_bytes(header[26:28], "little")
            extra_len = int.from_bytes(header[28:30], "little")
            records.append((info.filename, info.header_offset + 30 + name_len + extra_len, info.file_size))
    return records


def flip_bit(source: Path, target: Path, offset: int, bit: int = 0) -> Path:
    data = bytearray(source.read_bytes())
    data[offset] ^= 1 << bit
    target.write_bytes(bytes(data))
    return target


@pytest.mark.slow
def test_torch_load_alone_accepts_a_flipped_bit(trained, tmp_path):
    """The hole being closed: the flipped file loads with plain ``torch.load``, with other values."""
    _, offset, size = max(tensor_records(trained), key=lambda r: r[2])
    flipped = flip_bit(trained, tmp_path / "flipped.ckpt", offset + size // 2, bit=6)
    good = torch.load(trained, weights_only=True)
    bad = torch.load(flipped, weights_only=True)
    changed = [k for k, v in good["state_dict"].items() if not torch.equal(v, bad["state_dict"][k])]
    changed += [
        f"optimizer.{i}.{k}"
        for i, state in good["optimizer_states"][0]["state"].items()
        for k, v in state.items()
        if isinstance(v, torch.Tensor) and not torch.equal(v, bad["optimizer_states"][0]["state"][i][k])
    ]
    assert changed, "the flipped bit should land in a tensor"


@pytest.mark.slow
def test_every_tensor_record_with_a_flipped_bit_is_named(trained, tmp_path):
    """One flipped bit in each tensor record in turn (weights, AdamW moments, counters): each load
    fails with the file and the tensor's location in the checkpoint."""
    records = tensor_records(trained)
    assert len(records) > 10
    seen_locations = set()
    for index, (name, offset, size) in enumerate(records):
        flipped = flip_bit(
            trained, tmp_path / f"flip-{index}.ckpt", offset + (index * 7919) % size, index % 8
        )
        with pytest.raises(CorruptCheckpointError) as caught:
            load_checkpoint(flipped)
        message = str(caught.value)
        assert str(flipped) in message and "does not match the checksum" in message, name
        seen_locations.add(message.split("tensor ", 1)[1].split(" ", 1)[0])
    assert any(loc.startswith("state_dict.") for loc in seen_locations)
    assert any(loc.startswith("optimizer_states.") for loc in seen_locations)


@pytest.mark.slow
def test_a_clean_checkpoint_verifies_and_carries_a_checksum_per_tensor(trained):
    raw = torch.load(trained, weights_only=True)
    stored = raw[CHECKSUM_KEY]["tensors"]
    assert set(stored) == set(tensor_checksums(raw))
    assert "state_dict.net.backbone.norm.weight" in stored
    assert any(k.startswith("optimizer_states.0.state.") for k in stored)
    checkpoint = load_checkpoint(trained)  # verified, and the record is not handed on
    assert CHECKSUM_KEY not in checkpoint and checkpoint["global_step"] == 3


def test_resuming_from_a_flipped_checkpoint_is_refused_before_training(trained, tmp_path):
    _, offset, size = max(tensor_records(trained), key=lambda r: r[2])
    flipped = flip_bit(trained, tmp_path / "flipped.ckpt", offset + size // 3)
    with pytest.raises(CorruptCheckpointError, match="does not match the checksum"):
        run([*LM, f"ckpt_path={flipped}"], tmp_path / "resume")
    assert not (tmp_path / "resume" / "checkpoints").exists()


def test_transfer_and_generate_refuse_a_flipped_checkpoint(trained, tmp_path):
    _, offset, _ = max(tensor_records(trained), key=lambda r: r[2])
    flipped = flip_bit(trained, tmp_path / "flipped.ckpt", offset + 5)
    with pytest.raises(CorruptCheckpointError, match=re.escape(str(flipped))):
        generate_text(str(flipped), "ab", max_new_tokens=2)
    with pytest.raises(Exception, match="does not match the checksum"):
        run([*LM, "trainer.max_steps=1", f"model.backbone.init_from={flipped}"], tmp_path / "transfer")


def test_checksums_cover_every_dtype_shape_and_nesting(tmp_path):
    checkpoint = {
        "a": torch.randn(3, 4).t(),  # not contiguous
        "b": torch.tensor(2.5, dtype=torch.bfloat16),  # zero-dimensional, bf16
        "c": [torch.zeros(0), (torch.arange(5, dtype=torch.int64), {"d": torch.ones(2, dtype=torch.bool)})],
        "e": "text",
    }
    path = tmp_path / "x.ckpt"
    torch.save(with_checksums(checkpoint), path)
    assert set(torch.load(path, weights_only=True)[CHECKSUM_KEY]["tensors"]) == {
        "a",
        "b",
        "c.0",
        "c.1.0",
        "c.1.1.d",
    }
    assert safe_torch_load(path)["e"] == "text"
    tampered = torch.load(path, weights_only=True)
    tampered["c"][1][0][2] = 7
    with pytest.raises(CorruptCheckpointError, match=r"tensor c\.1\.0 \(5,\)"):
        verify_checksums(tampered, path)
    added = torch.load(path, weights_only=True)
    added["z"] = torch.zeros(1)
    with pytest.raises(CorruptCheckpointError, match="tensor z has no stored checksum"):
        verify_checksums(added, path)
    removed = torch.load(path, weights_only=True)
    del removed["a"]
    with pytest.raises(CorruptCheckpointError, match=r"tensor a .* is missing"):
        verify_checksums(removed, path)


def test_a_checkpoint_written_without_checksums_still_loads(trained, tmp_path):
    """Checkpoints from before checksums existed load as before (nothing to verify)."""
    raw = torch.load(trained, weights_only=True)
    del raw[CHECKSUM_KEY]
    old = tmp_path / "old.ckpt"
    torch.save(raw, old)
    assert load_checkpoint(old)["global_step"] == 3
