"""ImagePatchTokenizer: shapes, 2-D positions, resampling on resolution change, clear errors."""

from __future__ import annotations

import pytest
import torch

from omniformer.backbone import Backbone
from omniformer.positions import resample_grid, sincos_2d
from omniformer.tokenizers import ImagePatchTokenizer, Tokens


@pytest.mark.parametrize(
    ("channels", "size", "patch", "cls", "tokens"),
    [
        (1, 28, 7, False, 16),
        (1, 28, 4, True, 50),
        (3, 32, 4, False, 64),
        (3, 32, 8, True, 17),
        (3, (32, 48), 16, False, 6),  # non-square image
        (4, 12, (3, 4), True, 13),  # non-square patches, 4 channels
    ],
)
@pytest.mark.parametrize("positions", ["sincos", "learned"])
def test_shapes(channels, size, patch, cls, tokens, positions):
    tok = ImagePatchTokenizer(channels, size, patch, dim=32, positions=positions, cls_token=cls)
    h, w = (size, size) if isinstance(size, int) else size
    out = tok(torch.randn(2, channels, h, w))
    assert isinstance(out, Tokens)
    assert out.x.shape == (2, tokens, 32)
    assert out.mask is None and out.positions is None  # positions live in x: no RoPE for images


def test_patches_are_row_major_and_channel_last():
    """Patch (r, c) holds pixels [r·p:(r+1)·p, c·p:(c+1)·p] of every channel."""
    tok = ImagePatchTokenizer(2, (4, 6), 2, dim=8, cls_token=False)
    with torch.no_grad():
        tok.proj.weight.zero_()
        tok.proj.bias.zero_()
        tok.proj.weight[0, 0] = 1.0  # feature 0 = top-left pixel of channel 0
    image = torch.arange(2 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 6)
    x = tok(image).x[0, :, 0] - sincos_2d(2, 3, 8)[:, 0]
    assert x.tolist() == [0.0, 2.0, 4.0, 12.0, 14.0, 16.0]


def test_sincos_distinguishes_rows_and_columns():
    table = sincos_2d(4, 5, 32)
    assert table.shape == (20, 32)
    assert torch.unique(table, dim=0).shape[0] == 20  # every patch position differs
    # First half encodes the row: equal within a row, different across rows.
    rows = table.view(4, 5, 32)[..., :16]
    assert torch.allclose(rows[:, :1].expand_as(rows), rows)
    assert not torch.allclose(rows[0], rows[1])


def test_sincos_extends_to_larger_images():
    tok = ImagePatchTokenizer(1, 28, 7, dim=16, cls_token=False)
    small = tok.position_table((4, 4), "cpu", torch.float32).view(4, 4, 16)
    large = tok.position_table((6, 8), "cpu", torch.float32).view(6, 8, 16)
    assert torch.allclose(small, large[:4, :4])  # the same patch position keeps its vector


def test_learned_positions_resample_in_forward():
    tok = ImagePatchTokenizer(3, 32, 8, dim=16, positions="learned", cls_token=True)
    assert tok.pos_embed.shape == (4, 4, 16)
    out = tok(torch.randn(1, 3, 64, 48))
    assert out.x.shape == (1, 1 + 8 * 6, 16)
    assert tok.pos_embed.shape == (4, 4, 16)  # the stored table is not changed by a bigger input


def test_resample_grid_keeps_constant_and_identity():
    table = torch.randn(4, 4, 8)
    assert resample_grid(table, (4, 4)) is table
    constant = torch.ones(3, 5, 8) * 2.5
    assert torch.allclose(resample_grid(constant, (6, 10)), torch.full((6, 10, 8), 2.5), atol=1e-5)
    assert torch.allclose(resample_grid(constant, (2, 2)), torch.full((2, 2, 8), 2.5), atol=1e-5)


def test_load_state_dict_of_another_grid_resamples_positions():
    trained = ImagePatchTokenizer(1, 28, 7, dim=16, positions="learned")
    finetune = ImagePatchTokenizer(1, 56, 7, dim=16, positions="learned")
    finetune.load_state_dict(trained.state_dict())
    assert finetune.pos_embed.shape == (8, 8, 16)
    expected = resample_grid(trained.pos_embed.detach(), (8, 8))
    assert torch.allclose(finetune.pos_embed.detach(), expected)
    assert torch.equal(finetune.proj.weight, trained.proj.weight)
    # Also when nested in a bigger module (the prefix path Lightning checkpoints use).
    outer_a, outer_b = torch.nn.ModuleDict({"image": trained}), torch.nn.ModuleDict({"image": finetune})
    outer_b.load_state_dict(outer_a.state_dict())


def test_gradients_reach_patch_embedding_and_positions():
    tok = ImagePatchTokenizer(3, 16, 4, dim=16, positions="learned", cls_token=True)
    backbone = Backbone(dim=16, depth=1, heads=2)
    backbone(tok(torch.randn(2, 3, 16, 16))).sum().backward()
    for param in (tok.proj.weight, tok.pos_embed, tok.cls):
        assert param.grad is not None and param.grad.abs().sum() > 0


def test_errors_name_the_culprit():
    with pytest.raises(ValueError, match=r"30×30 is not divisible by the patch size 7×7"):
        ImagePatchTokenizer(1, 30, 7, dim=16)
    tok = ImagePatchTokenizer(1, 28, 7, dim=16)
    with pytest.raises(ValueError, match=r"expects 1-channel images .* batch has 3 channels"):
        tok(torch.randn(1, 3, 28, 28))
    with pytest.raises(ValueError, match=r"29×28 is not divisible"):
        tok(torch.randn(1, 1, 29, 28))
    with pytest.raises(ValueError, match="B×C×H×W"):
        tok(torch.randn(1, 28, 28))
    with pytest.raises(ValueError, match="positions='fixed'"):
        ImagePatchTokenizer(1, 28, 7, dim=16, positions="fixed")
    with pytest.raises(ValueError, match="divisible by 4"):
        ImagePatchTokenizer(1, 28, 7, dim=18)
    with pytest.raises(ValueError, match="patch_size must be"):
        ImagePatchTokenizer(1, 28, [7, 7, 7], dim=16)


def test_grayscale_checkpoint_into_rgb_model_is_a_clear_error():
    grey = ImagePatchTokenizer(1, 28, 7, dim=16)
    rgb = ImagePatchTokenizer(3, 28, 7, dim=16)
    with pytest.raises(ValueError, match=r"reads 1-channel 7×7 patches but this model reads 3-channel"):
        rgb.load_state_dict(grey.state_dict())
    grey = ImagePatchTokenizer(1, 28, 4, dim=16, stem="conv", stem_channels=8)
    rgb = ImagePatchTokenizer(3, 28, 4, dim=16, stem="conv", stem_channels=8)
    with pytest.raises(
        ValueError, match=r"proj\.layers\.0\.weight: .* reads 1-channel images but this model reads 3-channel"
    ):
        rgb.load_state_dict(grey.state_dict())


# -- convolutional stem -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("channels", "size", "patch", "cls", "tokens"),
    [
        (1, 28, 4, False, 49),
        (1, 28, 2, True, 197),
        (3, 32, 8, False, 16),
        (3, (32, 48), 16, True, 7),  # non-square image
    ],
)
def test_conv_stem_gives_the_linear_stems_grid(channels, size, patch, cls, tokens):
    h, w = (size, size) if isinstance(size, int) else size
    conv = ImagePatchTokenizer(channels, size, patch, dim=32, cls_token=cls, stem="conv", stem_channels=8)
    linear = ImagePatchTokenizer(channels, size, patch, dim=32, cls_token=cls)
    images = torch.randn(2, channels, h, w)
    assert conv(images).x.shape == linear(images).x.shape == (2, tokens, 32)
    stages = [m for m in conv.proj.layers if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert len(stages) == (patch.bit_length() - 1)  # log2(patch) stride-2 stages


def test_conv_stem_token_sees_only_its_own_cell_neighbourhood():
    """Token (r, c) is computed from cell (r, c) and at most one pixel-ring around it per stage:
    changing the far corner of the image leaves the first token untouched."""
    tok = ImagePatchTokenizer(1, 16, 4, dim=8, cls_token=False, positions="sincos", stem="conv").eval()
    images = torch.randn(1, 1, 16, 16)
    changed = images.clone()
    changed[..., 12:, 12:] += 5
    before, after = tok(images).x, tok(changed).x
    assert torch.allclose(before[:, 0], after[:, 0])
    assert not torch.allclose(before[:, -1], after[:, -1])


def test_conv_stem_trains_and_round_trips_through_a_state_dict():
    tok = ImagePatchTokenizer(3, 16, 4, dim=16, cls_token=True, positions="learned", stem="conv")
    tok(torch.randn(2, 3, 16, 16)).x.sum().backward()
    assert all(p.grad is not None for p in tok.parameters())
    copy = ImagePatchTokenizer(3, 16, 4, dim=16, cls_token=True, positions="learned", stem="conv")
    copy.load_state_dict(tok.state_dict())
    tok.eval(), copy.eval()
    images = torch.randn(2, 3, 16, 16)
    assert torch.equal(tok(images).x, copy(images).x)


def test_conv_stem_errors_name_the_culprit():
    with pytest.raises(ValueError, match=r"power-of-two patch size.*got 7"):
        ImagePatchTokenizer(1, 28, 7, dim=16, stem="conv")
    with pytest.raises(ValueError, match="square patches"):
        ImagePatchTokenizer(1, (8, 16), (2, 4), dim=16, stem="conv")
    with pytest.raises(ValueError, match="stem='pixels'"):
        ImagePatchTokenizer(1, 28, 4, dim=16, stem="pixels")
