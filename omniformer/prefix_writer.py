"""Writing a prefix LM's text after media it has read: the prompt as ids of its vocabulary, each
prefix checked against ``model.max_seq_len``, the batch padded with its padding masked, and the text
generated with the KV cache up to end of text (:func:`~omniformer.prefix_sampling.text_after_prefix`).

:class:`omniformer.inference.Model` uses it for ``generate(audio=... | image=...)`` and ``transcribe``;
reading files into tensors is :mod:`omniformer.prefix_files`' business.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Union

import torch
from torch import Tensor, nn

from omniformer.prefix_files import MediaReading, media_batch

#: A prefix LM's input: a file, or media already read (a 1-D waveform at the model's rate, or a
#: ``C×H×W`` image as its data module gives it).
MediaInput = Union[str, Path, Tensor]


class PrefixWriter:
    """Writes the text after each of a batch of media, as a trained prefix LM does.

    Args:
        net: the prefix LM's :class:`~omniformer.model.OmniModel` (eval mode).
        vocab: the vocabulary its text ids belong to.
        reading: how its media were read (``media.json``): the padding multiple of image widths.
        modality: the prefix modality (``audio``, ``image`` or a plug-in's).
        source: the model folder or checkpoint, named in errors.
        eos_id: the end-of-text id; writing stops there.
        head: the head that scores the next id.
        text_modality: the tokenizer that embeds text ids.
        longest_text: the longest training text in ids (end included), the default length.
    """

    def __init__(
        self,
        net: nn.Module,
        vocab,
        reading: MediaReading,
        modality: str,
        *,
        source: str | Path,
        eos_id: int,
        head: str,
        text_modality: str = "text",
        longest_text: int | None = None,
    ) -> None:
        self.net, self.vocab, self.reading, self.modality = net, vocab, reading, modality
        self.source, self.eos_id, self.head = source, eos_id, head
        self.text_modality, self.longest_text = text_modality, longest_text

    def prompt_ids(self, prompt: str) -> Tensor:
        """``prompt`` as ids of the model's vocabulary; one error naming a character it lacks."""
        from omniformer.tokenizers.vocab import UnknownCharacterError

        try:
            return torch.from_numpy(self.vocab.encode(prompt)).long()
        except UnknownCharacterError as err:
            known = "".join(self.vocab.decode(range(self.vocab.size)))
            raise ValueError(
                f"prompt character {err.char!r} (at {err.index} of {prompt!r}) is not in the vocabulary "
                f"of {self.source}, which has only {known!r}"
            ) from None

    def prefix_length(self, item: Tensor, name: str) -> int:
        """Tokens of ``item``'s prefix, markers included (0 for a plug-in tokenizer, whose composed
        prefix generation checks); an error naming ``name`` above ``model.max_seq_len``."""
        tokenizer = self.net.tokenizers[self.modality]
        if self.modality == "audio" and hasattr(tokenizer, "num_tokens"):
            tokens = tokenizer.num_tokens(int(item.shape[-1]))
        elif self.modality == "image" and hasattr(tokenizer, "grid_for"):
            multiple = self.reading.patch_size
            width = -(-int(item.shape[-1]) // multiple) * multiple
            rows, cols = tokenizer.grid_for(int(item.shape[-2]), width)
            tokens = rows * cols + int(bool(getattr(tokenizer, "has_cls", False)))
        else:
            return 0
        tokens += 2 if self.net.markers is not None and self.net.markers.marks(self.modality) else 0
        limit = self.net.backbone.max_seq_len
        if tokens > limit:
            raise ValueError(
                f"{name}: its {self.modality} prefix is {tokens} tokens, more than model.max_seq_len="
                f"{limit} that {self.source} was built for; give a shorter "
                f"{'clip' if self.modality == 'audio' else 'image'}"
            )
        return tokens

    @torch.no_grad()
    def write(
        self,
        items: Sequence[Tensor],
        names: Sequence[MediaInput],
        prompt: str,
        max_new_tokens: int | None,
        temperature: float,
        top_k: int | None,
        seed: int,
        top_p: float | None = None,
    ) -> list[str]:
        """Per media item (read already; ``names`` are what errors call them), the text written after
        its prefix and ``prompt`` (without the prompt), up to end of text; ``max_new_tokens`` ``None``
        is the longest training text, as far as the sequence has room."""
        from omniformer.prefix_inputs import media_prefix
        from omniformer.prefix_sampling import text_after_prefix

        prompt_ids = self.prompt_ids(prompt)
        for index, (name, item) in enumerate(zip(names, items)):
            self.prefix_length(item, str(name) if not isinstance(name, Tensor) else f"input {index}")
        device = next(self.net.parameters()).device
        media, lengths = media_batch(list(items), self.reading)
        prefix = media_prefix(self.net, self.modality, media.to(device), lengths.to(device))
        if max_new_tokens is None:
            room = self.net.backbone.max_seq_len - prefix.x.shape[1] - len(prompt_ids) + 1
            max_new_tokens = max(1, min(int(self.longest_text or room), room))
        rows = text_after_prefix(
            self.net,
            prefix,
            prompt_ids,
            max_new_tokens,
            stop_id=self.eos_id,
            text_modality=self.text_modality,
            head=self.head,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        return [self.vocab.decode(i for i in ids if i < self.vocab.size) for ids in rows]
