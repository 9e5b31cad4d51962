"""The modules that get exported: an :class:`~omniformer.model.OmniModel` task with plain-tensor inputs.

A deployed graph takes what a caller has before any omniformer code runs: pixels, a waveform, token
ids. Each wrapper here is a thin ``nn.Module`` around the trained ``net`` whose ``forward`` has only
tensor arguments and tensor outputs, so ``torch.export`` and ``torch.onnx.export(dynamo=True)`` can
trace it:

* :class:`ImageClassifierGraph`: ``pixels`` → ``logits``, optionally normalising ``[0, 1]`` pixels first.
* :class:`AudioClassifierGraph`: ``waveform`` + ``lengths`` → ``logits``; the log-mel front end runs inside
  the graph (the tokenizer's own ``MelSpectrogram``; ``torch.stft`` exports to both formats).
* :class:`TextClassifierGraph`: ``ids`` + ``lengths`` → ``logits``.
* :class:`LanguageModelGraph`: one decoding call with the KV cache as plain tensors, as Hugging Face's
  ``past_key_values`` graphs do: ``ids``, ``position_offset`` and each layer's past keys and values in,
  ``logits`` and each layer's keys and values (past plus new) out.

Every wrapper calls the model's own modules; the only code repeated from eager paths is what makes
them traceable (no Python ints read from tensors, no cache objects), and every export is checked
against eager PyTorch (:mod:`omniformer.graph_export.check`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from omniformer.model import OmniModel
from omniformer.tokens import Tokens


class ImageClassifierGraph(nn.Module):
    """``pixels`` (``B×C×H×W`` float) → class ``logits`` (``B×classes``).

    By default the pixels are what the data module's evaluation transforms produce (resized, scaled
    to ``[0, 1]`` and normalised with the dataset's mean and std). With ``mean`` and ``std`` the graph
    normalises itself and takes ``[0, 1]`` pixels instead.
    """

    input_names = ("pixels",)

    def __init__(
        self,
        net: OmniModel,
        modality: str,
        head: str,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.net, self.modality, self.head = net, modality, head
        self.normalise = mean is not None and std is not None
        if self.normalise:
            self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        if self.normalise:
            pixels = (pixels - self.mean) / self.std
        return self.net(self.modality, self.head, pixels)


class AudioClassifierGraph(nn.Module):
    """``waveform`` (``B×samples`` float, zero-padded) and ``lengths`` (``B`` int64 samples per clip) →
    class ``logits``; the log-mel spectrogram is computed inside the graph.

    The front end is the tokenizer's ``log_mel`` without its argument checks (which read tensor
    values into Python, which a graph cannot do): samples past each length are zeroed, the
    tokenizer's ``MelSpectrogram`` runs, then its ``tokens_from_log_mel``.
    """

    input_names = ("waveform", "lengths")

    def __init__(self, net: OmniModel, modality: str, head: str) -> None:
        super().__init__()
        self.net, self.modality, self.head = net, modality, head

    def forward(self, waveform: Tensor, lengths: Tensor) -> Tensor:
        tokenizer = self.net.tokenizers[self.modality]
        samples = torch.arange(waveform.shape[1], device=waveform.device)
        waveform = waveform * (samples[None, :] < lengths[:, None])
        mel = torch.log(tokenizer.melspec(waveform.float()) + 1e-6)
        tokens = tokenizer.tokens_from_log_mel(mel, tokenizer.frame_lengths(lengths))
        return self.net.heads[self.head](self.net.backbone(tokens), tokens)


class TextClassifierGraph(nn.Module):
    """``ids`` (``B×N`` int64, right-padded) and ``lengths`` (``B`` int64, real tokens per row) →
    ``logits``."""

    input_names = ("ids", "lengths")

    def __init__(self, net: OmniModel, modality: str, head: str) -> None:
        super().__init__()
        self.net, self.modality, self.head = net, modality, head

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        return self.net(self.modality, self.head, ids, lengths=lengths)


class GenericClassifierGraph(nn.Module):
    """One input tensor, as the tokenizer of ``modality`` reads it, → ``logits`` (plug-in tokenizers)."""

    input_names = ("inputs",)

    def __init__(self, net: OmniModel, modality: str, head: str) -> None:
        super().__init__()
        self.net, self.modality, self.head = net, modality, head

    def forward(self, inputs: Tensor) -> Tensor:
        return self.net(self.modality, self.head, inputs)


class _GrowingLayerCache:
    """One layer's cache for a graph: ``append`` concatenates the past and this call's keys/values
    (instead of writing into a preallocated buffer) and keeps the result as the layer's output."""

    def __init__(self, keys: Tensor, values: Tensor) -> None:
        self.keys, self.values = keys, values

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        self.keys = torch.cat((self.keys, k), dim=2)
        self.values = torch.cat((self.values, v), dim=2)
        return self.keys, self.values


class LanguageModelGraph(nn.Module):
    """One causal decoding call with the KV cache as plain tensors.

    Inputs: ``ids`` (``B×T`` int64); ``position_offset`` (int64 scalar, the position of ``ids[:, 0]``:
    the number of cached positions, 0 for the prompt); ``past_keys`` and ``past_values``, one
    ``B×heads×P×head_dim`` tensor per layer (``P = 0`` for the prompt). Outputs: ``logits``
    (``B×T×vocab``) and, per layer, ``present`` keys and values (``B×heads×(P+T)×head_dim``) to pass
    back in as the next call's past.

    Every query attends to all ``P`` cached positions and causally within ``ids``, as
    :func:`omniformer.sampling.generate` does with its :class:`~omniformer.backbone.KVCache`.
    """

    def __init__(self, net: OmniModel, modality: str, head: str) -> None:
        super().__init__()
        self.net, self.modality, self.head = net, modality, head

    def forward(
        self, ids: Tensor, position_offset: Tensor, past_keys: list[Tensor], past_values: list[Tensor]
    ) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        tokenizer, backbone = self.net.tokenizers[self.modality], self.net.backbone
        n, past = ids.shape[1], past_keys[0].shape[2]
        steps = torch.arange(n, device=ids.device)
        positions = (position_offset + steps).expand(ids.shape[0], n)
        x = tokenizer.embedding(ids)
        if tokenizer.position_embedding is not None:
            x = x + tokenizer.position_embedding(positions[0])
        tokens = Tokens(tokenizer.drop(x), positions=positions)
        # True = may attend: every cached key, and the new keys up to the query's own position.
        keys = torch.arange(past + n, device=ids.device)
        attn_mask = (keys[None, :] <= (past + steps)[:, None])[None, None]
        rotary = backbone.rotary(positions) if backbone.rotary is not None else None
        caches = [_GrowingLayerCache(k, v) for k, v in zip(past_keys, past_values)]
        h = tokens.x
        for block, cache in zip(backbone.blocks, caches):
            h = block(h, attn_mask=attn_mask, is_causal=False, rotary=rotary, cache=cache)
        logits = self.net.heads[self.head](backbone.norm(h), tokens)
        return logits, [c.keys for c in caches], [c.values for c in caches]
