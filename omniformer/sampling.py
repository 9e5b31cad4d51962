"""Autoregressive sampling from an :class:`OmniModel` with a KV cache."""

from __future__ import annotations

import math
from typing import Protocol

import torch
from torch import Tensor

from omniformer.model import OmniModel


def check_sampling(temperature: float, top_k: int | None, max_new_tokens: int = 0) -> None:
    """One clear error naming the setting when ``temperature``, ``top_k`` or ``max_new_tokens`` is invalid.

    ``temperature`` >= 0 (0 = greedy); ``top_k`` a non-negative int, or null (0 and null both mean
    the full distribution, as in most samplers); ``max_new_tokens`` >= 0.
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


def sample_next(logits: Tensor, temperature: float, top_k: int | None, generator=None) -> Tensor:
    """Draw one id per row from ``logits`` (``B×V``); ``temperature=0`` picks the arg-max.

    ``top_k`` keeps the k most likely ids; ``None``, 0, or k >= V keep the full distribution.
    """
    if temperature <= 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
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
) -> Tensor:
    """Continue ``ids`` (``B×N``) by ``max_new_tokens`` sampled ids; returns ``B×(N+max_new_tokens)``.

    The model sees at most ``window`` tokens (default: its ``max_seq_len``; pass the training block
    size, since positions beyond it were never trained). Keys and values are cached, so each new
    token costs one position of compute; when the cache fills, it is rebuilt from the most recent
    half window.
    """
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ValueError(f"generate needs a non-empty B×N prompt, got shape {tuple(ids.shape)}")
    check_sampling(temperature, top_k, max_new_tokens)
    was_training = net.training
    net.eval()
    backbone = net.backbone
    window = min(window or backbone.max_seq_len, backbone.max_seq_len)
    if window < 2:
        raise ValueError(f"generation needs a context window of at least 2 tokens, got {window}")
    out = ids
    context = ids[:, -window:]
    cache = backbone.new_cache(ids.shape[0], window)
    logits = net(modality, head, context, causal=True, cache=cache)[:, -1]
    for _ in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_k, generator)
        out = torch.cat((out, nxt), dim=1)
        if cache.length >= window:  # full: restart from the recent half window
            cache = backbone.new_cache(ids.shape[0], window)
            context = out[:, -(window // 2) :]
            logits = net(modality, head, context, causal=True, cache=cache)[:, -1]
        else:
            logits = net(modality, head, nxt, causal=True, cache=cache, start_pos=cache.length)[:, -1]
    net.train(was_training)
    return out


class TextCodec(Protocol):
    """What sampling needs of a vocabulary: text to ids and back."""

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


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
) -> str:
    """``prompt`` and ``max_new_tokens`` tokens sampled after it, as text (one seeded draw).

    The one sampling path of the end-of-fit sample, ``omniformer-generate`` and
    ``omniformer.load(...).generate``: the same seed gives the same text from each.
    """
    device = next(net.parameters()).device
    ids = torch.as_tensor(vocab.encode(prompt), dtype=torch.long, device=device)[None]
    if ids.shape[1] == 0:
        raise ValueError("the prompt encodes to no tokens; give a non-empty prompt")
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(net, ids, max_new_tokens, temperature, top_k, modality, head, generator, window=window)
    return vocab.decode(out[0].tolist())
