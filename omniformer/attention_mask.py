"""Which keys each query may attend to: one boolean mask per batch, for ``scaled_dot_product_attention``.

Three rules combine, none of them about modalities:

* **causal**: a query sees itself and earlier positions (GPT);
* **prefix-LM** (Raffel et al. 2020, T5's "prefix LM"; Wang et al. 2022, "What Language Model
  Architecture and Pretraining Objective Work Best for Zero-Shot Generalization?"): tokens flagged
  as prefix also see every other prefix token, so a prefix is read bidirectionally while what follows
  it is causal. A prefix token never sees a later non-prefix token;
* **padding**: a key that is padding is never attended to.
"""

from __future__ import annotations

import torch
from torch import Tensor


def attention_rule(
    *, key_mask: Tensor | None, prefix: Tensor | None, causal: bool, past: int, n: int, device
) -> tuple[Tensor | None, bool]:
    """Boolean ``B×1×n×(past+n)`` mask (True = may attend), or ``None`` plus SDPA's ``is_causal`` flag.

    Args:
        key_mask: ``B×(past+n)`` bool, True where a key is a real token; ``None`` = all real.
        prefix: ``B×n`` bool, True where a query/key belongs to the bidirectional prefix (only with
            ``past == 0``: a prefix is attended as a whole, so it is never split across calls);
            ignored unless ``causal``.
        causal: queries see only themselves and earlier positions (outside the prefix).
        past: positions already in the KV cache, before this call's ``n`` queries.
        n: queries in this call.
    """
    if key_mask is None and prefix is None:
        if not causal or n == 1:
            return None, False  # one new query may see every cached key
        if past == 0:
            return None, True  # SDPA's fused causal path
    allowed = None
    q_pos = torch.arange(past, past + n, device=device)
    k_pos = torch.arange(past + n, device=device)
    if causal:
        allowed = (k_pos[None, :] <= q_pos[:, None])[None, None]
        if prefix is not None:
            flags = prefix.bool()
            allowed = allowed | (flags[:, None, :, None] & flags[:, None, None, :])
    if key_mask is not None:
        keys = key_mask[:, None, None, :].bool()
        allowed = keys if allowed is None else allowed & keys
        # A query that is itself padding may have no valid key; letting every query see
        # itself keeps softmax finite (padded outputs are ignored downstream).
        allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None, None]
    return allowed, False
