"""Mixed sequences: composition, prefix-LM attention, padding, cached decoding, gradients, markers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from omniformer.backbone import Backbone
from omniformer.heads import LMHead
from omniformer.model import OmniModel
from omniformer.prefix_sampling import generate_after_prefix
from omniformer.sequence import Segment, SegmentMarkers, compose, concat, next_positions, place
from omniformer.tokenizers import AudioSpectrogramTokenizer, ImagePatchTokenizer, TextEmbedding
from omniformer.tokens import Tokens

DIM, VOCAB = 32, 11


def tiny_model(max_seq_len: int = 64) -> tuple[OmniModel, SegmentMarkers]:
    torch.manual_seed(0)
    tokenizers = {
        "audio": AudioSpectrogramTokenizer(
            dim=DIM, sample_rate=8000, n_mels=16, frames_per_token=2, freq_masks=0, time_masks=0
        ),
        "image": ImagePatchTokenizer(in_channels=1, image_size=8, patch_size=4, dim=DIM, cls_token=False),
        "text": TextEmbedding(vocab_size=VOCAB, dim=DIM),
    }
    # Xavier init: blocks far from the identity, so every dependency shows in the outputs.
    backbone = Backbone(dim=DIM, depth=2, heads=4, max_seq_len=max_seq_len, init="xavier")
    net = OmniModel(tokenizers, backbone, {"lm": LMHead(DIM, VOCAB, tie_to="text")}).eval()
    markers = SegmentMarkers(dim=DIM, modalities=["audio", "image"], unmarked=["text"])
    return net, markers


def waveforms(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    batch = torch.zeros(len(lengths), max(lengths))
    for row, n in enumerate(lengths):
        batch[row, :n] = torch.randn(n, generator=g)
    return batch, torch.tensor(lengths)


def images(batch: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def text_ids(batch: int, n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, n), generator=torch.Generator().manual_seed(seed))


def prefix_segments(net: OmniModel, kind: str, batch: int = 2) -> list[Segment]:
    if kind == "image":
        return [Segment("image", net.tokenizers["image"](images(batch)))]
    wave, lengths = waveforms([800, 400, 560][:batch])
    return [Segment("audio", net.tokenizers["audio"](wave, lengths))]


def mixed(net: OmniModel, markers: SegmentMarkers, segments: list[Segment], ids: torch.Tensor) -> Tokens:
    text = Segment("text", net.tokenizers["text"](ids), prefix=False)
    return compose([*segments, text], markers=markers)


def stream(net: OmniModel, tokens: Tokens) -> torch.Tensor:
    return net.backbone(tokens, causal=True)


def with_x(tokens: Tokens, x: torch.Tensor) -> Tokens:
    return Tokens(x, tokens.mask, tokens.positions, tokens.modality, tokens.prefix)


def test_positions_run_on_across_segments_and_skip_padding():
    net, markers = tiny_model()
    image = prefix_segments(net, "image", 1)
    seq = mixed(net, markers, image, text_ids(1, 3))
    # Generation builds the same sequence from the composed prefix and the text placed after it.
    prefix = compose(image, markers=markers)
    text = net.tokenizers["text"](text_ids(1, 3))
    text = place(text, offset=next_positions(prefix), modality_id=markers.modality_id("text"), prefix=False)
    assert torch.equal(concat([prefix, text]).positions, seq.positions)
    # <image> at 0, the four patches share position 1 (2-D sin-cos inside), </image> at 2, text at 3…
    assert seq.positions[0].tolist() == [0, 1, 1, 1, 1, 2, 3, 4, 5]
    assert seq.modality[0].tolist() == [1] * 6 + [2] * 3
    assert seq.prefix[0].tolist() == [True] * 6 + [False] * 3
    assert seq.mask is None
    audio = mixed(net, markers, prefix_segments(net, "audio"), text_ids(2, 2))
    real = [audio.positions[row][audio.mask[row]].tolist() for row in range(2)]
    frames = [(800 // 80 + 2) // 2, (400 // 80 + 2) // 2]  # hop 80 samples, 2 frames a token
    for row, count in enumerate(frames):
        assert real[row] == list(range(count + 4))  # <audio>, frames, </audio>, 2 text tokens


def test_a_prefix_token_never_sees_text_but_sees_the_whole_prefix():
    net, markers = tiny_model()
    seq = mixed(net, markers, prefix_segments(net, "image"), text_ids(2, 4))
    base = stream(net, seq)
    p = int(seq.prefix[0].sum())
    x = seq.x.clone()
    x[:, p:] += torch.randn_like(x[:, p:]) * 3
    torch.testing.assert_close(stream(net, with_x(seq, x))[:, :p], base[:, :p], atol=1e-6, rtol=0)
    x = seq.x.clone()
    x[:, p - 2] += torch.randn_like(x[:, p - 2])  # the last patch
    changed = stream(net, with_x(seq, x))
    assert (changed[:, 0] - base[:, 0]).abs().max() > 1e-4  # bidirectional: the marker before hears it
    assert (changed[:, p:] - base[:, p:]).abs().max() > 1e-4  # and the text reads the prefix


def test_a_text_token_never_sees_later_text():
    net, markers = tiny_model()
    seq = mixed(net, markers, prefix_segments(net, "audio"), text_ids(2, 5))
    base = stream(net, seq)
    n = seq.x.shape[1]
    for j in range(n - 5, n):
        x = seq.x.clone()
        x[:, j] += torch.randn_like(x[:, j]) * 3
        out = stream(net, with_x(seq, x))
        torch.testing.assert_close(out[:, :j], base[:, :j], atol=1e-6, rtol=0)
        assert (out[:, j] - base[:, j]).abs().max() > 1e-4


def test_padding_is_never_attended():
    net, markers = tiny_model()
    seq = mixed(net, markers, prefix_segments(net, "audio", 3), text_ids(3, 3))
    assert not seq.mask.all()
    base = stream(net, seq)
    x = seq.x.clone()
    x[~seq.mask] = torch.randn_like(x[~seq.mask]) * 100
    out = stream(net, with_x(seq, x))
    torch.testing.assert_close(out[seq.mask], base[seq.mask], atol=1e-6, rtol=0)


def test_variable_length_prefixes_give_each_row_what_it_gives_alone():
    net, markers = tiny_model()
    lengths = [800, 400, 560]
    ids = text_ids(3, 4)
    batch = mixed(net, markers, prefix_segments(net, "audio", 3), ids)
    out = stream(net, batch)
    logits = net.heads["lm"](out)
    for row, n in enumerate(lengths):
        wave, _ = waveforms(lengths)
        alone_prefix = [Segment("audio", net.tokenizers["audio"](wave[row : row + 1, :n]))]
        alone = mixed(net, markers, alone_prefix, ids[row : row + 1])
        assert alone.mask is None or alone.mask.all()
        real = batch.mask[row]
        assert batch.positions[row][real].tolist() == alone.positions[0].tolist()
        torch.testing.assert_close(out[row][real], stream(net, alone)[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(logits[row, -4:], net.heads["lm"](stream(net, alone))[0, -4:])


def cached_logits(net: OmniModel, markers: SegmentMarkers, prefix: Tokens, ids: torch.Tensor, prompt: int):
    """Logits of every text position: prefix and ``prompt`` ids prefilled, then one id per call."""
    backbone, text = net.backbone, net.tokenizers["text"]
    offset, text_id = next_positions(prefix), markers.modality_id("text")

    def chunk(start: int, stop: int) -> Tokens:
        tokens = text(ids[:, start:stop], start_pos=start)
        return place(tokens, offset=offset, modality_id=text_id, prefix=False)

    cache = backbone.new_cache(ids.shape[0], prefix.x.shape[1] + ids.shape[1])
    first = concat([prefix, chunk(0, prompt)])
    parts = [net.heads["lm"](backbone(first, causal=True, cache=cache))[:, -prompt - 1 :]]
    for i in range(prompt, ids.shape[1]):
        parts.append(net.heads["lm"](backbone(chunk(i, i + 1), causal=True, cache=cache)))
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("kind", ["image", "audio"])
@pytest.mark.parametrize("prompt", [0, 2])
def test_cached_decoding_equals_the_full_forward(kind, prompt):
    net, markers = tiny_model()
    segments = prefix_segments(net, kind, 3 if kind == "audio" else 2)
    batch = segments[0].tokens.x.shape[0]
    prefix = compose(segments, markers=markers)
    ids = text_ids(batch, 6)
    full = net.heads["lm"](stream(net, mixed(net, markers, segments, ids)))
    p = prefix.x.shape[1]
    expected = full[:, p - 1 :]  # the last marker predicts text id 0, text id i predicts id i+1
    got = cached_logits(net, markers, prefix, ids, prompt)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["image", "audio"])
def test_greedy_generation_after_a_prefix_is_the_full_forwards_argmax(kind):
    net, markers = tiny_model()
    segments = prefix_segments(net, kind, 3 if kind == "audio" else 2)
    prefix = compose(segments, markers=markers)
    prompt = text_ids(prefix.x.shape[0], 1)
    out = generate_after_prefix(net, prefix, prompt, 5, markers=markers)
    assert out.shape == (prefix.x.shape[0], 6) and torch.equal(out[:, :1], prompt)
    logits = net.heads["lm"](stream(net, mixed(net, markers, segments, out)))
    p = prefix.x.shape[1]
    torch.testing.assert_close(out[:, 1:], logits[:, p : p + 5].argmax(-1), atol=0, rtol=0)


def test_sampling_after_a_prefix_is_seeded_and_stops_at_the_stop_id():
    net, markers = tiny_model()
    prefix = compose(prefix_segments(net, "image"), markers=markers)
    empty = torch.zeros(2, 0, dtype=torch.long)

    def draw(seed: int, **kwargs) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return generate_after_prefix(
            net, prefix, empty, 8, markers=markers, temperature=1.0, generator=g, **kwargs
        )

    assert torch.equal(draw(3, top_k=2), draw(3, top_k=2)) and draw(3).shape == (2, 8)
    greedy = generate_after_prefix(net, prefix, empty, 8, markers=markers)
    stopped = generate_after_prefix(net, prefix, empty, 8, markers=markers, stop_id=int(greedy[0, 0]))
    assert stopped.shape[1] <= 8 and (stopped[0] == greedy[0, 0]).all()


def test_a_text_loss_trains_the_audio_and_image_tokenizers_and_the_markers():
    net, markers = tiny_model()
    net.train()
    audio, image = prefix_segments(net, "audio"), prefix_segments(net, "image")
    ids = text_ids(2, 5)
    seq = mixed(net, markers, [*image, *audio], ids)
    logits = net.heads["lm"](stream(net, seq))
    p = seq.x.shape[1] - ids.shape[1]
    loss = F.cross_entropy(logits[:, p - 1 : -1].reshape(-1, VOCAB), ids.reshape(-1))
    loss.backward()
    for name in ("audio", "image"):
        assert net.tokenizers[name].proj.weight.grad.abs().max() > 0, name
        assert markers.begin[name].grad.abs().max() > 0 and markers.end[name].grad.abs().max() > 0, name
    assert {"begin.audio", "end.image"} <= set(markers.state_dict())


def test_bad_sequences_fail_with_the_culprit_named():
    net, markers = tiny_model(max_seq_len=16)
    audio = prefix_segments(net, "audio")  # 1 + 6 + 1 = 8 columns
    text = Segment("text", net.tokenizers["text"](text_ids(2, 2)), prefix=False)
    with pytest.raises(ValueError, match=r"segment 1 \(audio\) is a prefix after the causal segment 0"):
        compose([text, *audio], markers=markers)
    with pytest.raises(KeyError, match="'video'"):
        markers.modality_id("video")
    prefix = compose(audio, markers=markers)
    with pytest.raises(ValueError, match=r"need 17 positions, more than model\.max_seq_len=16"):
        generate_after_prefix(net, prefix, text_ids(2, 2), 8, markers=markers)
    small, _ = tiny_model(max_seq_len=6)
    with pytest.raises(ValueError, match=r"prefix has 8 tokens, longer than model\.max_seq_len=6"):
        generate_after_prefix(small, prefix, text_ids(2, 0), 1, markers=markers)
    cache = net.backbone.new_cache(2, 16)
    net.backbone(compose(audio, markers=markers), causal=True, cache=cache)
    with pytest.raises(ValueError, match="prefix tokens arrived after 8 cached positions"):
        net.backbone(prefix, causal=True, cache=cache)
