"""The shared transformer backbone: pre-norm blocks on a residual stream.

One stack of blocks serves every modality. Tokenizers turn text, pixels or waveforms into
:class:`~omniformer.tokenizers.Tokens`; the backbone only sees ``B×N×D`` vectors, an optional
key-padding mask and optional 1-D positions, and knows nothing about where they came from.

The block is GPT-2's pre-norm block (Radford et al. 2019; Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture"): ``x + attn(norm(x))`` then ``x + mlp(norm(x))``,
so gradients flow through the identity path of the residual stream. Options: RMSNorm (Zhang &
Sennrich 2019), SwiGLU (Shazeer 2020), rotary positions (Su et al. 2021, RoFormer). Residual
output projections start near zero, so every block starts close to the identity and depth
"kicks in" during training.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniformer.tokenizers.tokens import Tokens

NormKind = Literal["layernorm", "rmsnorm"]
MLPKind = Literal["gelu", "swiglu"]
InitKind = Literal["scaled", "zero", "xavier"]


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned gain (Zhang & Sennrich 2019)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


def make_norm(kind: NormKind, dim: int, bias: bool, eps: float = 1e-5) -> nn.Module:
    """Return the normalisation layer named by ``kind``."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return RMSNorm(dim, eps=eps)
    raise ValueError(f"model.norm={kind!r} is not a norm; choose 'layernorm' or 'rmsnorm'")


class MLP(nn.Module):
    """Position-wise feed-forward network: GELU (GPT-2) or SwiGLU (Shazeer 2020)."""

    def __init__(self, dim: int, mlp_ratio: float, kind: MLPKind, dropout: float, bias: bool) -> None:
        super().__init__()
        hidden = int(mlp_ratio * dim)
        if kind == "swiglu":
            # 2/3 keeps the parameter count of a GELU MLP of the same ratio; multiple of 8 for
            # friendly matmul shapes.
            hidden = 8 * math.ceil(2 * hidden / 3 / 8)
            self.fc = nn.Linear(dim, 2 * hidden, bias=bias)
        elif kind == "gelu":
            self.fc = nn.Linear(dim, hidden, bias=bias)
        else:
            raise ValueError(f"model.mlp={kind!r} is not an MLP kind; choose 'gelu' or 'swiglu'")
        self.kind = kind
        self.proj = nn.Linear(hidden, dim, bias=bias)
        self.proj.is_residual_output = True
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        else:
            h = F.gelu(h)
        return self.drop(self.proj(h))


class Rotary(nn.Module):
    """Rotary position embedding (RoPE, Su et al. 2021) for 1-D token positions."""

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head dimension, got {head_dim}")
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(cos, sin)`` of shape ``B×1×N×head_dim/2`` for integer ``positions`` (``B×N``)."""
        angles = positions.to(self.inv_freq.dtype)[..., None] * self.inv_freq
        return angles.cos()[:, None], angles.sin()[:, None]


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate the two halves of each head's features by the position angles (GPT-NeoX layout)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return rotated.type_as(x)


class KVCache:
    """Pre-allocated keys and values of every layer, for incremental decoding.

    ``length`` counts the positions already stored; :meth:`Backbone.forward` appends the new
    positions of a call and advances it.
    """

    def __init__(
        self, depth: int, batch: int, heads: int, head_dim: int, max_len: int, device, dtype
    ) -> None:
        shape = (depth, batch, heads, max_len, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0

    @property
    def max_len(self) -> int:
        """How many positions the cache can hold."""
        return self.keys.shape[3]

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store this call's ``k``/``v`` for ``layer``; return all keys and values so far."""
        end = self.length + k.shape[2]
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / efficient kernels)."""

    def __init__(self, dim: int, heads: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = nn.Linear(dim, dim, bias=bias)
        self.proj.is_residual_output = True
        self.attn_dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor] | None,
        cache: KVCache | None,
        layer: int,
    ) -> Tensor:
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.append(layer, k, v)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, N, D)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float,
        mlp: MLPKind,
        norm: NormKind,
        dropout: float,
        bias: bool,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, bias)
        self.attn = SelfAttention(dim, heads, dropout, bias)
        self.norm2 = make_norm(norm, dim, bias)
        self.mlp = MLP(dim, mlp_ratio, mlp, dropout, bias)

    def forward(self, x: Tensor, **attention_args) -> Tensor:
        x = x + self.attn(self.norm1(x), **attention_args)
        return x + self.mlp(self.norm2(x))


class Backbone(nn.Module):
    """A stack of pre-norm blocks and a final norm, shared by every modality and task.

    Args:
        dim: width of the residual stream.
        depth: number of blocks.
        heads: attention heads; must divide ``dim``.
        mlp_ratio: MLP hidden width as a multiple of ``dim``.
        mlp: ``"gelu"`` or ``"swiglu"``.
        norm: ``"layernorm"`` or ``"rmsnorm"``.
        dropout: dropout on attention weights and residual branches.
        bias: biases in linear layers and LayerNorm.
        rope: rotate queries and keys by the tokens' 1-D ``positions`` when a tokenizer gives them.
        max_seq_len: the longest sequence (prompt plus cache) the model accepts.
        init: ``"scaled"`` (GPT-2: residual projections get std 0.02/sqrt(2·depth)), ``"zero"``
            (residual projections start at exactly zero, every block starts as the identity) or
            ``"xavier"`` (Glorot-uniform for every linear layer, as ViT / big_vision initialise; small
            image models trained from scratch learn far faster than with 0.02-std weights, which
            leave attention near uniform).
    """

    def __init__(
        self,
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        mlp: MLPKind = "gelu",
        norm: NormKind = "layernorm",
        dropout: float = 0.0,
        bias: bool = True,
        rope: bool = True,
        max_seq_len: int = 1024,
        init: InitKind = "scaled",
    ) -> None:
        super().__init__()
        if dim <= 0 or depth <= 0 or heads <= 0:
            raise ValueError(
                f"model.dim, model.depth and model.heads must be positive, got {dim}, {depth}, {heads}"
            )
        if dim % heads:
            raise ValueError(f"model.heads={heads} must divide model.dim={dim}")
        if init not in ("scaled", "zero", "xavier"):
            raise ValueError(
                f"model.init={init!r} is not an init scheme; choose 'scaled', 'zero' or 'xavier'"
            )
        self.dim, self.depth, self.heads, self.max_seq_len = dim, depth, heads, max_seq_len
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, mlp, norm, dropout, bias) for _ in range(depth)
        )
        self.norm = make_norm(norm, dim, bias)
        self.rotary = Rotary(dim // heads) if rope else None
        self._init_weights(init)

    def _init_weights(self, init: InitKind) -> None:
        residual_std = 0.02 / math.sqrt(2 * self.depth)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                if init == "xavier":
                    nn.init.xavier_uniform_(module.weight)
                elif getattr(module, "is_residual_output", False):
                    if init == "zero":
                        nn.init.zeros_(module.weight)
                    else:
                        nn.init.normal_(module.weight, std=residual_std)
                else:
                    nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def new_cache(self, batch: int, max_len: int | None = None, dtype=None) -> KVCache:
        """An empty KV cache for ``batch`` sequences of up to ``max_len`` positions."""
        ref = self.norm.weight
        return KVCache(
            self.depth,
            batch,
            self.heads,
            self.dim // self.heads,
            max_len or self.max_seq_len,
            ref.device,
            dtype or ref.dtype,
        )

    def forward(self, tokens: Tokens, causal: bool = False, cache: KVCache | None = None) -> Tensor:
        """Run the blocks on ``tokens``; return the normed residual stream (``B×N×D``).

        ``causal`` lets each position attend only to itself and earlier positions. ``cache``
        holds keys and values of earlier calls (incremental decoding) and is advanced in place.
        """
        x = tokens.x
        if x.ndim != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"backbone expects tokens of shape B×N×{self.dim}, got {tuple(x.shape)}")
        past = cache.length if cache is not None else 0
        n = x.shape[1]
        if past + n > self.max_seq_len:
            raise ValueError(
                f"sequence of {past + n} tokens exceeds model.max_seq_len={self.max_seq_len}; "
                "use shorter inputs or a larger model.max_seq_len"
            )
        if cache is not None and tokens.mask is not None:
            raise ValueError("key-padding masks are not supported together with a KV cache")
        if cache is not None and past + n > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {past + n} needed")
        attn_mask, is_causal = self._attention_mask(tokens.mask, causal, past, n, x.device)
        rotary = None
        if self.rotary is not None and tokens.positions is not None:
            rotary = self.rotary(tokens.positions)
        for layer, block in enumerate(self.blocks):
            x = block(x, attn_mask=attn_mask, is_causal=is_causal, rotary=rotary, cache=cache, layer=layer)
        if cache is not None:
            cache.length += n
        return self.norm(x)

    @staticmethod
    def _attention_mask(
        key_mask: Tensor | None, causal: bool, past: int, n: int, device
    ) -> tuple[Tensor | None, bool]:
        """Boolean ``B×1×N×K`` mask (True = may attend), or ``None`` plus SDPA's ``is_causal`` flag."""
        if key_mask is None:
            if not causal or n == 1:
                return None, False  # one new query may see every cached key
            if past == 0:
                return None, True  # SDPA's fused causal path
        allowed = None
        if causal:
            q_pos = torch.arange(past, past + n, device=device)
            allowed = torch.arange(past + n, device=device)[None, :] <= q_pos[:, None]
            allowed = allowed[None, None]
        if key_mask is not None:
            keys = key_mask[:, None, None, :].bool()
            allowed = keys if allowed is None else allowed & keys
            # A query that is itself padding may have no valid key; letting every query see
            # itself keeps softmax finite (padded outputs are ignored downstream).
            allowed = allowed | torch.eye(n, dtype=torch.bool, device=device)[None, None]
        return allowed, False

    def num_parameters(self) -> int:
        """Number of parameters in the backbone."""
        return sum(p.numel() for p in self.parameters())
