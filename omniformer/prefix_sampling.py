"""Writing text after a prefix: prefill a mixed sequence once, then decode text with the KV cache.

The prefix (audio frames, image patches, with their markers: :func:`omniformer.sequence.compose`) and
any text prompt are prefilled in one backbone call, the prefix read bidirectionally; each new token
then costs one position, at the rotary position after the row's last token. Sampling itself
(greedy, temperature, top-k, top-p) is :func:`omniformer.sampling.sample_next`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from omniformer.model import OmniModel
from omniformer.sampling import check_sampling, sample_next
from omniformer.sequence import SegmentMarkers, concat, next_positions, place
from omniformer.tokens import Tokens


def check_room(prefix_len: int, prompt_len: int, max_new_tokens: int, max_seq_len: int) -> None:
    """One clear error when a prefix, prompt and new tokens do not fit in ``model.max_seq_len``."""
    if prefix_len > max_seq_len:
        raise ValueError(
            f"the prefix has {prefix_len} tokens, longer than model.max_seq_len={max_seq_len}; "
            "use a shorter clip or image, or a larger model.max_seq_len"
        )
    needed = prefix_len + prompt_len + max(max_new_tokens - 1, 0)
    if needed > max_seq_len:
        raise ValueError(
            f"a prefix of {prefix_len} tokens, a prompt of {prompt_len} and max_new_tokens={max_new_tokens} "
            f"need {needed} positions, more than model.max_seq_len={max_seq_len}; "
            "generate fewer tokens or use a larger model.max_seq_len"
        )


@torch.no_grad()
def generate_after_prefix(
    net: OmniModel,
    prefix: Tokens,
    text_ids: Tensor,
    max_new_tokens: int,
    *,
    markers: SegmentMarkers,
    temperature: float = 0.0,
    top_k: int | None = None,
    text_modality: str = "text",
    head: str = "lm",
    stop_id: int | None = None,
    generator: torch.Generator | None = None,
    top_p: float | None = None,
) -> Tensor:
    """Text ids written after ``prefix``: ``text_ids`` (``B×L`` prompt, ``L`` may be 0) and up to
    ``max_new_tokens`` sampled ids, ``B×(L+new)``.

    Args:
        net: the model; its ``text_modality`` tokenizer embeds ids, its ``head`` scores them.
        prefix: the composed prefix (:func:`omniformer.sequence.compose` of prefix segments), with
            positions and, for variable-length prefixes, a padding mask.
        text_ids: the text prompt every row continues; with ``L = 0`` the first id is predicted from
            the prefix's last position.
        max_new_tokens: how many ids to sample at most.
        markers: the sequence markers that name ``text_modality``'s id.
        temperature: 0 = greedy; otherwise sampling at this temperature.
        top_k: sample among the ``k`` most likely ids (``None`` or 0 = all).
        top_p: then among the most likely ids holding this probability mass (``None`` or 1 = all).
        stop_id: an id that ends a row (e.g. end of text); rows that ended repeat it, and generation
            stops once every row has.
        generator: random generator for sampling.
    """
    if text_ids.ndim != 2 or text_ids.shape[0] != prefix.x.shape[0]:
        raise ValueError(
            f"text_ids must be B×L with B={prefix.x.shape[0]} rows like the prefix, "
            f"got shape {tuple(text_ids.shape)}"
        )
    check_sampling(temperature, top_k, max_new_tokens, top_p)
    backbone, tokenizer = net.backbone, net.tokenizers[text_modality]
    prompt_len = text_ids.shape[1]
    check_room(prefix.x.shape[1], prompt_len, max_new_tokens, backbone.max_seq_len)
    was_training = net.training
    net.eval()
    offset = next_positions(prefix)
    text_id = markers.modality_id(text_modality)

    def text_tokens(ids: Tensor, start: int) -> Tokens:
        return place(tokenizer(ids, start_pos=start), offset=offset, modality_id=text_id, prefix=False)

    sequence = concat([prefix, text_tokens(text_ids, 0)])
    cache = backbone.new_cache(text_ids.shape[0], sequence.x.shape[1] + max(max_new_tokens - 1, 0))
    logits = net.heads[head](backbone(sequence, causal=True, cache=cache), sequence)[:, -1]
    out, done = text_ids, torch.zeros(text_ids.shape[0], dtype=torch.bool, device=text_ids.device)
    for step in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_k, generator, top_p)
        if stop_id is not None:
            nxt = nxt.masked_fill(done[:, None], stop_id)
            done = done | (nxt[:, 0] == stop_id)
        out = torch.cat((out, nxt), dim=1)
        if step == max_new_tokens - 1 or (stop_id is not None and bool(done.all())):
            break
        new = text_tokens(nxt, prompt_len + step)
        logits = net.heads[head](backbone(new, causal=True, cache=cache), new)[:, -1]
    net.train(was_training)
    return out


@torch.no_grad()
def prefix_logits(net: OmniModel, prefix: Tokens, head: str = "lm") -> Tensor:
    """The ``B×vocab`` logits of the first text id after ``prefix`` (what generation samples first)."""
    return net.heads[head](net.backbone(prefix, causal=True), prefix)[:, -1]


def text_after_prefix(
    net: OmniModel,
    prefix: Tokens,
    prompt_ids: Tensor,
    max_new_tokens: int,
    *,
    stop_id: int,
    text_modality: str = "text",
    head: str = "lm",
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
) -> list[list[int]]:
    """Per row of ``prefix``, the ids written after it and the 1-D ``prompt_ids`` (every row's prompt;
    may be empty), without the prompt and cut before ``stop_id``: what a prefix LM's generation
    returns to validation scoring and to ``omniformer-generate`` alike. Sampling (``temperature > 0``)
    draws from a generator seeded with ``seed``."""
    device = prefix.x.device
    generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    out = generate_after_prefix(
        net,
        prefix,
        prompt_ids.to(device)[None].expand(prefix.x.shape[0], -1),
        max_new_tokens,
        markers=net.markers,
        temperature=temperature,
        top_k=top_k or None,
        top_p=top_p,
        text_modality=text_modality,
        head=head,
        stop_id=stop_id,
        generator=generator,
    )
    rows = out[:, prompt_ids.shape[0] :].tolist()
    return [ids[: ids.index(stop_id)] if stop_id in ids else ids for ids in rows]
