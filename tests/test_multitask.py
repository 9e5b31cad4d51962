"""Multi-task training: mixing (sampling weights, CombinedLoader modes), the shared backbone and
per-task heads, per-task metrics, checkpoints, config composition and bad input."""

from __future__ import annotations

import re
from collections import Counter

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.combined_loader import CombinedLoader
from torch.utils.data import DataLoader, Dataset, TensorDataset

from omniformer.backbone import Backbone
from omniformer.data.mixing import TaskSchedule, sampling_probabilities, step_counts
from omniformer.data.multitask import MultiTaskDataModule
from omniformer.data.scheduled_loader import ScheduledLoader
from omniformer.diagnostics import probe_forward, residual_contributions
from omniformer.heads import ClassificationHead, LMHead
from omniformer.model import OmniModel
from omniformer.tasks import ClassificationTask, LanguageModelingTask, OptimSettings
from omniformer.tasks.multitask import ClassificationLoss, LanguageModelingLoss, MultiTaskTask
from omniformer.tokenizers import ImagePatchTokenizer, TextTokenizer
from tests.helpers.overrides import MULTITASK
from tests.helpers.runs import compose_train, read_results, run_main

DIM, VOCAB = 32, 20


class Counted(Dataset):
    """A dataset that counts how many items were read (to prove unscheduled batches are never loaded)."""

    def __init__(self, *tensors: torch.Tensor) -> None:
        self.inner, self.reads = TensorDataset(*tensors), 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int):
        self.reads += 1
        return self.inner[index]


class Fake(L.LightningDataModule):
    """A tiny in-memory data module: ``n`` training items in batches of ``batch``, 4 validation items."""

    def __init__(self, kind: str, n: int = 8, batch: int = 4) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(n)
        if kind == "text":
            ids = torch.randint(VOCAB, (n + 4, 9), generator=g)
            tensors = (ids[:, :-1], ids[:, 1:])
        elif kind == "image":
            tensors = (torch.randn(n + 4, 1, 8, 8, generator=g), torch.randint(3, (n + 4,), generator=g))
        else:  # padded text classification: (ids, lengths, labels)
            tensors = (
                torch.randint(VOCAB, (n + 4, 6), generator=g),
                torch.randint(2, 7, (n + 4,), generator=g),
                torch.randint(2, (n + 4,), generator=g),
            )
        self.train_set = Counted(*(t[:n] for t in tensors))
        self.val_set = TensorDataset(*(t[n:] for t in tensors))
        self.batch, self.kind = batch, kind

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=self.batch, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=2)

    def spec(self) -> dict:
        return {"kind": self.kind}

    def artifacts(self) -> dict[str, str]:
        return {"info.txt": self.kind}


class FakeWithTest(Fake):
    def test_dataloader(self):
        return DataLoader(self.val_set, batch_size=2)


def members(**overrides) -> dict:
    """Three members over two modalities: a text LM and a text classifier read the text tokenizer."""
    base = {
        "lm": {"modality": "text", "loss": LanguageModelingLoss()},
        "digits": {"modality": "image", "loss": ClassificationLoss(label_smoothing=0.1), "loss_weight": 2.0},
        "sentiment": {"modality": "text", "loss": ClassificationLoss()},
    }
    base.update(overrides)
    return base


def make_net(heads: dict | None = None) -> OmniModel:
    """The model the members read: a text and an image tokenizer, a head per member, one backbone."""
    torch.manual_seed(0)
    heads = heads or {
        "lm": LMHead(DIM, VOCAB, tie_to="text"),
        "digits": ClassificationHead(DIM, 3),
        "sentiment": ClassificationHead(DIM, 2),
    }
    tokenizers = {"text": TextTokenizer(VOCAB, DIM, max_len=16), "image": ImagePatchTokenizer(1, 8, 4, DIM)}
    return OmniModel(tokenizers, Backbone(DIM, 1, 2, max_seq_len=16), heads)


def make_task(**kwargs) -> MultiTaskTask:
    net = kwargs.pop("net", None) or make_net()
    return MultiTaskTask(
        net, OptimSettings(lr=1e-2, warmup_steps=0), kwargs.pop("members", None) or members(), **kwargs
    )


def make_data(sampling: str = "uniform", **kwargs) -> MultiTaskDataModule:
    fakes = {"lm": Fake("text"), "digits": FakeWithTest("image", n=12), "sentiment": Fake("padded", n=4)}
    return MultiTaskDataModule(fakes, sampling=sampling, **kwargs)


def quiet_trainer(root, **kwargs) -> L.Trainer:
    """A CPU trainer without logger, progress bar, summary or sanity validation."""
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        num_sanity_val_steps=0,
        **kwargs,
    )


def batch_of(data: MultiTaskDataModule) -> dict:
    """One batch of every member (what a ``sampling=all`` step holds)."""
    return {name: next(iter(member.train_dataloader())) for name, member in data.members.items()}


# -- sampling -----------------------------------------------------------------------------------------
def test_sampling_probabilities_proportional_uniform_and_weights():
    names = ["a", "b", "c"]
    assert sampling_probabilities("uniform", names) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})
    sizes = {"a": 10, "b": 30, "c": 60}
    assert sampling_probabilities("proportional", names, sizes) == pytest.approx(
        {"a": 0.1, "b": 0.3, "c": 0.6}
    )
    weights = {"a": 1, "b": 0, "c": 3}
    assert sampling_probabilities("weights", names, weights=weights) == pytest.approx(
        {"a": 0.25, "b": 0, "c": 0.75}
    )


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"a": -1, "b": 1}, r"data\.weights\.a=-1: sampling weights must be >= 0"),
        ({"a": 0, "b": 0.0}, r"the sampling weights are all zero \(a=0, b=0\)"),
        ({"a": 1, "b": 1, "zz": 1}, r"data\.weights\.zz: no such task"),
        ({"a": 1}, r"data\.weights has no weight for task 'b'"),
        ({"a": "lots", "b": 1}, r"data\.weights\.a='lots': must be a finite number"),
        (None, r"data\.sampling=weights needs data\.weights"),
    ],
)
def test_bad_sampling_weights_name_the_culprit(weights, message):
    with pytest.raises(ValueError, match=message):
        sampling_probabilities("weights", ["a", "b"], weights=weights)


def test_bad_weights_fail_when_the_data_module_is_built():
    with pytest.raises(ValueError, match=r"data\.weights\.digits=-2"):
        make_data("weights", weights={"lm": 1, "digits": -2, "sentiment": 1})
    with pytest.raises(ValueError, match="all zero"):
        make_data("weights", weights={"lm": 0, "digits": 0, "sentiment": 0})
    with pytest.raises(ValueError, match=r"data\.sampling='temperature'"):
        make_data("temperature")
    with pytest.raises(ValueError, match="'sequential' mode cannot train"):
        make_data("all", mode="sequential")


def test_schedule_is_seeded_per_epoch_and_gives_each_member_its_exact_share():
    schedule = TaskSchedule([0.2, 0.8], steps=2000, seed=3)
    first = schedule.order(0)
    assert first == TaskSchedule([0.2, 0.8], steps=2000, seed=3).order(0)
    assert first != schedule.order(1)
    assert Counter(first) == Counter(schedule.order(1)) == {0: 400, 1: 1600}
    assert first[:400] != [0] * 400 and first.index(0) < 20  # shuffled, not in blocks
    weights = [1000 / 2400, 1000 / 2400, 400 / 2400]
    assert Counter(TaskSchedule(weights, steps=2400, seed=0).order(0)) == {0: 1000, 1: 1000, 2: 400}


@pytest.mark.parametrize(
    ("probabilities", "steps", "counts"),
    [
        ([1 / 3, 1 / 3, 1 / 3], 10, [4, 3, 3]),  # the left-over step to the earliest of equal remainders
        ([0.45, 0.45, 0.1], 7, [3, 3, 1]),  # 3.15, 3.15, 0.7: the one left over goes to 0.7
        ([0.0, 1.0], 5, [0, 5]),
        ([0.5, 0.25, 0.25], 1, [1, 0, 0]),
    ],
)
def test_step_counts_round_to_the_epoch_length_by_largest_remainder(probabilities, steps, counts):
    assert step_counts(torch.tensor(probabilities, dtype=torch.float64), steps).tolist() == counts


# -- CombinedLoader ------------------------------------------------------------------------------------
def test_sampled_mode_gives_one_task_per_step_and_loads_only_what_trains():
    data = make_data("weights", weights={"lm": 1, "digits": 0, "sentiment": 3}, steps_per_epoch=40)
    data.setup("fit")
    loader = data.train_dataloader()
    assert isinstance(loader, CombinedLoader)
    steps = list(loader)
    assert len(steps) == 40
    drawn = Counter()
    for batch, _, _ in steps:
        present = [name for name, part in batch.items() if part is not None]
        assert len(present) == 1
        drawn[present[0]] += 1
    assert drawn["digits"] == 0 and drawn["lm"] + drawn["sentiment"] == 40
    assert data.members["digits"].train_set.reads == 0  # never drawn, never read
    # the 4-item sentiment set (one batch per pass) restarts whenever it runs out
    assert data.members["sentiment"].train_set.reads == 4 * drawn["sentiment"]
    assert data.probabilities == pytest.approx({"lm": 0.25, "digits": 0.0, "sentiment": 0.75})


def test_proportional_sampling_uses_training_batches_per_epoch():
    data = make_data("proportional")
    loader = data.train_dataloader()
    assert data.probabilities == pytest.approx({"lm": 2 / 6, "digits": 3 / 6, "sentiment": 1 / 6})
    iter(loader)
    assert len(loader) == 6  # steps per epoch = the members' batches added up


@pytest.mark.parametrize(("mode", "length"), [("max_size_cycle", 3), ("min_size", 1), ("max_size", 3)])
def test_all_tasks_every_step_in_each_combined_loader_mode(mode, length):
    data = make_data("all", mode=mode)
    loader = data.train_dataloader()
    steps = [batch for batch, _, _ in loader]
    assert len(steps) == length
    assert all(set(batch) == {"lm", "digits", "sentiment"} for batch in steps)
    missing = sum(part is None for batch in steps for part in batch.values())
    # lm has 2 batches, digits 3, sentiment 1: max_size pads the exhausted ones with None
    assert missing == {"max_size_cycle": 0, "min_size": 0, "max_size": 1 + 2}[mode]


def test_scheduled_loader_has_the_schedule_length_and_none_elsewhere():
    schedule = TaskSchedule([0.5, 0.5], steps=10, seed=0)
    loader = ScheduledLoader([1, 2, 3], schedule, index=0, name="x")
    out = list(loader)
    assert len(loader) == 10 and len(out) == 10
    served = [v for v in out if v is not None]
    assert served and served == [1, 2, 3] * (len(served) // 3) + [1, 2, 3][: len(served) % 3]
    assert [v is not None for v in out] == [i == 0 for i in schedule.order(0)]


def test_evaluation_runs_every_member_in_turn_and_skips_missing_test_splits():
    data = make_data()
    val = data.val_dataloader()
    assert val._mode == "sequential" and list(val.iterables) == ["lm", "digits", "sentiment"]
    test = data.test_dataloader()
    assert list(test.iterables) == ["digits"] and data.evaluation_names("test") == ["digits"]
    assert data.spec() == {
        "lm": {"kind": "text"},
        "digits": {"kind": "image"},
        "sentiment": {"kind": "padded"},
    }
    assert data.artifacts()["digits/info.txt"] == "image"


# -- the model -----------------------------------------------------------------------------------------
def test_one_tokenizer_per_modality_one_backbone_one_head_per_task():
    task = make_task()
    assert set(task.net.tokenizers) == {"text", "image"}
    assert set(task.net.heads) == {"lm", "digits", "sentiment"}
    assert task.net.heads["lm"].proj.weight is task.net.tokenizers["text"].embedding.weight


def test_a_step_touches_every_head_and_the_backbone_gets_gradients_from_every_task():
    task, data = make_task(), make_data("all")
    batch = batch_of(data)
    optimizer = task.configure_optimizers()["optimizer"]
    # classifier heads start at zero (no gradient reaches the backbone through them yet): one step first
    optimizer.zero_grad()
    task.training_step(batch, 0).backward()
    for name in ("lm", "digits", "sentiment"):
        head_grads = [p.grad for p in task.net.heads[name].parameters()]
        assert all(g is not None for g in head_grads) and any(g.abs().sum() > 0 for g in head_grads), name
    optimizer.step()
    for name, part in batch.items():
        task.zero_grad(set_to_none=True)
        loss, _, _ = task.member_step(name, part)
        loss.backward()
        backbone = [p.grad for p in task.net.backbone.parameters()]
        assert all(g is not None for g in backbone) and sum(g.abs().sum() for g in backbone) > 0, name
        for other in set(batch) - {name}:
            if other == "lm" and name == "sentiment":
                continue  # the LM head is the text embedding, which the sentiment task uses
            assert all(p.grad is None for p in task.net.heads[other].parameters()), (name, other)


def test_the_step_loss_is_the_weighted_sum_of_the_members_losses():
    task, data = make_task(), make_data("all")
    batch = batch_of(data)
    with torch.no_grad():
        total = task.training_step(batch, 0)
        parts = {name: task.member_step(name, part)[0] for name, part in batch.items()}
    expected = parts["lm"] + 2.0 * parts["digits"] + parts["sentiment"]
    torch.testing.assert_close(total, expected)
    only = {"lm": None, "digits": batch["digits"], "sentiment": None}
    with torch.no_grad():
        torch.testing.assert_close(task.training_step(only, 0), 2.0 * parts["digits"])


def test_members_and_single_tasks_share_one_objective_and_the_probe_runs_a_multitask_step():
    """A member's loss is what the single-task module's ``model_step`` computes on the same net, and
    the diagnostics probe (``model_step``) runs a ``{member: batch}`` step."""
    task, data = make_task(), make_data("all")
    batch = batch_of(data)
    lm = LanguageModelingTask(task.net, task.optim, modality="text", head="lm", sample_tokens=0)
    digits = ClassificationTask(
        task.net, task.optim, modality="image", num_classes=3, head="digits", label_smoothing=0.1
    )
    with torch.no_grad():
        torch.testing.assert_close(task.member_step("lm", batch["lm"])[0], lm.model_step(batch["lm"])[0])
        torch.testing.assert_close(
            task.member_step("digits", batch["digits"])[0], digits.model_step(batch["digits"])[0]
        )
        ratios = residual_contributions(task.net.backbone.blocks, lambda: probe_forward(task, batch))
    assert ratios.shape == (1,) and torch.isfinite(ratios).all()


def test_fit_logs_metrics_per_task_and_checkpoints_every_tokenizer_and_head(tmp_path):
    task, data = make_task(), make_data("all")
    trainer = quiet_trainer(tmp_path, max_steps=3)
    before = {k: v.detach().clone() for k, v in task.net.named_parameters()}
    trainer.fit(task, datamodule=data)
    metrics = trainer.validate(task, datamodule=data, verbose=False)[0]
    for name in ("lm", "digits", "sentiment"):
        assert f"{name}/val_loss" in metrics
    assert "digits/val_acc" in metrics and "sentiment/val_acc" in metrics and "lm/val_ppl" in metrics
    weighted = metrics["lm/val_loss"] + 2 * metrics["digits/val_loss"] + metrics["sentiment/val_loss"]
    assert metrics["val_loss"] == pytest.approx(weighted, rel=1e-5)
    assert metrics["val_loss_weighted_sum"] == metrics["val_loss"]  # the monitored sum, by what it is
    tested = trainer.test(task, datamodule=data, verbose=False)[0]
    assert set(tested) == {"digits/test_loss", "digits/test_acc", "test_loss", "test_loss_weighted_sum"}
    # (the LM head is the text embedding: named_parameters lists it once, as tokenizers.text)
    for prefix in ("tokenizers.text", "heads.digits", "heads.sentiment", "tokenizers.image", "backbone"):
        assert any(
            not torch.equal(v, before[k]) for k, v in task.net.named_parameters() if k.startswith(prefix)
        )
    path = tmp_path / "all.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)["state_dict"]
    for key in ("tokenizers.text", "tokenizers.image", "heads.lm", "heads.digits", "heads.sentiment"):
        assert any(k.startswith(f"net.{key}.") for k in state), key


# -- gradient balance ---------------------------------------------------------------------------------
def backbone_grad_norm(task: MultiTaskTask) -> float:
    return torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in task.net.backbone.parameters() if p.grad is not None])
    ).item()


def balanced_task(balance: str = "grad_norm") -> MultiTaskTask:
    """A balanced task whose heads are random (zero heads pass no gradient to the backbone)."""
    task = make_task(balance=balance)
    for name in ("digits", "sentiment"):
        torch.nn.init.normal_(task.net.heads[name].proj.weight, std=0.5)
    return task


def member_step(task: MultiTaskTask, name: str, part) -> torch.Tensor:
    """One single-member step up to the optimizer: loss, backward and the pre-step hook."""
    task.zero_grad(set_to_none=True)
    loss = task.training_step({name: part}, 0)
    loss.backward()
    task.on_before_optimizer_step(None)
    return loss


@pytest.mark.slow
def test_grad_norm_balance_brings_every_members_backbone_gradient_to_one_norm():
    task, data = balanced_task(), make_data("uniform")
    batch = batch_of(data)
    raw = {}
    for name, part in batch.items():  # each member's own gradient norm, unscaled
        task.zero_grad(set_to_none=True)
        task.member_step(name, part)[0].backward()
        raw[name] = backbone_grad_norm(task)  # member_step gives the loss before its loss_weight
    assert max(raw.values()) > 2 * min(raw.values())  # the members differ: there is something to balance
    for _ in range(60):  # weights fixed (no optimizer step): the running norms converge to the raw ones
        for name, part in batch.items():
            member_step(task, name, part)
    running = task.balance_norm_sum / task.balance_weight_sum
    torch.testing.assert_close(running, torch.tensor([raw[n] for n in task.members]), rtol=1e-4, atol=0)
    scales = task.balance_scales()
    balanced = [scales[i].item() * raw[n] for i, n in enumerate(task.members)]
    geometric_mean = torch.tensor(list(raw.values())).log().mean().exp().item()
    assert balanced == pytest.approx([geometric_mean] * 3, rel=1e-4)
    # the step's gradient is that of loss_weight · scale · loss: its norm is loss_weight · geometric mean
    for i, (name, part) in enumerate(batch.items()):
        with torch.no_grad():
            expected = task.members[name].loss_weight * scales[i] * task.member_step(name, part)[0]
        torch.testing.assert_close(member_step(task, name, part).detach(), expected)
        weight = task.members[name].loss_weight
        assert backbone_grad_norm(task) == pytest.approx(weight * geometric_mean, rel=1e-3)


def test_grad_norm_balance_skips_mixed_steps_and_zero_gradients():
    task, data = make_task(balance="grad_norm"), make_data("uniform")
    batch = batch_of(data)
    torch.testing.assert_close(task.balance_scales(), torch.ones(3))  # nothing measured: no scaling
    member_step(task, "digits", batch["digits"])  # zero head: no gradient reaches the backbone
    assert task.balance_weight_sum.tolist() == [0, 0, 0]
    task.zero_grad(set_to_none=True)
    task.training_step({"lm": batch["lm"], "sentiment": batch["sentiment"]}, 0).backward()
    task.on_before_optimizer_step(None)  # two members made this gradient: it is nobody's
    assert task.balance_weight_sum.tolist() == [0, 0, 0]
    member_step(task, "lm", batch["lm"])
    assert task.balance_weight_sum[0] > 0 and task.balance_weight_sum[1:].tolist() == [0, 0]
    torch.testing.assert_close(task.balance_scales(), torch.ones(3))  # one member: its own reference


def test_grad_norm_balance_state_is_checkpointed_and_absent_without_balance():
    assert not any(k.startswith("balance_") for k in make_task().state_dict())
    task = balanced_task()
    member_step(task, "lm", batch_of(make_data("uniform"))["lm"])
    state = task.state_dict()
    assert state["balance_norm_sum"][0] > 0
    restored = make_task(balance="grad_norm")
    restored.load_state_dict(state)
    torch.testing.assert_close(restored.balance_scales(), task.balance_scales())


def test_grad_norm_balance_trains_and_logs_each_members_scale(tmp_path):
    task, data = balanced_task(), make_data("uniform")
    trainer = quiet_trainer(tmp_path, max_steps=12, limit_val_batches=0)
    trainer.fit(task, datamodule=data)
    logged = {k for k in trainer.callback_metrics if k.endswith("/balance_scale")}
    assert logged == {"lm/balance_scale", "digits/balance_scale", "sentiment/balance_scale"}
    assert bool((task.balance_weight_sum > 0).all())


def test_member_moments_give_each_member_the_optimizer_state_of_its_own_steps():
    task, data = balanced_task("member_moments"), make_data("uniform")
    batch = batch_of(data)
    optimizer = task.configure_optimizers()["optimizer"]
    beta1, beta2 = optimizer.param_groups[0]["betas"]
    probe = task.net.backbone.blocks[0].attn.qkv.weight
    order = ["lm", "digits", "lm", "sentiment", "digits", "lm", "lm", "digits"]
    grads: dict[str, list[torch.Tensor]] = {name: [] for name in batch}
    for name in order:
        optimizer.zero_grad(set_to_none=True)
        task.training_step({name: batch[name]}, 0).backward()
        task.on_before_optimizer_step(optimizer)
        grads[name].append(probe.grad.clone())
        optimizer.step()
    for name, seen in grads.items():
        state = task.member_moments.states[name][probe]
        assert float(state["step"]) == len(seen), name  # its own step count: its own bias correction
        first = second = torch.zeros_like(probe)
        for grad in seen:  # the moments of this member's gradients alone
            first = beta1 * first + (1 - beta1) * grad
            second = beta2 * second + (1 - beta2) * grad * grad
        torch.testing.assert_close(state["exp_avg"], first)
        torch.testing.assert_close(state["exp_avg_sq"], second)
    # a step that two members' gradients made (gradient accumulation) has a state of its own
    optimizer.zero_grad(set_to_none=True)
    task.training_step({"lm": batch["lm"], "digits": batch["digits"]}, 0).backward()
    task.on_before_optimizer_step(optimizer)
    optimizer.step()
    assert float(task.member_moments.states["*"][probe]["step"]) == 1


def test_member_moments_checkpoint_names_parameters_and_refuses_unknown_ones():
    task = make_task(balance="member_moments")
    data = make_data("uniform")
    optimizer = task.configure_optimizers()["optimizer"]
    for name, part in batch_of(data).items():
        optimizer.zero_grad(set_to_none=True)
        task.training_step({name: part}, 0).backward()
        task.on_before_optimizer_step(optimizer)
        optimizer.step()
    checkpoint: dict = {}
    task.on_save_checkpoint(checkpoint)
    saved = checkpoint["multitask_member_optimizer_states"]
    assert set(saved) == {"lm", "digits", "sentiment"}
    assert "net.backbone.blocks.0.attn.qkv.weight" in saved["lm"]
    restored = make_task(balance="member_moments")
    restored.on_load_checkpoint(checkpoint)
    probe = restored.net.backbone.blocks[0].attn.qkv.weight
    original = task.member_moments.states["digits"][task.net.backbone.blocks[0].attn.qkv.weight]
    torch.testing.assert_close(
        restored.member_moments.states["digits"][probe]["exp_avg"], original["exp_avg"]
    )
    saved["speech"] = saved.pop("sentiment")
    with pytest.raises(ValueError, match=r"optimizer state of member 'speech', which this task lacks"):
        make_task(balance="member_moments").on_load_checkpoint(checkpoint)
    saved["sentiment"] = saved.pop("speech")
    saved["lm"]["net.backbone.extra.weight"] = {}
    with pytest.raises(ValueError, match=r"parameter 'net\.backbone\.extra\.weight', which this model lacks"):
        make_task(balance="member_moments").on_load_checkpoint(checkpoint)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"balance": "gradnorm"}, r"task\.balance='gradnorm'; choose one of none, grad_norm, member_moments"),
        ({"balance": "grad_norm", "balance_momentum": 1.0}, r"task\.balance_momentum must lie in \[0, 1\)"),
    ],
)
def test_bad_balance_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task(**kwargs)


@pytest.mark.parametrize("balance", ["grad_norm", "member_moments"])
def test_balance_refuses_data_that_trains_every_member_every_step(balance, tmp_path):
    task, data = make_task(balance=balance), make_data("all")
    with pytest.raises(
        ValueError, match=rf"task\.balance={balance} .* data\.sampling=all trains every member"
    ):
        quiet_trainer(tmp_path, max_steps=1).fit(task, datamodule=data)


# -- bad input ----------------------------------------------------------------------------------------
def test_a_task_whose_modality_has_no_tokenizer_is_named():
    net = make_net({**dict(make_net().heads), "speech": ClassificationHead(DIM, 2)})
    bad = members(speech={"modality": "audio", "loss": ClassificationLoss()})
    with pytest.raises(ValueError) as err:
        make_task(members=bad, net=net)
    message = str(err.value)
    assert "task.members.speech.modality='audio'" in message
    assert "no tokenizer is configured for modality 'audio' (task.net.tokenizers: image, text)" in message


def test_bad_members_fail_naming_the_key():
    with pytest.raises(ValueError, match=r"task\.members\.digits\.loss_weight=-1\.0"):
        make_task(members=members(digits={**members()["digits"], "loss_weight": -1}))
    with pytest.raises(ValueError, match=r"task\.net\.heads\.digits is missing"):
        make_task(
            net=make_net({"lm": LMHead(DIM, VOCAB, tie_to="text"), "sentiment": ClassificationHead(DIM, 2)})
        )
    with pytest.raises(ValueError, match=r"task\.members\.digits\.loss is missing"):
        make_task(members=members(digits={"modality": "image"}))
    with pytest.raises(TypeError, match=r"task\.members\.digits\.loss is a str, not an Objective"):
        make_task(members=members(digits={"modality": "image", "loss": "cross_entropy"}))


def test_data_and_task_members_must_match():
    task, data = make_task(), MultiTaskDataModule({"lm": Fake("text"), "other": Fake("image")})
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_progress_bar=False)
    with pytest.raises(
        ValueError, match=r"no data for task\(s\) \['digits', 'sentiment'\].*no task for data member"
    ):
        trainer.fit(task, datamodule=data)


# -- configs and the CLI ------------------------------------------------------------------------------
@pytest.mark.slow
def test_config_composes_members_from_the_tasks_group():
    cfg = compose_train(["task=multitask", "tasks=[text_lm, mnist, spoken_digits]", "data.sampling=uniform"])
    assert list(cfg.data.members) == ["text_lm", "mnist", "spoken_digits"]
    assert list(cfg.task.members) == ["text_lm", "mnist", "spoken_digits"]
    assert cfg.data._target_.endswith("MultiTaskDataModule") and cfg.data.sampling == "uniform"
    assert cfg.data.members.mnist._target_ == "omniformer.data.MNISTDataModule"
    assert cfg.task.members.spoken_digits.modality == "audio"
    one = compose_train(["task=multitask", "tasks=[mnist]"])
    assert list(one.task.members) == ["mnist"] and list(one.data.members) == ["mnist"]
    both = compose_train(["task=multitask", "tasks=[text_lm, movie_reviews]"])
    assert both.task.members.movie_reviews.modality == "review_text"


@pytest.mark.slow
def test_multitask_cli_on_text_images_and_audio(tmp_path):
    run_dir = tmp_path / "run"
    run_main("omniformer.train", *MULTITASK, "data.sampling=proportional", f"hydra.run.dir={run_dir}")
    results = read_results(run_dir)
    for key in (
        "text_lm/val_loss",
        "text_lm/val_ppl",
        "mnist/val_acc",
        "spoken_digits/val_acc",
        "mnist/test_acc",
    ):
        assert key in results, key
    assert results["steps"] == 6
    for name in ("text_lm/vocab.json", "mnist/classes.json", "spoken_digits/classes.json"):
        assert (run_dir / name).is_file(), name
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    state = checkpoint["state_dict"]
    for part in ("tokenizers.text", "tokenizers.image", "tokenizers.audio", "heads.text_lm", "heads.mnist"):
        assert any(k.startswith(f"net.{part}.") for k in state), part
    assert "mnist/classes.json" in checkpoint["omniformer"]["artifacts"]
    # issue #17: samples counted, the summed loss named, the weights named, eval prints each metric once
    assert results["samples_per_sec"] > 0  # was 0.0: a {member: batch} step counts its members' rows
    assert results["val_loss_weighted_sum"] == results["val_loss"]
    assert results["weights"]["mnist/val_acc"] == "last weights (step 6)"
    assert results["weights"]["mnist/test_acc"].startswith("best.ckpt (step ")
    proc = run_main("omniformer.evaluate", f"ckpt={run_dir / 'checkpoints' / 'best.ckpt'}", "figures=false")
    printed = [line.split(": ")[0] for line in proc.stdout.splitlines() if re.match(r"^[\w/]+: ", line)]
    assert "mnist/test_acc" in printed and len(printed) == len(set(printed))
    assert "test_loss_weighted_sum" in printed and "test_loss" not in printed


@pytest.mark.slow
def test_multitask_cli_refuses_bad_weights_before_training(tmp_path):
    proc = run_main(
        "omniformer.train",
        *MULTITASK,
        "data.sampling=weights",
        "data.weights={text_lm: 1, mnist: -1, spoken_digits: 1}",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode != 0
    assert "data.weights.mnist=-1: sampling weights must be >= 0" in proc.stdout + proc.stderr
