"""Keys and values of earlier calls, kept per layer for incremental decoding.

A decoder computes each position's keys and values once: the prompt (or a mixed sequence's prefix)
is prefilled in one call, then every new token attends to everything stored so far. The cache also
remembers which stored positions are padding, so a batch of variable-length prefixes keeps its
padding out of attention during decoding, too.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    """One layer's keys and values inside a :class:`KVCache`: what that layer's attention appends to."""

    def __init__(self, cache: KVCache, layer: int) -> None:
        self.cache, self.layer = cache, layer

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this call's ``k``/``v`` (``B×heads×n×head_dim``); return every key and value so far."""
        start = self.cache.length
        end = start + k.shape[2]
        keys, values = self.cache.keys[self.layer], self.cache.values[self.layer]
        keys[:, :, start:end] = k
        values[:, :, start:end] = v
        return keys[:, :, :end], values[:, :, :end]


class KVCache:
    """Pre-allocated keys and values of every layer, for incremental decoding.

    ``layers[i]`` is layer ``i``'s view; ``length`` counts the positions already stored, and
    :meth:`Backbone.forward` advances it once all layers have appended a call's positions.
    ``key_mask`` (``B×max_len`` bool, True = a real token) exists once a call has brought padding;
    until then every stored position is real.
    """

    def __init__(
        self, depth: int, batch: int, heads: int, head_dim: int, max_len: int, device, dtype
    ) -> None:
        shape = (depth, batch, heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0
        self.key_mask: Tensor | None = None
        self.layers = [LayerCache(self, layer) for layer in range(depth)]

    @property
    def max_len(self) -> int:
        """How many positions the cache can hold."""
        return self.keys.shape[3]

    def keys_mask(self, mask: Tensor | None, n: int) -> Tensor | None:
        """Record the padding ``mask`` (``B×n``; ``None`` = all real) of the ``n`` positions this call
        appends; return the mask over every key the call attends to, or ``None`` if all are real.
        """
        if mask is None and self.key_mask is None:
            return None
        if self.key_mask is None:
            self.key_mask = torch.ones(
                self.keys.shape[1], self.max_len, dtype=torch.bool, device=self.keys.device
            )
        start, end = self.length, self.length + n
        self.key_mask[:, start:end] = True if mask is None else mask.bool()
        return self.key_mask[:, :end]
