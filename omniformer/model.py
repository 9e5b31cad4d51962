"""OmniModel: tokenizers by modality, one shared backbone, heads by task. Nothing else."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from omniformer.backbone import Backbone, KVCache


class OmniModel(nn.Module):
    """A tokenizer per modality feeding one :class:`Backbone`, and a head per task.

    Args:
        tokenizers: modules that turn a raw batch of one modality into ``Tokens``, by modality name.
        backbone: the shared transformer.
        heads: modules that map the residual stream to a task's output, by task name. A head with a
            ``tie_to`` attribute naming a tokenizer shares that tokenizer's embedding weight.
        markers: the learned begin/end vectors of mixed sequences
            (:class:`~omniformer.sequence.SegmentMarkers`), for tasks that read a prefix of one
            modality and write text; ``None`` (the default) adds nothing to the state dict.
    """

    def __init__(
        self,
        tokenizers: Mapping[str, nn.Module],
        backbone: Backbone,
        heads: Mapping[str, nn.Module],
        markers: nn.Module | None = None,
    ):
        super().__init__()
        self.tokenizers = nn.ModuleDict(dict(tokenizers))
        self.backbone = backbone
        self.heads = nn.ModuleDict(dict(heads))
        # Registered after the other parts, and only when given: older state dicts load unchanged.
        self.markers = markers
        for name, head in self.heads.items():
            tie_to = getattr(head, "tie_to", None)
            if tie_to is None:
                continue
            if tie_to not in self.tokenizers:
                raise ValueError(f"head {name!r} ties to tokenizer {tie_to!r}, which is not configured")
            head.tie(self.tokenizers[tie_to].embedding)

    def forward(
        self,
        modality: str,
        head: str,
        inputs: Tensor,
        *,
        causal: bool = False,
        cache: KVCache | None = None,
        **tokenizer_args,
    ) -> Tensor:
        """Tokenize ``inputs`` as ``modality``, run the backbone, and apply the ``head`` named."""
        if modality not in self.tokenizers:
            raise KeyError(f"no tokenizer for modality {modality!r}; configured: {sorted(self.tokenizers)}")
        if head not in self.heads:
            raise KeyError(f"no head named {head!r}; configured: {sorted(self.heads)}")
        tokens = self.tokenizers[modality](inputs, **tokenizer_args)
        h = self.backbone(tokens, causal=causal, cache=cache)
        return self.heads[head](h, tokens)
