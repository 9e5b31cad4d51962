"""Model FLOPs per token from the architecture, and MFU (model FLOPs utilisation).

The formula is the one of PaLM (Chowdhery et al. 2022, appendix B) and nanoGPT's ``estimate_mfu``:

    training FLOPs per token  = 6·N + 12·L·D·T
    inference FLOPs per token = 2·N +  4·L·D·T

* ``N`` — the weights that take part in a matrix product for every token: every ``nn.Linear`` and
  ``nn.Conv*`` weight of the model (attention q/k/v/out, MLP, patch or frame embeddings, the LM head
  even when it is tied to the embedding table). Embedding *lookups*, biases, norm gains and rotary
  tables do no matmul and are left out. A forward pass costs 2 FLOPs (multiply + add) per weight per
  token; the backward pass twice that (gradients for activations and for weights), hence 6·N.
* ``12·L·D·T`` — attention scores ``QKᵀ`` and the weighted sum ``AV``: per layer and token
  ``2·T·D`` FLOPs each in the forward pass (``L`` layers, width ``D``, ``T`` tokens attended), times
  3 for forward + backward. Like PaLM and nanoGPT it counts the full ``T×T`` score matrix even for
  causal attention, so MFU figures are comparable with theirs (a causal kernel skips about half).

MFU is achieved model FLOPs per second over a peak: here the peak is *measured* on the same machine
with a large matrix product (:func:`benchmarks.machine.measure_peak_flops`), not a datasheet
number, so MFU says how much of what this machine really does on matmuls the training step reaches.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from omniformer.backbone import Backbone


def matmul_parameters(module: nn.Module) -> int:
    """``N``: elements of every distinct ``nn.Linear`` / ``nn.Conv*`` weight in ``module``.

    A weight shared by two layers (an LM head tied to the embedding) counts once per *use as a
    matmul*: the embedding table is a lookup, the tied head a matmul, so the shared tensor counts once.
    """
    seen: set[int] = set()
    total = 0
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            weight = layer.weight
            if id(weight) not in seen:
                seen.add(id(weight))
                total += weight.numel()
    return total


def flops_per_token(n_matmul: int, depth: int, dim: int, seq_len: int, training: bool = True) -> int:
    """Model FLOPs per token: ``6N + 12·L·D·T`` for training, ``2N + 4·L·D·T`` for a forward pass.

    Args:
        n_matmul: ``N``, weights used in a matrix product per token (:func:`matmul_parameters`).
        depth: number of transformer blocks ``L``.
        dim: width of the residual stream ``D``.
        seq_len: tokens per sequence attended over ``T``.
        training: forward + backward (``True``) or forward only.
    """
    if min(n_matmul, depth, dim, seq_len) < 0:
        raise ValueError(f"FLOPs need non-negative sizes, got N={n_matmul}, L={depth}, D={dim}, T={seq_len}")
    forward = 2 * n_matmul + 4 * depth * dim * seq_len
    return 3 * forward if training else forward


def model_flops_per_token(model: nn.Module, backbone: Backbone, seq_len: int, training: bool = True) -> int:
    """:func:`flops_per_token` of a whole model whose transformer is ``backbone``."""
    return flops_per_token(matmul_parameters(model), backbone.depth, backbone.dim, seq_len, training)


def mfu(flops_per_token_: float, tokens_per_second: float, peak_flops_per_second: float) -> float:
    """Model FLOPs utilisation: achieved model FLOPs per second over the measured peak."""
    if peak_flops_per_second <= 0:
        raise ValueError(f"the peak must be positive to compute MFU, got {peak_flops_per_second}")
    return flops_per_token_ * tokens_per_second / peak_flops_per_second


def counted_flops(step: Callable[[], object]) -> int:
    """FLOPs that ``torch.utils.flop_counter`` counts while ``step()`` runs (a cross-check).

    Attention runs through SDPA's math backend so its matmuls are visible to the counter (the fused
    CPU kernels carry no FLOP formula); the counter, like the formula above, charges full attention.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())
