"""A trained model ready to use: ``predict`` for classifiers, ``generate`` for language models.

:func:`omniformer.load` returns a :class:`Model` for a model folder or a checkpoint; the
``omniformer-predict`` and ``omniformer-generate`` commands use the same object, so the command line
and Python give the same answers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from omniformer.model_spec import CLASSIFIER, LANGUAGE_MODEL, build_input_reader, check_spec
from omniformer.sampling import check_sampling, sample_text

VOCAB_FILE = "vocab.json"


class Model:
    """A network with what it needs to be used (class names, input reading, vocabulary).

    Attributes:
        net: the :class:`~omniformer.model.OmniModel`, in eval mode.
        config: the model folder's ``config.json`` body (``kind``, ``model``, ``modality``...).
        kind: ``classifier`` or ``language_model``.
        artifacts: file name → text of the data artifacts (``classes.json``, ``vocab.json``...).
        source: the folder or checkpoint it was loaded from.
    """

    def __init__(
        self,
        net: nn.Module,
        config: Mapping[str, Any],
        artifacts: Mapping[str, str],
        source: str | Path,
        allow_targets: Sequence[str] = (),
    ) -> None:
        self.net = net.eval()
        self.config = dict(config)
        self.kind: str = self.config["kind"]
        self.artifacts = dict(artifacts)
        self.source = Path(source)
        self.allow_targets = tuple(allow_targets)
        self._vocab = None

    def __repr__(self) -> str:
        size = sum(p.numel() for p in self.net.parameters())
        return (
            f"Model(kind={self.kind!r}, modality={self.modality!r}, parameters={size:,}, "
            f"source={self.source})"
        )

    @property
    def modality(self) -> str:
        """The modality whose tokenizer reads the inputs (``image``, ``audio``, ``text``...)."""
        return self.config["modality"]

    @property
    def head(self) -> str:
        """The head that scores the inputs (``classifier``, ``lm``...)."""
        return self.config["head"]

    @property
    def device(self) -> torch.device:
        """Where the network's weights are."""
        return next(self.net.parameters()).device

    @property
    def class_names(self) -> list[str]:
        """A classifier's class names in label order."""
        self._require(CLASSIFIER, "class_names")
        return list(self.config["classes"])

    @torch.no_grad()
    def logits(self, inputs: Tensor, lengths: Tensor | None = None) -> Tensor:
        """The network's raw output for a batch: class logits (``B×classes``) of a classifier, or
        next-token logits (``B×N×vocab``, causal) of a language model for ids ``B×N``."""
        head, extra = self.config["head"], {} if lengths is None else {"lengths": lengths.to(self.device)}
        causal = self.kind == LANGUAGE_MODEL
        return self.net(self.modality, head, inputs.to(self.device), causal=causal, **extra)

    @torch.no_grad()
    def predict(
        self, paths: Sequence[str | Path], top_k: int = 5, data_overrides: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """For each input file, its ``top_k`` labels with probabilities, most likely first:
        ``[{"input": path, "top": [{"label": ..., "prob": ...}, ...]}, ...]``.

        Files are read as evaluation reads them (the training data module's settings);
        ``data_overrides`` changes some of those settings.
        """
        self._require(CLASSIFIER, "predict")
        if isinstance(paths, (str, Path)):
            paths = [paths]
        if not paths:
            raise ValueError("inputs is empty; give files, e.g. inputs='[a.png, b.png]'")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k={top_k!r}: give a whole number >= 1 of labels to list per input")
        batch = self.input_reader(data_overrides).load_inputs([str(p) for p in paths])
        batch = batch if isinstance(batch, (tuple, list)) else (batch,)
        probs = self.logits(*batch).float().softmax(dim=-1)
        names = self.config["classes"]
        values, indices = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [
            {
                "input": str(path),
                "top": [{"label": names[i], "prob": round(float(p), 6)} for p, i in zip(v, ix)],
            }
            for path, v, ix in zip(paths, values.tolist(), indices.tolist())
        ]

    def input_reader(self, data_overrides: Mapping[str, Any] | None = None):
        """The data module that reads a classifier's input files (built from the checked ``inputs``
        config, with ``data_overrides`` merged in and checked too)."""
        self._require(CLASSIFIER, "input_reader")
        inputs = self.config.get("inputs")
        if not inputs:
            raise ValueError(f"{self.source} stores no input-reading config, so it cannot read files")
        if data_overrides:
            from omegaconf import OmegaConf

            merged = OmegaConf.merge(OmegaConf.create(dict(inputs)), OmegaConf.create(dict(data_overrides)))
            inputs = OmegaConf.to_container(merged, resolve=True)
        check_spec({**self.config, "inputs": inputs}, self.allow_targets, self.source, parts=("inputs",))
        folder = self.source if self.source.is_dir() else self.source.parent
        return build_input_reader(inputs, folder, self.artifacts)

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 300,
        temperature: float = 0.8,
        top_k: int | None = 200,
        seed: int = 1337,
        num_samples: int = 1,
        context_len: int | None = None,
    ) -> list[str]:
        """``num_samples`` continuations of ``prompt`` (each the prompt and its new text); sample ``i``
        is drawn with seed ``seed + i``, as ``omniformer-generate`` does.

        ``temperature=0`` is greedy; ``top_k`` 0 or ``None`` keeps the full distribution;
        ``context_len`` caps the tokens the model sees (default: the training block size).
        """
        self._require(LANGUAGE_MODEL, "generate")
        check_generation(temperature, top_k, max_new_tokens, num_samples, context_len)
        window = context_len or self.config.get("context_len")
        vocab = self.vocab
        head = self.config["head"]
        return [
            sample_text(
                self.net,
                vocab,
                prompt,
                max_new_tokens,
                temperature,
                top_k,
                seed + i,
                self.modality,
                head,
                window,
            )
            for i in range(num_samples)
        ]

    @property
    def vocab(self):
        """A language model's vocabulary (from ``vocab.json``)."""
        if self._vocab is None:
            from omniformer.tokenizers.vocab import vocab_from_json

            if VOCAB_FILE not in self.artifacts:
                raise ValueError(f"{self.source} holds no text vocabulary ({VOCAB_FILE})")
            self._vocab = vocab_from_json(self.artifacts[VOCAB_FILE])
        return self._vocab

    def example_inputs(self, batch_size: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
        """A seeded synthetic batch of the model's input shape, for :meth:`logits` (pixels for an
        image tokenizer, one second of waveform for an audio one, ids for a text one).

        Raises:
            ValueError: a tokenizer whose input shape its config does not state (a plug-in's).
        """
        tokenizer = self.config["model"]["tokenizers"][self.modality]
        generator = torch.Generator().manual_seed(seed)
        if "in_channels" in tokenizer and "image_size" in tokenizer:
            size = tokenizer["image_size"]
            height, width = (size, size) if isinstance(size, int) else size
            shape = (batch_size, tokenizer["in_channels"], height, width)
            return (torch.randn(shape, generator=generator),)
        if "sample_rate" in tokenizer:
            return (0.1 * torch.randn(batch_size, int(tokenizer["sample_rate"]), generator=generator),)
        if "vocab_size" in tokenizer:
            length = min(int(self.config.get("context_len") or 16), 16)
            return (
                torch.randint(0, int(tokenizer["vocab_size"]), (batch_size, length), generator=generator),
            )
        raise ValueError(
            f"{self.source}: cannot make an example input for tokenizer {tokenizer.get('_target_')} "
            "(its config states no image, audio or vocabulary size); give input files instead"
        )

    def to(self, device: str | torch.device) -> Model:
        """Move the network to ``device``; returns the model."""
        self.net.to(device)
        return self

    def _require(self, kind: str, what: str) -> None:
        if self.kind == kind:
            return
        use = "predict()" if self.kind == CLASSIFIER else "generate()"
        article = "a classifier" if self.kind == CLASSIFIER else "a language model"
        wanted = "a classifier" if kind == CLASSIFIER else "a language model"
        raise ValueError(
            f"{self.source} was trained as {self.config.get('task', self.kind)}, {article}, not "
            f"{wanted}: {what} needs {wanted}; use {use}"
        )


def check_generation(
    temperature: float, top_k: int | None, max_new_tokens: int, num_samples: int, context_len: int | None
) -> None:
    """One clear error naming the setting when a sampling setting is invalid."""
    check_sampling(temperature, top_k, max_new_tokens)
    if context_len is not None and (
        isinstance(context_len, bool) or not isinstance(context_len, int) or context_len < 2
    ):
        raise ValueError(
            f"context_len={context_len!r}: give a whole number of tokens >= 2 (the model needs two to "
            "predict from), or null for the training block size"
        )
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples={num_samples!r}: give a whole number >= 1")
