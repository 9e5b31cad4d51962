"""AudioFrameTokenizer: shapes of frame and patch tokens, masks, normalisation, SpecAugment, length policy."""

from __future__ import annotations

import pytest
import torch

from omniformer.backbone import Backbone
from omniformer.heads import ClassificationHead
from omniformer.model import OmniModel
from omniformer.tokenizers import AudioFrameTokenizer

RATE = 8000  # hop 10 ms = 80 samples, window 25 ms = 200 samples


def tokenizer(**kwargs) -> AudioFrameTokenizer:
    args = {"dim": 32, "sample_rate": RATE, "n_mels": 32} | kwargs
    return AudioFrameTokenizer(**args)


def waves(*lengths: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded noise clips of the given lengths, and the lengths."""
    generator = torch.Generator().manual_seed(seed)
    batch = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        batch[row, :n] = torch.randn(n, generator=generator) * 0.1
    return batch, torch.tensor(lengths)


def test_frame_tokens_shape_mask_and_positions():
    tok = tokenizer(frames_per_token=2).eval()
    x, lengths = waves(8000, 4000, 800)
    out = tok(x, lengths)
    frames = 8000 // 80 + 1  # centred frames
    assert out.x.shape == (3, (frames + 1) // 2, 32)
    # ceil(real frames / 2) real tokens per clip
    assert out.mask.sum(dim=1).tolist() == [51, 26, 6]
    assert out.positions.shape == (3, 51)
    assert out.positions[0].tolist() == list(range(51))


def test_patch_tokens_shape_and_sincos_positions():
    tok = tokenizer(tokens="patches", patch_size=[8, 4]).eval()
    x, lengths = waves(8000, 2000)
    out = tok(x, lengths)
    time_patches, freq_patches = -(-101 // 4), 32 // 8
    assert out.x.shape == (2, time_patches * freq_patches, 32)
    assert out.positions is None  # positions are added into x, not left to RoPE
    # the shorter clip: ceil(26 frames / 4) columns of 4 patches are real
    assert out.mask.sum(dim=1).tolist() == [time_patches * 4, 7 * 4]
    # time-major order: real patches first, padding last
    assert out.mask[1, : 7 * 4].all() and not out.mask[1, 7 * 4 :].any()


def test_cls_token_prepended_and_unmasked():
    tok = tokenizer(cls_token=True).eval()
    x, lengths = waves(1600, 800)
    out = tok(x, lengths)
    plain = tokenizer().eval()(x, lengths)
    assert out.x.shape[1] == plain.x.shape[1] + 1
    assert out.mask[:, 0].all()
    assert out.positions[0, :3].tolist() == [0, 1, 2]


def test_channel_axis_accepted_and_bad_shapes_named():
    tok = tokenizer().eval()
    x, _ = waves(1600, 1600)
    assert torch.equal(tok(x[:, None]).x, tok(x).x)
    with pytest.raises(ValueError, match="B×samples"):
        tok(torch.zeros(2, 2, 1600))
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 1600\]"):
        tok(x, torch.tensor([1600, 1700]))
    with pytest.raises(ValueError, match="shape"):
        tok(x, torch.tensor([1600]))


@pytest.mark.parametrize("kind", ["frames", "patches"])
@pytest.mark.parametrize("normalize", ["utterance", "none"])
def test_padding_never_changes_the_pooled_output(kind, normalize):
    """A clip classified alone gives the same logits as the same clip padded inside a longer batch."""
    torch.manual_seed(0)
    tok = tokenizer(tokens=kind, patch_size=[8, 4], normalize=normalize)
    net = OmniModel({"audio": tok}, Backbone(32, 2, 4), {"cls": ClassificationHead(32, 5)}).eval()
    torch.nn.init.normal_(net.heads["cls"].proj.weight)  # the head starts at zero; make it see the pool
    x, lengths = waves(3000, 8000, 1234, seed=1)
    batched = net("audio", "cls", x, lengths=lengths)
    for row, n in enumerate(lengths.tolist()):
        alone = net("audio", "cls", x[row : row + 1, :n], lengths=torch.tensor([n]))
        torch.testing.assert_close(batched[row : row + 1], alone, atol=2e-5, rtol=1e-4)
    # and the padding's content is irrelevant: garbage after each length changes nothing
    noisy = x + (torch.arange(x.shape[1])[None, :] >= lengths[:, None]) * torch.randn_like(x)
    torch.testing.assert_close(net("audio", "cls", noisy, lengths=lengths), batched)


def test_padded_tokens_are_never_attended_to():
    """Changing padded tokens' vectors leaves every real token's output unchanged."""
    torch.manual_seed(0)
    tok = tokenizer().eval()
    backbone = Backbone(32, 2, 4).eval()
    x, lengths = waves(4000, 1000)
    tokens = tok(x, lengths)
    h = backbone(tokens)
    tokens.x = torch.where(tokens.mask[..., None], tokens.x, torch.randn_like(tokens.x) * 100)
    h2 = backbone(tokens)
    torch.testing.assert_close(h[tokens.mask], h2[tokens.mask])


def test_spec_augment_only_while_training():
    torch.manual_seed(0)
    tok = tokenizer(freq_masks=2, freq_mask_width=8, time_masks=2, time_mask_width=10)
    x, lengths = waves(8000, 8000)
    tok.eval()
    assert torch.equal(tok(x, lengths).x, tok(x, lengths).x)
    tok.train()
    assert not torch.equal(tok(x, lengths).x, tok.eval()(x, lengths).x)
    off = tokenizer(freq_masks=0, time_masks=0).train()
    assert len(off.spec_augment) == 0


def test_dataset_normalisation_estimated_while_training_and_saved():
    tok = tokenizer(normalize="dataset", norm_stats_frames=150)
    x, lengths = waves(8000, 4000)
    with pytest.raises(RuntimeError, match="no statistics yet"):
        tok.eval()(x, lengths)
    tok.train()
    tok(x, lengths)  # 101 + 51 real frames counted
    assert float(tok.stats_count) == 152
    tok(x, lengths)  # budget reached: statistics frozen
    assert float(tok.stats_count) == 152
    restored = tokenizer(normalize="dataset")
    restored.load_state_dict(tok.state_dict())
    torch.testing.assert_close(restored.eval()(x, lengths).x, tok.eval()(x, lengths).x)
    mel, frames = tok.log_mel(x, lengths)
    valid = torch.arange(mel.shape[2])[None] < frames[:, None]
    normed = tok._normalize(mel, valid)
    picked = normed.transpose(1, 2)[valid]  # real frames × bands
    torch.testing.assert_close(picked.mean(0), torch.zeros(32), atol=1e-4, rtol=0)


def test_fixed_dataset_statistics():
    tok = tokenizer(normalize="dataset", norm_mean=-4.0, norm_std=2.0).eval()
    x, lengths = waves(1600)
    mel, _ = tok.log_mel(x, lengths)
    valid = torch.ones(1, mel.shape[2], dtype=torch.bool)
    torch.testing.assert_close(tok._normalize(mel, valid), (mel + 4.0) / 2.0)
    with pytest.raises(ValueError, match="both norm_mean and norm_std"):
        tokenizer(normalize="dataset", norm_mean=-4.0)


def test_overflow_crop_keeps_the_beginning():
    tok = tokenizer(max_tokens=10, overflow="crop").eval()
    x, lengths = waves(8000, 1000)
    out = tok(x, lengths)
    assert out.x.shape[1] == 10 and out.mask.sum(1).tolist() == [10, 7]
    full = tokenizer(max_tokens=1000).eval()
    full.load_state_dict(tok.state_dict())
    # the short clip is untouched; the long one keeps its first tokens (per-utterance statistics
    # are taken over the kept frames only)
    torch.testing.assert_close(out.x[1, :7], full(x, lengths).x[1, :7])
    assert tok.num_tokens(8000) == 51


def test_overflow_raise_names_clip_and_limit():
    tok = tokenizer(max_tokens=10, overflow="raise").eval()
    x, lengths = waves(1000, 8000)
    with pytest.raises(
        ValueError, match=r"audio clip 1 of the batch lasts 1\.00 s and gives 51 tokens.*max_tokens=10"
    ):
        tok(x, lengths)
    short, short_lengths = waves(1000, 1200)
    assert tok(short, short_lengths).x.shape[1] <= 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tokens": "pixels"}, "tokens='pixels'"),
        ({"normalize": "global"}, "normalize='global'"),
        ({"overflow": "wrap"}, "overflow='wrap'"),
        ({"tokens": "patches", "patch_size": [7, 4]}, "must divide"),
        ({"tokens": "patches", "dim": 30}, "divisible by 4"),
        ({"frames_per_token": 0}, "frames_per_token"),
        ({"hop_ms": 0.01}, "longer windows"),
        ({"tokens": "patches", "patch_size": [8, 4], "max_tokens": 3}, "no room"),
    ],
)
def test_bad_configuration_is_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tokenizer(**kwargs)


def test_precomputed_log_mel_gives_the_same_tokens():
    """The loader-side path (log-mel in workers, tokens in the model) matches the on-device path."""
    tok = tokenizer().eval()
    x, lengths = waves(4000, 2500)
    mel, frames = tok.log_mel(x, lengths)
    torch.testing.assert_close(tok.tokens_from_log_mel(mel, frames).x, tok(x, lengths).x)
