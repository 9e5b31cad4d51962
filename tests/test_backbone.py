"""The shared backbone: shapes, causality, padding, KV cache, init, bad arguments."""

from __future__ import annotations

import pytest
import torch

from omniformer.backbone import Backbone
from omniformer.positions import apply_rotary
from omniformer.tokens import Tokens


def tokens(b: int = 2, n: int = 7, d: int = 32, seed: int = 0, positions: bool = True) -> Tokens:
    g = torch.Generator().manual_seed(seed)
    pos = torch.arange(n).expand(b, n) if positions else None
    return Tokens(torch.randn(b, n, d, generator=g), positions=pos)


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
@pytest.mark.parametrize("rope", [True, False])
def test_output_shape_matches_input(mlp, norm, rope):
    net = Backbone(dim=32, depth=2, heads=4, mlp=mlp, norm=norm, rope=rope)
    out = net(tokens(), causal=True)
    assert out.shape == (2, 7, 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("rope", [True, False])
def test_causal_mode_never_lets_a_later_token_change_an_earlier_output(rope):
    torch.manual_seed(0)
    net = Backbone(dim=32, depth=2, heads=4, rope=rope).eval()
    t = tokens(n=9)
    base = net(t, causal=True)
    for j in range(1, 9):
        x = t.x.clone()
        x[:, j] += torch.randn_like(x[:, j]) * 5
        out = net(Tokens(x, positions=t.positions), causal=True)
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, j], base[:, j])


def test_bidirectional_mode_lets_later_tokens_change_earlier_outputs():
    net = Backbone(dim=32, depth=1, heads=4).eval()
    t = tokens()
    x = t.x.clone()
    x[:, -1] += torch.randn_like(x[:, -1])  # not a constant shift: LayerNorm would erase that
    changed = net(Tokens(x, positions=t.positions))[:, 0] - net(t)[:, 0]
    assert changed.abs().max() > 1e-6


@pytest.mark.parametrize("causal", [False, True])
def test_padded_keys_are_never_attended(causal):
    net = Backbone(dim=32, depth=2, heads=4).eval()
    t = tokens(b=1, n=5)
    padded = torch.cat([t.x, torch.randn(1, 3, 32) * 10], dim=1)
    mask = torch.tensor([[True] * 5 + [False] * 3])
    positions = torch.arange(8)[None]
    alone = net(t, causal=causal)
    with_pad = net(Tokens(padded, mask=mask, positions=positions), causal=causal)
    torch.testing.assert_close(with_pad[:, :5], alone, atol=1e-5, rtol=1e-5)
    # Changing what sits in the padding changes nothing either.
    padded[:, 5:] = -padded[:, 5:]
    again = net(Tokens(padded, mask=mask, positions=positions), causal=causal)
    torch.testing.assert_close(again[:, :5], alone, atol=1e-5, rtol=1e-5)


def test_kv_cache_gives_the_same_outputs_as_a_full_forward():
    net = Backbone(dim=32, depth=3, heads=4).eval()
    t = tokens(b=2, n=10)
    full = net(t, causal=True)
    cache = net.new_cache(batch=2, max_len=10)
    parts = [net(Tokens(t.x[:, :4], positions=t.positions[:, :4]), causal=True, cache=cache)]
    for i in range(4, 10):
        parts.append(
            net(Tokens(t.x[:, i : i + 1], positions=t.positions[:, i : i + 1]), causal=True, cache=cache)
        )
    parts.append(None)
    incremental = torch.cat(parts[:-1], dim=1)
    assert cache.length == 10
    torch.testing.assert_close(incremental, full, atol=1e-5, rtol=1e-5)


def test_kv_cache_with_a_multi_token_chunk_after_a_prefix():
    net = Backbone(dim=32, depth=2, heads=4).eval()
    t = tokens(b=1, n=8)
    full = net(t, causal=True)
    cache = net.new_cache(batch=1, max_len=8)
    a = net(Tokens(t.x[:, :3], positions=t.positions[:, :3]), causal=True, cache=cache)
    b = net(Tokens(t.x[:, 3:], positions=t.positions[:, 3:]), causal=True, cache=cache)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


def test_zero_init_makes_every_block_the_identity():
    net = Backbone(dim=32, depth=3, heads=4, init="zero")
    t = tokens()
    torch.testing.assert_close(net(t), net.norm(t.x))


def test_scaled_init_shrinks_residual_projections_with_depth():
    net = Backbone(dim=64, depth=8, heads=4, init="scaled")
    std = net.blocks[0].attn.proj.weight.std().item()
    assert std == pytest.approx(0.02 / (2 * 8) ** 0.5, rel=0.2)


def test_rotary_preserves_norms_and_depends_only_on_relative_position():
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    from omniformer.backbone import Rotary

    rot = Rotary(8)

    def score(i: int, j: int) -> float:
        cq, sq = rot(torch.tensor([[i]]))
        ck, sk = rot(torch.tensor([[j]]))
        return (apply_rotary(q, cq, sq) * apply_rotary(k, ck, sk)).sum().item()

    assert score(3, 1) == pytest.approx(score(12, 10), abs=1e-4)
    cos, sin = rot(torch.tensor([[5]]))
    assert apply_rotary(q, cos, sin).norm().item() == pytest.approx(q.norm().item(), rel=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dim": 30, "heads": 4}, "heads=4 must divide dim=30"),
        ({"dim": 36, "heads": 4}, "dim=36, heads=4: rotary positions (rope=True) need an even head size"),
        ({"depth": 0}, "depth=0 must be positive"),
        ({"norm": "batchnorm"}, "norm='batchnorm'"),
        ({"mlp": "relu"}, "mlp='relu'"),
        ({"init": "orthogonal"}, "init='orthogonal'"),
    ],
)
def test_bad_arguments_fail_with_the_key_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Backbone(**{"dim": 32, "heads": 4, **kwargs})


def test_sequence_longer_than_max_seq_len_is_refused():
    net = Backbone(dim=32, depth=1, heads=4, max_seq_len=6)
    with pytest.raises(ValueError, match=r"exceeds model\.max_seq_len=6"):
        net(tokens(n=7))


def test_wrong_width_is_refused():
    with pytest.raises(ValueError, match=r"B×N×32"):
        Backbone(dim=32, depth=1, heads=4)(tokens(d=16))


@pytest.mark.parametrize("causal", [False, True])
def test_returned_attention_is_what_the_fused_kernel_computed(causal):
    """``return_attention`` gives the same stream as SDPA, and weights that are distributions over the
    keys: nothing above the diagonal when causal, nothing on padding."""
    torch.manual_seed(0)
    net = Backbone(dim=32, depth=2, heads=4).eval()
    t = tokens(n=6)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    padded = Tokens(t.x, mask=mask, positions=t.positions)
    for case in (t, padded):
        fused = net(case, causal=causal)
        stream, attention = net(case, causal=causal, return_attention=True)
        torch.testing.assert_close(stream, fused, atol=1e-5, rtol=1e-5)
        assert len(attention) == 2 and attention[0].shape == (2, 4, 6, 6)
        for weights in attention:
            torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 6))
            if causal:
                assert weights.triu(1).abs().max() == 0
    assert attention[0][1, :, :4, 4:].abs().max() == 0  # real queries never look at padding


def test_returned_attention_with_a_kv_cache_spans_the_cached_keys():
    torch.manual_seed(0)
    net = Backbone(dim=32, depth=2, heads=4).eval()
    t = tokens(b=1, n=6)
    full = net(t, causal=True)
    cache = net.new_cache(batch=1, max_len=6)
    net(Tokens(t.x[:, :4], positions=t.positions[:, :4]), causal=True, cache=cache)
    last, attention = net(
        Tokens(t.x[:, 4:], positions=t.positions[:, 4:]), causal=True, cache=cache, return_attention=True
    )
    torch.testing.assert_close(last, full[:, 4:], atol=1e-5, rtol=1e-5)
    assert attention[0].shape == (1, 4, 2, 6) and attention[0][0, :, 0, 5].abs().max() == 0


def test_each_layer_writes_only_its_own_cache_view():
    net = Backbone(dim=32, depth=3, heads=4).eval()
    cache = net.new_cache(batch=1, max_len=4)
    assert [view.layer for view in cache.layers] == [0, 1, 2]
    k = torch.ones(1, 4, 2, 8)
    keys, values = cache.layers[1].append(k, 2 * k)
    assert keys.shape == values.shape == (1, 4, 2, 8) and cache.values[1, :, :, :2].eq(2).all()
    assert cache.keys[0].abs().sum() == 0 and cache.keys[2].abs().sum() == 0 and cache.length == 0


@pytest.mark.slow
def test_importing_the_backbone_loads_neither_torchaudio_nor_torchvision():
    import subprocess
    import sys

    code = (
        "import sys, omniformer.backbone, omniformer.model, omniformer.heads; "
        "print(sorted(m for m in ('torchaudio', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
