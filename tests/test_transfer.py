"""Backbone transfer: exactly the backbone tensors are loaded, the report, freezing, bad checkpoints."""

from __future__ import annotations

import logging

import pytest
import torch

from omniformer.backbone import Backbone
from omniformer.heads import ClassificationHead, LMHead
from omniformer.model import OmniModel
from omniformer.tasks import ClassificationTask, OptimSettings
from omniformer.tokenizers import ImagePatchTokenizer, TextTokenizer
from omniformer.transfer import build_backbone, freeze_module, from_checkpoint, load_pretrained, parse_freeze
from tests.helpers.overrides import IMAGE, MNIST_FIXTURE_DATA
from tests.helpers.runs import compose_train, read_results, run_main

DIM, DEPTH, HEADS = 32, 2, 2
BACKBONE = {"dim": DIM, "depth": DEPTH, "heads": HEADS, "max_seq_len": 64}


def text_model(vocab: int = 50) -> OmniModel:
    return OmniModel(
        {"text": TextTokenizer(vocab, DIM, max_len=64)},
        Backbone(**BACKBONE),
        {"lm": LMHead(DIM, vocab, tie_to="text")},
    )


def image_model(backbone: Backbone | None = None) -> OmniModel:
    return OmniModel(
        {"image": ImagePatchTokenizer(1, 8, 4, DIM)},
        backbone or Backbone(**BACKBONE),
        {"classifier": ClassificationHead(DIM, 3)},
    )


def save_checkpoint(path, model: OmniModel, config: dict | None = None) -> None:
    """An omniformer-style checkpoint: the task's state dict (``net.`` prefix) and the omniformer section."""
    state = {f"net.{k}": v for k, v in model.state_dict().items()}
    section = {"config": config or {"model": {"dim": DIM, "depth": DEPTH, "heads": HEADS}}, "artifacts": {}}
    torch.save({"state_dict": state, "omniformer": section, "global_step": 1}, path)


@pytest.fixture
def text_ckpt(tmp_path):
    torch.manual_seed(0)
    model = text_model()
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p))  # distinct from any fresh initialisation
    path = tmp_path / "text.ckpt"
    save_checkpoint(path, model)
    return path, model


def test_transfer_loads_exactly_the_backbone_tensors_and_reports_the_rest(text_ckpt, caplog):
    path, source = text_ckpt
    torch.manual_seed(1)
    target = image_model()
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="omniformer"):
        report = load_pretrained(target, path, parts=["backbone"])
    backbone_keys = [f"backbone.{k}" for k in source.backbone.state_dict()]
    assert sorted(report.loaded) == sorted(backbone_keys)
    for key, value in target.state_dict().items():
        if key.startswith("backbone."):
            torch.testing.assert_close(value, source.state_dict()[key])
        else:
            torch.testing.assert_close(value, fresh[key])  # tokenizer and head untouched
    assert sorted(report.initialised) == sorted(
        k for k in target.state_dict() if not k.startswith("backbone.")
    )
    assert set(report.skipped) == {"net.tokenizers.text.embedding.weight", "net.heads.lm.proj.weight"}
    assert report.loaded_parameters == sum(p.numel() for p in source.backbone.parameters())
    text = caplog.text
    assert f"loaded      {len(backbone_keys)} tensors" in text and "trainable parameters" in text


def test_build_backbone_from_config_keys_loads_and_freezes(text_ckpt, caplog):
    path, source = text_ckpt
    with caplog.at_level(logging.INFO, logger="omniformer"):
        backbone = build_backbone(init_from=str(path), freeze=True, **BACKBONE)
    for key, value in backbone.state_dict().items():
        torch.testing.assert_close(value, source.backbone.state_dict()[key])
    assert not any(p.requires_grad for p in backbone.parameters())
    assert "0 of" in caplog.text and "parameters trainable (freeze=all" in caplog.text


def test_frozen_parameters_do_not_change_after_a_training_step(text_ckpt):
    path, _ = text_ckpt
    backbone = build_backbone(init_from=str(path), freeze="all_but_norms", **BACKBONE)
    net = image_model(backbone)
    task = ClassificationTask(net, OptimSettings(lr=1e-2, warmup_steps=0), modality="image", num_classes=3)
    before = {k: v.detach().clone() for k, v in net.named_parameters()}
    optimizer = task.configure_optimizers()["optimizer"]
    images, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])
    for _ in range(2):  # the head starts at zero: the second step sends gradients into the backbone
        optimizer.zero_grad()
        loss, _, _ = task.model_step((images, labels))
        loss.backward()
        optimizer.step()
    changed = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
    frozen = {k for k, v in net.named_parameters() if not v.requires_grad}
    assert frozen and not frozen & changed
    assert all(".norm" in k for k in changed if k.startswith("backbone."))  # only norms train in the backbone
    assert any(k.startswith("backbone.") and "norm" in k for k in changed)
    assert any(k.startswith("tokenizers.") for k in changed) and any(k.startswith("heads.") for k in changed)
    trainable = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert all(id(p) not in trainable for p in net.parameters() if not p.requires_grad)


def test_freeze_options_count_trainable_parameters():
    backbone = Backbone(**BACKBONE)
    total = sum(p.numel() for p in backbone.parameters())
    norms = sum(p.numel() for n, p in backbone.named_parameters() if "norm" in n)
    assert freeze_module(Backbone(**BACKBONE), "none") == (total, total)
    assert freeze_module(Backbone(**BACKBONE), "all_but_norms") == (norms, total)
    assert freeze_module(Backbone(**BACKBONE), True) == (0, total)
    assert [parse_freeze(v) for v in (False, None, "false", True, "all", "all_but_norms")] == [
        "none",
        "none",
        "none",
        "all",
        "all",
        "all_but_norms",
    ]
    with pytest.raises(ValueError, match=r"model\.backbone\.freeze='everything'"):
        parse_freeze("everything")


def test_a_backbone_shape_mismatch_names_the_tensor_and_both_shapes(text_ckpt):
    path, _ = text_ckpt
    with pytest.raises(ValueError) as err:
        build_backbone(init_from=str(path), dim=64, depth=DEPTH, heads=HEADS, max_seq_len=64)
    message = str(err.value)
    assert "backbone.blocks.0.norm1.weight" in message
    assert "(32,) in the checkpoint but (64,) in this model" in message
    assert "model.dim=32" in message  # what the checkpoint was trained with


def test_a_depth_mismatch_names_the_missing_tensors(text_ckpt):
    path, _ = text_ckpt
    with pytest.raises(ValueError, match=r"missing from the checkpoint: backbone\.blocks\.2\."):
        build_backbone(init_from=str(path), dim=DIM, depth=3, heads=HEADS, max_seq_len=64)


def test_bad_checkpoints_fail_clearly(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"model\.backbone\.init_from: checkpoint .*nope\.ckpt does not exist"
    ):
        build_backbone(init_from=str(tmp_path / "nope.ckpt"), **BACKBONE)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="is not an omniformer checkpoint"):
        build_backbone(init_from=str(foreign), **BACKBONE)
    no_backbone = tmp_path / "heads.ckpt"
    torch.save({"state_dict": {"net.heads.x.weight": torch.zeros(2)}, "omniformer": {}}, no_backbone)
    with pytest.raises(ValueError, match="has no 'backbone' tensors"):
        build_backbone(init_from=str(no_backbone), **BACKBONE)


def test_a_tokenizer_can_be_transferred_too(text_ckpt):
    path, source = text_ckpt
    tokenizer = from_checkpoint(
        TextTokenizer(50, DIM, max_len=64), str(path), part="tokenizers.text", freeze=True
    )
    torch.testing.assert_close(tokenizer.embedding.weight, source.tokenizers["text"].embedding.weight)
    assert not tokenizer.embedding.weight.requires_grad
    target = text_model()
    report = load_pretrained(target, path, parts=["backbone", "tokenizers.text"], freeze={"backbone": "all"})
    assert "tokenizers.text.embedding.weight" in report.loaded
    assert not any(p.requires_grad for p in target.backbone.parameters())


def test_config_keys_exist_with_safe_defaults():
    cfg = compose_train([])
    assert cfg.model.backbone._target_ == "omniformer.transfer.build_backbone"
    assert cfg.model.backbone.init_from is None and cfg.model.backbone.freeze is False
    cfg = compose_train(["model.backbone.freeze=all_but_norms", "model.backbone.init_from=x.ckpt"])
    assert cfg.model.backbone.freeze == "all_but_norms" and cfg.model.dim == cfg.model.backbone.dim


@pytest.mark.slow
def test_cross_modal_transfer_through_the_cli(tiny_lm_checkpoint, tmp_path):
    """A text LM's backbone, frozen, starts an MNIST classifier; only tokenizer, norms and head train."""
    image_dir = tmp_path / "image"
    ckpt = tiny_lm_checkpoint  # the same 32-wide, one-block, two-head backbone
    proc = run_main(
        "omniformer.train",
        *IMAGE,
        *MNIST_FIXTURE_DATA,
        "data.batch_size=8",
        "data.num_workers=0",
        "trainer.max_epochs=1",
        f"model.backbone.init_from={ckpt}",
        "model.backbone.freeze=true",
        f"hydra.run.dir={image_dir}",
    )
    output = proc.stdout + proc.stderr
    assert "loaded      14 tensors" in output and "0 of 12,768 parameters trainable (freeze=all" in output
    lm_state = torch.load(ckpt, weights_only=True)["state_dict"]
    image_state = torch.load(image_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    backbone_keys = [k for k in lm_state if k.startswith("net.backbone.")]
    for key in backbone_keys:  # frozen: the image run's backbone is still the text model's
        torch.testing.assert_close(image_state[key], lm_state[key])
    assert read_results(image_dir)["steps"] == 2


def test_bad_freeze_value_fails_before_any_data_is_read(tmp_path):
    proc = run_main(
        "omniformer.train", "model.backbone.freeze=everything", f"hydra.run.dir={tmp_path}", check=False
    )
    assert proc.returncode != 0
    assert "model.backbone.freeze='everything'" in proc.stdout + proc.stderr


def test_a_trained_checkpoint_is_rebuilt_without_reading_init_from_again(text_ckpt):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from omniformer.transfer import without_init_from

    path, _ = text_ckpt
    node = {
        "_target_": "omniformer.transfer.build_backbone",
        "init_from": str(path),
        "freeze": True,
        **BACKBONE,
    }
    config = OmegaConf.create({"model": {"backbone": node}, "task": {"net": {"backbone": dict(node)}}})
    cleaned = without_init_from(config)
    assert cleaned.model.backbone.init_from is None and cleaned.task.net.backbone.init_from is None
    assert cleaned.task.net.backbone.freeze is True and config.model.backbone.init_from == str(path)
    path.unlink()  # the pretrained file is gone: rebuilding must not need it
    backbone = instantiate(cleaned.task.net.backbone)
    assert not any(p.requires_grad for p in backbone.parameters())
