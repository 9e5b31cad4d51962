"""Model folders (issue #16): config.json + model.safetensors + artifacts, written by omniformer-export,
loaded without pickle or Lightning, refused by name when incomplete, foreign or inconsistent."""

from __future__ import annotations

import json
import shutil
import struct
import sys
import types
from pathlib import Path

import pytest
import torch

import omniformer
from omniformer import export as export_module
from omniformer.checkpoint import load_checkpoint, task_from_checkpoint
from omniformer.export import ExportCheckError, export
from omniformer.model_folder import CONFIG_FILE, HF_TOKENIZER_FILE, WEIGHTS_FILE, ModelFolderError
from omniformer.transfer import build_backbone, load_part, read_state
from omniformer.trusted_config import UntrustedConfigError
from tests.helpers.runs import run_main


@pytest.fixture(scope="module")
def checkpoints(tiny_lm_checkpoint, tiny_mnist_run, tiny_fsdd_run) -> dict[str, Path]:
    """The session's tiny checkpoints by kind: a language model, an image and an audio classifier."""
    return {
        "lm": tiny_lm_checkpoint,
        "image": tiny_mnist_run / "checkpoints" / "last.ckpt",
        "audio": tiny_fsdd_run / "checkpoints" / "last.ckpt",
    }


@pytest.fixture(scope="module")
def folders(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """Each checkpoint exported once as a model folder (read them; copy before editing)."""
    root = tmp_path_factory.mktemp("model_folders")
    return {name: export(ckpt, root / name).path for name, ckpt in checkpoints.items()}


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def edit_config(folder: Path, change) -> None:
    config = json.loads((folder / CONFIG_FILE).read_text())
    change(config)
    (folder / CONFIG_FILE).write_text(json.dumps(config))


def rewrite_weights(folder: Path, change) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / WEIGHTS_FILE)
    change(tensors)
    save_file(tensors, folder / WEIGHTS_FILE)


# -- round trip ------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["lm", "image", "audio"])
def test_a_folder_gives_the_checkpoints_logits(name, checkpoints, folders):
    model = omniformer.load(folders[name])
    task = task_from_checkpoint(load_checkpoint(checkpoints[name]))
    batch = model.example_inputs()
    with torch.no_grad():
        expected = task(*batch) if model.kind == "classifier" else task.net("text", "lm", *batch, causal=True)
    assert torch.equal(model.logits(*batch), expected)
    assert not model.net.training


def test_a_folder_holds_the_model_config_weights_and_artifacts_and_no_training_state(folders):
    assert sorted(p.name for p in folders["image"].iterdir()) == [
        "classes.json",
        CONFIG_FILE,
        WEIGHTS_FILE,
        "normalization.json",
    ]
    assert sorted(p.name for p in folders["lm"].iterdir()) == [
        CONFIG_FILE,
        WEIGHTS_FILE,
        HF_TOKENIZER_FILE,
        "vocab.json",
    ]
    config = json.loads((folders["image"] / CONFIG_FILE).read_text())
    assert config["format"] == "omniformer-model" and config["format_version"] == 1
    assert config["kind"] == "classifier" and len(config["classes"]) == 10
    assert config["model"]["_target_"] == "omniformer.model.OmniModel"
    assert config["inputs"]["root"] is None and "download" not in config["inputs"]
    text = json.dumps(config)
    assert "optim" not in text and "trainer" not in text and "lr" not in config
    assert json.loads((folders["lm"] / CONFIG_FILE).read_text())["context_len"] == 16


def test_a_bpe_folder_carries_a_tokenizer_json_that_hf_tokenizers_reads_as_our_vocabulary(folders):
    from tokenizers import Tokenizer

    from omniformer.tokenizers.vocab import load_vocab

    ours = load_vocab(folders["lm"] / "vocab.json")
    theirs = Tokenizer.from_file(str(folders["lm"] / HF_TOKENIZER_FILE))
    text = "ROMEO: Wherefore art thou?"
    assert theirs.encode(text).ids == ours.encode(text).tolist()


def test_the_safetensors_file_is_only_tensors_and_a_json_header(folders):
    data = (folders["lm"] / WEIGHTS_FILE).read_bytes()
    (size,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + size])
    assert header.pop("__metadata__") == {"format": "pt"}
    end = 0
    for name, entry in header.items():
        assert set(entry) == {"dtype", "shape", "data_offsets"}, name
        assert entry["dtype"] == "F32"
        end = max(end, entry["data_offsets"][1])
    assert len(data) == 8 + size + end  # nothing after the tensors' bytes
    assert b"\x80" not in data[:2] and b"torch" not in data[8 : 8 + size]  # no pickle protocol header


def test_a_tied_weight_is_stored_once_and_tied_again_on_load(folders):
    from safetensors import safe_open

    with safe_open(folders["lm"] / WEIGHTS_FILE, "pt") as handle:
        stored = set(handle.keys())
    assert "tokenizers.text.embedding.weight" in stored and "heads.lm.proj.weight" not in stored
    net = omniformer.load(folders["lm"]).net
    assert net.heads["lm"].proj.weight is net.tokenizers["text"].embedding.weight


@pytest.mark.slow
def test_the_folder_loads_without_lightning_in_a_fresh_process(folders):
    import subprocess

    script = (
        "import sys, time, torch\n"
        "start = time.perf_counter()\n"
        "import omniformer\n"
        f"omniformer.load({str(folders['image'])!r})\n"
        "print(time.perf_counter() - start, 'lightning' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds, lightning = proc.stdout.split()
    assert lightning == "False"
    print(f"model folder loaded in {float(seconds):.2f} s after import torch")


# -- what config.json may build ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "payload",
    [
        lambda tmp: {"_target_": "pathlib.Path.touch", "self": str(tmp / "touched")},
        lambda tmp: {"_target_": "os.system", "command": f"touch {tmp / 'touched'}"},
        lambda tmp: {"_target_": "builtins.exec", "_args_": [f"open({str(tmp / 'touched')!r}, 'w')"]},
    ],
    ids=["Path.touch", "os.system", "exec"],
)
def test_a_foreign_class_in_config_json_is_refused_by_key_and_builds_nothing(payload, folders, tmp_path):
    folder = copy_folder(folders["lm"], tmp_path)
    node = payload(tmp_path)
    edit_config(folder, lambda c: c["model"]["heads"].__setitem__("lm", node))
    with pytest.raises(UntrustedConfigError) as caught:
        omniformer.load(folder)
    assert f"model.heads.lm._target_={node['_target_']!r}" in str(caught.value)
    assert "allow_targets" in str(caught.value) and str(folder) in str(caught.value)
    assert not (tmp_path / "touched").exists()


def test_a_foreign_class_in_the_input_config_is_refused_before_reading(folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    touch = {"_target_": "pathlib.Path.touch", "self": str(tmp_path / "touched")}
    edit_config(folder, lambda c: c["inputs"]["eval_transforms"].__setitem__("evil", touch))
    model = omniformer.load(folder)  # the network itself is fine
    with pytest.raises(UntrustedConfigError, match=r"inputs\.eval_transforms\.evil\._target_='pathlib"):
        model.predict([str(Path(__file__).parent / "fixtures/mnist/png/t10k_0_label7.png")])
    assert not (tmp_path / "touched").exists()


def test_an_init_from_in_config_json_is_never_read(folders, tmp_path):
    folder = copy_folder(folders["lm"], tmp_path)
    edit_config(folder, lambda c: c["model"]["backbone"].__setitem__("init_from", str(tmp_path / "x.ckpt")))
    assert omniformer.load(folder).kind == "language_model"


# -- bad folders ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("missing", [CONFIG_FILE, WEIGHTS_FILE])
def test_a_folder_missing_a_file_is_named(missing, folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    (folder / missing).unlink()
    with pytest.raises(
        ModelFolderError, match=rf"{folder} is not a complete model folder: it has no {missing}"
    ):
        omniformer.load(folder)


def test_a_missing_path_is_named(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match=rf"model folder or checkpoint {missing} does not exist"):
        omniformer.load(missing)


def test_a_shape_that_disagrees_with_the_config_names_the_tensor_and_both_shapes(folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    edit_config(folder, lambda c: c["model"]["heads"]["classifier"].__setitem__("num_classes", 11))
    with pytest.raises(
        ModelFolderError,
        match=r"tensor heads\.classifier\.proj\.bias has shape \(10,\) in the weights but \(11,\)",
    ):
        omniformer.load(folder)


def test_missing_and_unexpected_tensors_are_named(folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    rewrite_weights(folder, lambda t: t.pop("backbone.norm.bias"))
    with pytest.raises(
        ModelFolderError, match=r"lack tensors the configured model has: backbone\.norm\.bias"
    ):
        omniformer.load(folder)
    rewrite_weights(
        folder, lambda t: t.update({"backbone.norm.bias": torch.zeros(32), "extra.w": torch.ones(2)})
    )
    with pytest.raises(ModelFolderError, match=r"tensors the configured model does not have: extra\.w"):
        omniformer.load(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda c: c.update(format="hf-transformers"),
            r"is format 'hf-transformers' version 1; this omniformer",
        ),
        (
            lambda c: c.update(format_version=2),
            r"is format 'omniformer-model' version 2; this omniformer reads",
        ),
        (lambda c: c.update(kind="detector"), r"kind='detector'; a model folder's kind is one of"),
    ],
    ids=["format", "version", "kind"],
)
def test_a_config_of_another_format_version_or_kind_is_refused(change, message, folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    edit_config(folder, change)
    with pytest.raises(ValueError, match=message):
        omniformer.load(folder)


def test_broken_json_and_broken_weights_are_named(folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    (folder / WEIGHTS_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(ModelFolderError, match=r"model\.safetensors is not a readable safetensors file"):
        omniformer.load(folder)
    (folder / CONFIG_FILE).write_text("{nope")
    with pytest.raises(ModelFolderError, match=r"config\.json is not valid JSON"):
        omniformer.load(folder)


def test_an_artifact_path_out_of_the_folder_is_refused(folders, tmp_path):
    folder = copy_folder(folders["image"], tmp_path)
    edit_config(folder, lambda c: c.update(artifacts=["../../etc/passwd"]))
    with pytest.raises(
        ModelFolderError, match=r"artifact name '\.\./\.\./etc/passwd' is not a plain file name"
    ):
        omniformer.load(folder)


def test_without_safetensors_the_error_names_the_extra(folders, monkeypatch):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ImportError, match=r"pip install omniformer\[export\]"):
        omniformer.load(folders["image"])


# -- omniformer-export --------------------------------------------------------------------------------------
@pytest.mark.slow
def test_export_cli_writes_a_folder_and_refuses_an_existing_out(checkpoints, tmp_path, entry_point):
    out = tmp_path / "digits"
    proc = entry_point("omniformer.export", f"ckpt={checkpoints['image']}", f"out={out}")
    assert f"wrote {out}" in proc.stdout
    assert f"checked against {checkpoints['image']}: max |output difference| 0" in proc.stdout
    assert omniformer.load(out).kind == "classifier"
    # The refusal and the overwrite in process (the command's main(), without a second Python start-up).
    again = run_main("omniformer.export", f"ckpt={checkpoints['image']}", f"out={out}", check=False)
    assert again.returncode != 0 and f"out={out} exists" in again.stderr and "overwrite=true" in again.stderr
    run_main("omniformer.export", f"ckpt={checkpoints['image']}", f"out={out}", "overwrite=true")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]  # no staging folder left


def test_export_refuses_an_unknown_format_and_overwriting_a_folder_of_something_else(checkpoints, tmp_path):
    with pytest.raises(
        ValueError, match=r"format='gguf' is not a known export format; .*folder, onnx, torch_export"
    ):
        export(checkpoints["image"], tmp_path / "m", format="gguf")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    with pytest.raises(ModelFolderError, match=r"notes is a folder but not a model folder"):
        export(checkpoints["image"], tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"


def test_export_checks_on_real_input_files(checkpoints, tmp_path):
    digit = Path(__file__).parent / "fixtures/mnist/png/t10k_0_label7.png"
    done = export(checkpoints["image"], tmp_path / "digits", inputs=[str(digit)])
    assert done.max_abs_diff == 0.0


def test_a_folder_that_disagrees_with_the_checkpoint_is_refused_and_removed(
    checkpoints, tmp_path, monkeypatch
):
    monkeypatch.setattr(export_module, "TOLERANCE", -1.0)  # any difference, even 0, is too much
    with pytest.raises(ExportCheckError, match=rf"refusing to write {tmp_path / 'digits'}: .* differ"):
        export(checkpoints["image"], tmp_path / "digits")
    assert list(tmp_path.iterdir()) == []


def test_graph_formats_go_to_graph_export_with_the_loaded_model(checkpoints, tmp_path, monkeypatch):
    calls = []
    fake = types.ModuleType("omniformer.graph_export")
    fake.export_graph = lambda model, out, fmt: calls.append((model.kind, out, fmt))
    monkeypatch.setitem(sys.modules, "omniformer.graph_export", fake)
    export(checkpoints["lm"], tmp_path / "lm.pt2", format="torch_export")
    assert calls == [("language_model", tmp_path / "lm.pt2", "torch_export")]


# -- model.backbone.init_from=<folder> -----------------------------------------------------------------------
def test_init_from_accepts_a_model_folder(folders):
    config = json.loads((folders["lm"] / CONFIG_FILE).read_text())
    args = {
        k: v for k, v in config["model"]["backbone"].items() if k not in ("_target_", "init_from", "freeze")
    }
    backbone = build_backbone(init_from=str(folders["lm"]), **args)
    source = omniformer.load(folders["lm"]).net.backbone.state_dict()
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in source.items())
    head = torch.nn.Linear(32, 300, bias=False)  # a tied weight is restored under its own name too
    load_part(head, folders["lm"], "heads.lm.proj")
    assert torch.equal(head.weight, source_embedding(folders["lm"]))
    with pytest.raises(ValueError, match=r"missing from the checkpoint: backbone\.blocks\.1\."):
        build_backbone(init_from=str(folders["lm"]), **{**args, "depth": 2})


def source_embedding(folder: Path) -> torch.Tensor:
    state, _ = read_state(folder)
    return state["tokenizers.text.embedding.weight"]


@pytest.mark.slow
def test_export_help_lists_the_keys_and_formats():
    proc = run_main("omniformer.export", "--help")
    assert "omniformer-export: write a trained model" in proc.stdout
    for key in ("ckpt", "out", "format", "overwrite", "inputs", "allow_targets", "torch_export"):
        assert key in proc.stdout, key


@pytest.mark.slow
def test_an_onnx_image_graph_takes_pixels_in_0_1_and_agrees_with_the_folder(checkpoints, folders, tmp_path):
    import onnxruntime

    export(checkpoints["image"], tmp_path / "digits.onnx", format="onnx")
    model = omniformer.load(folders["image"])
    stats = json.loads(model.artifacts["normalization.json"])
    pixels = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    normalised = (pixels - torch.tensor(stats["mean"]).view(1, -1, 1, 1)) / torch.tensor(stats["std"]).view(
        1, -1, 1, 1
    )
    session = onnxruntime.InferenceSession(str(tmp_path / "digits.onnx"))
    (logits,) = session.run(None, {session.get_inputs()[0].name: pixels.numpy()})
    assert torch.allclose(torch.from_numpy(logits), model.logits(normalised), atol=1e-4)
