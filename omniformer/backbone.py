"""The shared transformer backbone: pre-norm blocks on a residual stream.

One stack of blocks serves every modality. Tokenizers turn text, pixels or waveforms into
:class:`~omniformer.tokens.Tokens`; the backbone only sees ``B×N×D`` vectors, an optional
key-padding mask, optional 1-D positions and optional prefix flags (a bidirectional prefix before a
causal continuation, :mod:`omniformer.attention_mask`), and knows nothing about where they came from.

The block is GPT-2's pre-norm block (Radford et al. 2019; Xiong et al. 2020, "On Layer
Normalization in the Transformer Architecture"): ``x + attn(norm(x))`` then ``x + mlp(norm(x))``,
so gradients flow through the identity path of the residual stream. Options: RMSNorm (Zhang &
Sennrich 2019), SwiGLU (Shazeer 2020), rotary positions (Su et al. 2021, RoFormer). Residual
output projections start near zero, so every block starts close to the identity and depth
"kicks in" during training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from omniformer.argument_checks import require_valid
from omniformer.attention_mask import attention_rule
from omniformer.kv_cache import KVCache, LayerCache
from omniformer.positions import Rotary, apply_rotary
from omniformer.tokens import Tokens

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
    raise ValueError(f"norm={kind!r} is not a norm; choose 'layernorm' or 'rmsnorm'")


class MLP(nn.Module):
    """Position-wise feed-forward network: GELU (GPT-2) or SwiGLU (Shazeer 2020)."""

    def __init__(self, dim: int, *, mlp_ratio: float, kind: MLPKind, dropout: float, bias: bool) -> None:
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
            raise ValueError(f"mlp={kind!r} is not an MLP kind; choose 'gelu' or 'swiglu'")
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


class SelfAttention(nn.Module):
    """Multi-head self-attention through ``F.scaled_dot_product_attention`` (flash / efficient kernels).

    With ``need_weights`` it computes the same attention explicitly and also returns the
    probabilities (``B×heads×N×K``), for figures and analysis; training never asks for them.
    """

    def __init__(self, dim: int, *, heads: int, dropout: float, bias: bool) -> None:
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
        *,
        attn_mask: Tensor | None,
        is_causal: bool,
        rotary: tuple[Tensor, Tensor] | None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """Attend over ``x`` (and the cached keys); return the output and, if asked, the weights."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        if cache is not None:
            k, v = cache.append(k, v)
        dropout = self.attn_dropout if self.training else 0.0
        weights = None
        if need_weights:
            y, weights = _explicit_attention(q, k, v, attn_mask, is_causal, dropout)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attn_mask, dropout_p=dropout, is_causal=is_causal
            )
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, N, D))), weights


def _explicit_attention(
    q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool, dropout: float
) -> tuple[Tensor, Tensor]:
    """What SDPA computes (in fp32), with the probabilities kept: ``(output, weights)``."""
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if is_causal:
        n, m = scores.shape[-2:]
        attn_mask = torch.ones(n, m, dtype=torch.bool, device=q.device).tril(m - n)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    kept = F.dropout(weights, dropout) if dropout else weights
    return (kept @ v.float()).to(v.dtype), weights


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(
        self,
        dim: int,
        *,
        heads: int,
        mlp_ratio: float,
        mlp: MLPKind,
        norm: NormKind,
        dropout: float,
        bias: bool,
    ) -> None:
        super().__init__()
        self.norm1 = make_norm(norm, dim, bias)
        self.attn = SelfAttention(dim, heads=heads, dropout=dropout, bias=bias)
        self.norm2 = make_norm(norm, dim, bias)
        self.mlp = MLP(dim, mlp_ratio=mlp_ratio, kind=mlp, dropout=dropout, bias=bias)

    def forward(
        self,
        x: Tensor,
        *,
        attn_mask: Tensor | None = None,
        is_causal: bool = False,
        rotary: tuple[Tensor, Tensor] | None = None,
        cache: LayerCache | None = None,
        need_weights: bool = False,
    ) -> Tensor | tuple[Tensor, Tensor]:
        """The block's output; with ``need_weights``, ``(output, attention weights)``."""
        attended, weights = self.attn(
            self.norm1(x),
            attn_mask=attn_mask,
            is_causal=is_causal,
            rotary=rotary,
            cache=cache,
            need_weights=need_weights,
        )
        x = x + attended
        x = x + self.mlp(self.norm2(x))
        return (x, weights) if need_weights else x


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
        *,
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
        require_valid(self.check_config, dim=dim, depth=depth, heads=heads, rope=rope, init=init)
        self.dim, self.depth, self.heads, self.max_seq_len = dim, depth, heads, max_seq_len
        self.blocks = nn.ModuleList(
            Block(dim, heads=heads, mlp_ratio=mlp_ratio, mlp=mlp, norm=norm, dropout=dropout, bias=bias)
            for _ in range(depth)
        )
        self.norm = make_norm(norm, dim, bias)
        self.rotary = Rotary(dim // heads) if rope else None
        self._init_weights(init)

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        """The rules among the arguments in ``args`` (see :mod:`omniformer.argument_checks`)."""
        sizes = {k: args[k] for k in ("dim", "depth", "heads") if isinstance(args.get(k), int)}
        problems = [f"{{{k}}} must be positive" for k, v in sizes.items() if v <= 0]
        dim, heads = sizes.get("dim"), sizes.get("heads")
        if not problems and dim is not None and heads is not None:
            if dim % heads:
                problems.append("{heads} must divide {dim}")
            elif args.get("rope") and (dim // heads) % 2:
                problems.append(
                    "{dim}, {heads}: rotary positions ({rope}) need an even head size, got "
                    + str(dim // heads)
                )
        if args.get("init", "scaled") not in ("scaled", "zero", "xavier"):
            problems.append("{init} is not an init scheme; choose 'scaled', 'zero' or 'xavier'")
        return problems

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

    def forward(
        self,
        tokens: Tokens,
        causal: bool = False,
        cache: KVCache | None = None,
        return_attention: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        """Run the blocks on ``tokens``; return the normed residual stream (``B×N×D``).

        ``causal`` lets each position attend only to itself and earlier positions, except that tokens
        flagged in ``tokens.prefix`` also see each other (prefix-LM: a bidirectional prefix, then a
        causal continuation). Padding (``tokens.mask``) is never attended to. ``cache`` holds keys,
        values and padding of earlier calls (incremental decoding) and is advanced in place; a
        prefix arrives whole in the cache's first call. ``return_attention`` also returns every
        block's attention probabilities (``B×heads×N×K`` each, computed explicitly instead of by
        the fused kernel).
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
        if cache is not None and past + n > cache.max_len:
            raise ValueError(f"KV cache holds {cache.max_len} positions, {past + n} needed")
        prefix = tokens.prefix
        if prefix is not None and past > 0:
            if bool(prefix.any()):
                raise ValueError(
                    f"prefix tokens arrived after {past} cached positions; a prefix is read "
                    "bidirectionally, so prefill it whole in the cache's first call"
                )
            prefix = None
        key_mask = cache.keys_mask(tokens.mask, n) if cache is not None else tokens.mask
        attn_mask, is_causal = attention_rule(
            key_mask=key_mask, prefix=prefix, causal=causal, past=past, n=n, device=x.device
        )
        rotary = None
        if self.rotary is not None and tokens.positions is not None:
            rotary = self.rotary(tokens.positions)
        shared = {"attn_mask": attn_mask, "is_causal": is_causal, "rotary": rotary}
        attention: list[Tensor] = []
        for layer, block in enumerate(self.blocks):
            layer_cache = cache.layers[layer] if cache is not None else None
            if return_attention:
                x, weights = block(x, **shared, cache=layer_cache, need_weights=True)
                attention.append(weights)
            else:
                x = block(x, **shared, cache=layer_cache)
        if cache is not None:
            cache.length += n
        x = self.norm(x)
        return (x, attention) if return_attention else x

    def num_parameters(self) -> int:
        """Number of parameters in the backbone."""
        return sum(p.numel() for p in self.parameters())
