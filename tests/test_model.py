"""OmniModel wiring, weight tying, the LM task's optimisation and sampling."""

from __future__ import annotations

import pytest
import torch

from omniformer.backbone import Backbone
from omniformer.heads import ClassificationHead, LMHead
from omniformer.model import OmniModel
from omniformer.sampling import generate, sample_next
from omniformer.tasks import LanguageModelingTask, OptimSettings
from omniformer.tasks.optim import WarmupCosine, parameter_groups
from omniformer.tokenizers import TextTokenizer, Tokens


def lm(vocab: int = 23, dim: int = 32, depth: int = 2, max_len: int = 64, tie: bool = True) -> OmniModel:
    return OmniModel(
        tokenizers={"text": TextTokenizer(vocab, dim, max_len=max_len)},
        backbone=Backbone(dim=dim, depth=depth, heads=4, max_seq_len=max_len),
        heads={"lm": LMHead(dim, vocab, tie_to="text" if tie else None)},
    )


def test_tied_weights_are_one_parameter():
    net = lm()
    head, embedding = net.heads["lm"].proj.weight, net.tokenizers["text"].embedding.weight
    assert head is embedding
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in set(net.parameters()))
    net("text", "lm", torch.randint(0, 23, (2, 5)), causal=True).sum().backward()
    assert embedding.grad is not None
    # Tied parameters are counted once in the optimizer's groups.
    grouped = [p for g in parameter_groups(net, 0.1) for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped})


def test_untied_head_has_its_own_weight():
    net = lm(tie=False)
    assert net.heads["lm"].proj.weight is not net.tokenizers["text"].embedding.weight


def test_unknown_modality_or_head_is_named():
    net = lm()
    with pytest.raises(KeyError, match="no tokenizer for modality 'image'"):
        net("image", "lm", torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(KeyError, match="no head named 'cls'"):
        net("text", "cls", torch.zeros(1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ties to tokenizer 'words'"):
        OmniModel({"text": TextTokenizer(5, 8)}, Backbone(8, 1, 2), {"lm": LMHead(8, 5, tie_to="words")})


def test_overfitting_one_batch_drives_the_loss_near_zero():
    torch.manual_seed(0)
    net = lm(vocab=17, dim=64, depth=2)
    task = LanguageModelingTask(net, OptimSettings())
    x, y = torch.randint(0, 17, (2, 12)), torch.randint(0, 17, (2, 12))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(60):
        optimizer.zero_grad()
        loss, _, _ = task.model_step((x, y))
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05  # from ln(17) = 2.8 at the start


def test_generation_matches_greedy_decoding_without_a_cache():
    torch.manual_seed(0)
    net = lm().eval()
    prompt = torch.randint(0, 23, (2, 4))
    out = generate(net, prompt, max_new_tokens=6, temperature=0.0)
    ids = prompt
    for _ in range(6):
        logits = net("text", "lm", ids, causal=True)[:, -1]
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    torch.testing.assert_close(out, ids)


def test_generation_past_the_context_window_keeps_going():
    net = lm(max_len=8).eval()
    out = generate(net, torch.randint(0, 23, (1, 5)), max_new_tokens=20, temperature=1.0, top_k=5)
    assert out.shape == (1, 25)


def test_generation_never_looks_further_back_than_its_window():
    net = lm(max_len=64).eval()
    seen = []
    net.tokenizers["text"].register_forward_hook(lambda m, args, out: seen.append(int(out.positions.max())))
    out = generate(net, torch.randint(0, 23, (1, 3)), max_new_tokens=30, temperature=0.0, window=8)
    assert out.shape == (1, 33)
    assert max(seen) == 7  # positions 0..7: the training block, never beyond


def test_top_k_sampling_only_draws_the_k_best():
    logits = torch.tensor([[0.0, 5.0, 4.0, -1.0, 3.0]])
    draws = {sample_next(logits, 1.0, 2).item() for _ in range(200)}
    assert draws <= {1, 2}


def test_warmup_cosine_schedule_hits_its_endpoints():
    schedule = WarmupCosine(warmup_steps=10, total_steps=110, min_ratio=0.1)
    assert schedule(0) == pytest.approx(1 / 11)
    assert schedule(10) == pytest.approx(1.0)
    assert schedule(60) == pytest.approx(0.55)
    assert schedule(110) == pytest.approx(0.1)
    assert schedule(500) == pytest.approx(0.1)


def test_weight_decay_applies_to_matrices_only():
    groups = parameter_groups(lm(), 0.1)
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and groups[0]["weight_decay"] == 0.1
    assert all(p.ndim < 2 for p in groups[1]["params"]) and groups[1]["weight_decay"] == 0.0
    assert [g["name"] for g in groups] == ["decay", "no_decay"]  # LearningRateMonitor: lr-AdamW/decay


def test_masked_mean_pooling_ignores_padding():
    head = ClassificationHead(8, 3, pool="mean")
    torch.nn.init.normal_(head.proj.weight)
    h = torch.randn(1, 5, 8)
    mask = torch.tensor([[True, True, True, False, False]])
    padded = head(h, Tokens(h, mask=mask))
    h2 = h.clone()
    h2[:, 3:] = 100
    torch.testing.assert_close(head(h2, Tokens(h2, mask=mask)), padded)
    torch.testing.assert_close(padded, head(h[:, :3], Tokens(h[:, :3])))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lr": 0}, "lr=0 must be positive"),
        ({"min_lr": 1.0}, "min_lr=1.0 must lie between 0 and lr=0.001"),
        ({"schedule": "step"}, "schedule='step'"),
    ],
)
def test_bad_optim_settings_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OptimSettings(**kwargs)
