"""Autoregressive sampling from an :class:`OmniModel` with a KV cache: temperature, top-k and nucleus
(top-p, Holtzman et al. 2020, "The Curious Case of Neural Text Degeneration") sampling, and text
streamed as it is drawn, ending before a stop string (:mod:`omniformer.text_stream`)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor

from omniformer.model import OmniModel
from omniformer.text_stream import TextStream, check_stop


def check_sampling(
    temperature: float, top_k: int | None, max_new_tokens: int = 0, top_p: float | None = None
) -> None:
    """One clear error naming the setting when ``temperature``, ``top_k``, ``max_new_tokens`` or
    ``top_p`` is invalid.

    ``temperature`` >= 0 (0 = greedy); ``top_k`` a non-negative int, or null (0 and null both mean
    the full distribution, as in most samplers); ``max_new_tokens`` >= 0; ``top_p`` in (0, 1], or
    null (1 and null both mean the full distribution).
    """
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"temperature={temperature!r}: give a number >= 0 (0 = greedy)")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature={temperature!r}: must be >= 0 (0 = greedy, 1 = the model's own)")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise ValueError(
            f"top_k={top_k!r}: give a whole number >= 1 of most likely tokens to sample from, "
            "or 0 / null for the full distribution"
        )
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens!r}: give a whole number >= 0")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(
            f"top_p={top_p!r}: give the probability mass to sample from, in (0, 1] (e.g. 0.9), "
            "or 1 / null for the full distribution"
        )


def check_generation(
    temperature: float,
    top_k: int | None,
    max_new_tokens: int,
    num_samples: int,
    context_len: int | None,
    top_p: float | None = None,
) -> None:
    """One clear error naming the setting when a sampling setting is invalid."""
    check_sampling(temperature, top_k, max_new_tokens, top_p)
    if context_len is not None and (
        isinstance(context_len, bool) or not isinstance(context_len, int) or context_len < 2
    ):
        raise ValueError(
            f"context_len={context_len!r}: give a whole number of tokens >= 2 (the model needs two to "
            "predict from), or null for the training block size"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: give a whole number >= 1")


def sample_next(
    logits: Tensor, temperature: float, top_k: int | None, generator=None, top_p: float | None = None
) -> Tensor:
    """Draw one id per row from ``logits`` (``B×V``); ``temperature=0`` picks the arg-max.

    ``top_k`` keeps the k most likely ids; ``None``, 0, or k >= V keep the full distribution.
    ``top_p`` then keeps the fewest most likely ids whose probabilities (after temperature and top-k)
    sum to at least ``top_p``; ``None`` or 1 keep them all.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ranked, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(ranked, dim=-1)
        # an id is dropped when the ids ranked above it already hold top_p: the first always stays
        beyond = probs.cumsum(dim=-1) - probs >= top_p
        ranked = ranked.masked_fill(beyond, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, ranked)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def generate_ids(
    net: OmniModel,
    ids: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    modality: str = "text",
    head: str = "lm",
    generator: torch.Generator | None = None,
    window: int | None = None,
    top_p: float | None = None,
) -> Iterator[Tensor]:
    """The ``B×1`` ids sampled after ``ids`` (``B×N``), one at a time, up to ``max_new_tokens``.

    The model sees at most ``window`` tokens (default: its ``max_seq_len``; pass the training block
    size, since positions beyond it were never trained). Keys and values are cached, so each new
    token costs one position of compute; when the cache fills, it is rebuilt from the most recent
    half window. Arguments are checked when the first id is asked for.
    """
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate needs a non-empty B×N prompt, got shape {tuple(ids.shape)}")
    check_sampling(temperature, top_k, max_new_tokens, top_p)
    backbone = net.backbone
    window = min(window or backbone.max_seq_len, backbone.max_seq_len)
    if window < 2:
        raise ValueError(f"generation needs a context window of at least 2 tokens, got {window}")
    was_training = net.training
    net.eval()
    try:
        out = ids
        context = ids[:, -window:]
        cache = backbone.new_cache(ids.shape[0], window)
        logits = net(modality, head, context, causal=True, cache=cache)[:, -1]
        for _ in range(max_new_tokens):
            nxt = sample_next(logits, temperature, top_k, generator, top_p)
            out = torch.cat((out, nxt), dim=1)
            yield nxt
            if cache.length >= window:  # full: restart from the recent half window
                cache = backbone.new_cache(ids.shape[0], window)
                context = out[:, -(window // 2) :]
                logits = net(modality, head, context, causal=True, cache=cache)[:, -1]
            else:
                logits = net(modality, head, nxt, causal=True, cache=cache, start_pos=cache.length)[:, -1]
    finally:
        net.train(was_training)


def generate(
    net: OmniModel,
    ids: Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    modality: str = "text",
    head: str = "lm",
    generator: torch.Generator | None = None,
    window: int | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Continue ``ids`` (``B×N``) by ``max_new_tokens`` sampled ids; returns ``B×(N+max_new_tokens)``
    (:func:`generate_ids`, all at once)."""
    steps = generate_ids(
        net, ids, max_new_tokens, temperature, top_k, modality, head, generator, window, top_p
    )
    return torch.cat((ids, *steps), dim=1)


class TextCodec(Protocol):
    """What sampling needs of a vocabulary: text to ids and back."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


def stream_text(
    net: OmniModel,
    vocab: TextCodec,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int = 0,
    modality: str = "text",
    head: str = "lm",
    window: int | None = None,
    *,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
) -> Iterator[str]:
    """The text sampled after ``prompt``, in pieces as it is drawn (one seeded draw); it ends after
    ``max_new_tokens`` tokens or before the first ``stop`` string in it. Settings and the prompt are
    checked here, before the first piece is asked for."""
    stops = check_stop(stop)
    check_sampling(temperature, top_k, max_new_tokens, top_p)
    device = next(net.parameters()).device
    ids = torch.as_tensor(vocab.encode(prompt), dtype=torch.long, device=device)[None]
    if ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens; give a non-empty prompt")
    generator = torch.Generator(device=device).manual_seed(seed)
    steps = generate_ids(
        net, ids, max_new_tokens, temperature, top_k, modality, head, generator, window, top_p
    )
    return _pieces(TextStream(vocab, stops), steps)


def _pieces(text: TextStream, steps: Iterator[Tensor]) -> Iterator[str]:
    with contextlib.closing(steps):  # a stop string ends sampling (and restores the train mode) at once
        for nxt in steps:
            piece = text.push(nxt[0].tolist())
            if piece:
                yield piece
            if text.stopped:
                return
    rest = text.finish()
    if rest:
        yield rest


def sample_text(
    net: OmniModel,
    vocab: TextCodec,
    prompt: str,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    seed: int = 0,
    modality: str = "text",
    head: str = "lm",
    window: int | None = None,
    *,
    top_p: float | None = None,
    stop: str | Sequence[str] | None = None,
) -> str:
    """``prompt`` and the text sampled after it (:func:`stream_text`, joined).

    The one sampling path of the end-of-fit sample, ``omniformer-generate`` (streamed or not) and
    ``omniformer.load(...).generate``: the same seed gives the same text from each.
    """
    pieces = stream_text(
        net,
        vocab,
        prompt,
        max_new_tokens,
        temperature,
        top_k,
        seed,
        modality,
        head,
        window,
        top_p=top_p,
        stop=stop,
    )
    return vocab.decode(vocab.encode(prompt)) + "".join(pieces)
