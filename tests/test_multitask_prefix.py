"""Prefix LMs as multi-task members (issue #15): ``tasks='[text_lm, read_digits, transcribe_digits]'``
trains one backbone to model text, read digit strings and transcribe spoken digits; each prefix member
logs its loss and generation scores, and its loss is the single prefix-LM task's."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import open_dict

from omniformer.config import check_train_config
from omniformer.data.digit_string_pairs import DigitStringsDataModule
from omniformer.tasks.multitask import MemberMarkers, MultiTaskTask
from omniformer.tasks.objectives import PrefixLMLoss
from omniformer.tasks.prefix_lm import PrefixLMTask
from omniformer.tasks.transcripts import ExactMatch
from tests.helpers.overrides import ON_CPU, TINY_LM_DATA, TINY_MODEL, TINY_PAIRS, member
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import compose_train, read_results, run_main

PREFIX_MEMBERS = "tasks=[text_lm, read_digits, transcribe_digits]"
TINY_MULTITASK_PREFIX = [
    "task=multitask",
    PREFIX_MEMBERS,
    *TINY_MODEL,
    *member("text_lm", TINY_LM_DATA),
    *member("read_digits", [f"data.root={FIXTURES / 'mnist'}", "data.val_images=4", *TINY_PAIRS]),
    *member("transcribe_digits", [f"data.root={FIXTURES / 'fsdd'}", *TINY_PAIRS]),
    "data.sampling=uniform",
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "optim.warmup_steps=1",
    *ON_CPU,
]
PREFIX_METRICS = ("loss", "exact", "cer", "wer")


def test_prefix_members_compose_with_their_own_text_tokenizers_and_markers():
    cfg = compose_train(TINY_MULTITASK_PREFIX)
    check_train_config(cfg)
    assert list(cfg.task.members) == ["text_lm", "read_digits", "transcribe_digits"]
    assert set(cfg.task.net.tokenizers) == {
        "text",
        "image",
        "audio",
        "read_digits_text",
        "transcribe_digits_text",
    }
    markers = cfg.task.net.markers
    assert dict(markers.prefixes) == {"read_digits": "image", "transcribe_digits": "audio"}
    assert cfg.task.members.read_digits.loss.text_modality == "read_digits_text"
    assert cfg.task.net.heads.transcribe_digits.tie_to == "transcribe_digits_text"


def test_member_markers_give_each_prefix_modality_one_pair_of_vectors():
    markers = MemberMarkers(
        dim=8, prefixes={"a": "image", "b": "audio", "c": "image"}, texts={"a": "a_text", "b": "b_text"}
    )
    assert markers.names == ["image", "audio", "a_text", "b_text"]
    assert sorted(markers.begin) == ["audio", "image"] and not markers.marks("a_text")


@pytest.mark.slow
def test_multitask_cli_trains_text_reading_and_transcription_on_one_backbone(tmp_path):
    run_dir = tmp_path / "run"
    run_main("omniformer.train", *TINY_MULTITASK_PREFIX, f"hydra.run.dir={run_dir}")
    results = read_results(run_dir)
    assert results["steps"] == 6
    assert "text_lm/val_loss" in results and "text_lm/val_ppl" in results
    for name in ("read_digits", "transcribe_digits"):
        for split in ("val", "test"):
            for metric in PREFIX_METRICS:
                key = f"{name}/{split}_{metric}"
                assert key in results and 0 <= results[key] < 100, key
        assert (run_dir / name / "vocab.json").is_file()
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    for part in (
        "markers.begin.image",
        "markers.end.audio",
        "tokenizers.read_digits_text",
        "heads.read_digits",
    ):
        assert any(k.startswith(f"net.{part}") for k in state), part
    # Evaluation rebuilds the members from the checkpoint and decodes with the vocabularies it carries.
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    proc = run_main("omniformer.evaluate", f"ckpt={ckpt}", "split=val", "accelerator=cpu")
    printed = dict(line.split(": ", 1) for line in proc.stdout.splitlines() if ": " in line)
    for name in ("read_digits", "transcribe_digits"):
        for metric in PREFIX_METRICS:
            key = f"{name}/val_{metric}"
            assert float(printed[key]) == pytest.approx(results[key], abs=1e-4), key


@pytest.fixture(scope="module")
def read_digits_parts():
    """A tiny multi-task model (text LM + read_digits) from the composed config, its data module's
    read_digits member set up, and one training batch of it."""
    overrides = [o for o in TINY_MULTITASK_PREFIX if "transcribe_digits" not in o and o != PREFIX_MEMBERS]
    cfg = compose_train([*overrides, "tasks=[text_lm, read_digits]"])
    data = instantiate(cfg.data.members.read_digits)
    assert isinstance(data, DigitStringsDataModule)
    data.setup("fit")
    with open_dict(cfg):
        cfg.data_spec = {"read_digits": data.spec(), "text_lm": {"vocab_size": 300}}
    torch.manual_seed(0)
    task = instantiate(cfg.task)
    return task, data, next(iter(data.train_dataloader()))


def single_read_digits(task: MultiTaskTask, data: DigitStringsDataModule) -> PrefixLMTask:
    """The single prefix-LM task that reads digits as ``task``'s read_digits member does, on its net."""
    return PrefixLMTask(
        task.net,
        task.optim,
        modality="image",
        eos_id=data.eos_id,
        max_new_tokens=data.max_text_len,
        text_modality="read_digits_text",
        head="read_digits",
    )


def test_a_prefix_members_loss_is_the_single_prefix_lm_tasks_loss(read_digits_parts):
    task, data, batch = read_digits_parts
    assert isinstance(task, MultiTaskTask)
    single = single_read_digits(task, data)
    task.eval()
    with torch.no_grad():
        member_loss = task.member_step("read_digits", batch)[0]
        torch.testing.assert_close(member_loss, single.model_step(batch)[0])
        total = task.model_step({"text_lm": None, "read_digits": batch})[0]
        torch.testing.assert_close(total, task.members["read_digits"].loss_weight * member_loss)


def test_a_prefix_member_scores_generations_as_the_single_task(read_digits_parts):
    task, data, batch = read_digits_parts
    objective = task.members["read_digits"].loss
    assert isinstance(objective, PrefixLMLoss)
    objective.use_data(data, "image")
    single = single_read_digits(task, data)
    single.vocab = data.vocab
    task.eval()
    with torch.no_grad():
        task._names["val"] = ["text_lm", "read_digits"]
        task.validation_step(batch, 0, dataloader_idx=1)
        single._evaluate(batch, single.val_loss, single.val_metrics)
    ours = task.val_metrics["read_digits"].compute()
    theirs = single.val_metrics.compute()
    assert ours["exact"] == theirs["val_exact"]
    assert ours["cer"] == theirs["val_cer"] and ours["wer"] == theirs["val_wer"]
    torch.testing.assert_close(task.val_losses["read_digits"].compute(), single.val_loss.compute())


def test_exact_match_counts_equal_texts():
    metric = ExactMatch()
    metric.update(["3 0 7", "1"], ["3 0 7", "2"])
    metric.update(["4"], ["4"])
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_a_prefix_member_without_its_text_tokenizer_or_markers_is_named(read_digits_parts):
    task, _, _ = read_digits_parts
    node = {"modality": "image", "loss": PrefixLMLoss("nope", eos_id=1, max_new_tokens=2)}
    with pytest.raises(ValueError, match=r"task.members.read_digits.loss.text_modality='nope'"):
        MultiTaskTask(task.net, task.optim, {"read_digits": node})
    with pytest.raises(ValueError, match="both eos_id and max_new_tokens"):
        PrefixLMLoss("read_digits_text", eos_id=1)
