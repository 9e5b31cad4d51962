"""A trained model ready to use: ``predict`` for classifiers, ``generate`` for language models,
``transcribe`` and ``generate(audio=... | image=...)`` for prefix LMs (any modality in, text out).

:func:`omniformer.load` returns a :class:`Model` for a model folder or a checkpoint; the
``omniformer-predict`` and ``omniformer-generate`` commands use the same object, so the command line
and Python give the same answers. A prefix LM reads files as its training data module read media
(``media.json``, :mod:`omniformer.prefix_files`) and writes characters of its ``vocab.json``, both
stored with the model, so it needs no dataset.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from omniformer.model_spec import (
    CLASSIFIER,
    LANGUAGE_MODEL,
    PREFIX_LM,
    build_input_reader,
    check_spec,
    example_inputs,
)
from omniformer.prefix_files import MEDIA_FILE, MediaReading, read_media_file
from omniformer.prefix_writer import MediaInput, PrefixWriter
from omniformer.sampling import check_generation, sample_text, stream_text
from omniformer.text_stream import check_stop, cut_at_stop

VOCAB_FILE = "vocab.json"
#: What a language model writes when neither the caller nor the model says (``max_new_tokens``,
#: ``temperature``); a prefix LM writes at most its longest training text, greedily.
LM_MAX_NEW_TOKENS, LM_TEMPERATURE = 300, 0.8
#: Files a prefix LM transcribes per forward pass.
TRANSCRIBE_BATCH = 32
KIND_NAMES = {
    CLASSIFIER: "a classifier",
    LANGUAGE_MODEL: "a language model",
    PREFIX_LM: "a prefix LM",
}
KIND_USES = {CLASSIFIER: "predict()", LANGUAGE_MODEL: "generate()", PREFIX_LM: "transcribe() or generate()"}


def check_one_media(audio: MediaInput | None, image: MediaInput | None) -> None:
    """One error when both ``audio`` and ``image`` are given (``generate`` checks it, and
    ``omniformer-generate`` before it loads the model)."""
    if audio is not None and image is not None:
        raise ValueError("give audio= or image=, not both: a prefix LM reads one prefix")


class Model:
    """A network with what it needs to be used (class names, input reading, vocabulary).

    Attributes:
        net: the :class:`~omniformer.model.OmniModel`, in eval mode.
        config: the model folder's ``config.json`` body (``kind``, ``model``, ``modality``...).
        kind: ``classifier``, ``language_model`` or ``prefix_lm``.
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
        self._reading: MediaReading | None = None
        self._writer: PrefixWriter | None = None

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
        """The network's raw output for a batch: class logits (``B×classes``) of a classifier,
        next-token logits (``B×N×vocab``, causal) of a language model for ids ``B×N``, or a prefix
        LM's logits (``B×vocab``) of the first text id after media ``inputs`` (lengths: samples or
        pixel columns per item)."""
        if self.kind == PREFIX_LM:
            from omniformer.prefix_inputs import media_prefix
            from omniformer.prefix_sampling import prefix_logits

            lengths = None if lengths is None else lengths.to(self.device)
            prefix = media_prefix(self.net, self.modality, inputs.to(self.device), lengths)
            return prefix_logits(self.net, prefix, self.head)
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
        prompt: str = "",
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = 200,
        seed: int = 1337,
        num_samples: int = 1,
        context_len: int | None = None,
        *,
        audio: MediaInput | None = None,
        image: MediaInput | None = None,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> list[str]:
        """``num_samples`` texts, each ``prompt`` and its new text; sample ``i`` is drawn with seed
        ``seed + i``, as ``omniformer-generate`` does.

        A language model continues ``prompt``. A prefix LM reads ``audio`` or ``image`` (a file, read
        as its training data read media, or a tensor already read) and writes its text after it,
        starting with ``prompt`` (characters of its vocabulary; often empty); it stops at end of text.

        ``temperature=0`` is greedy (``None``: 0.8 for a language model, greedy for a prefix LM);
        ``top_k`` 0 or ``None`` keeps the full distribution; ``top_p`` (nucleus) keeps the most likely
        tokens holding that probability mass (``None`` or 1: all); ``stop`` (a string or several)
        ends the new text before the first one in it; ``max_new_tokens`` ``None`` is 300 for a
        language model and the longest training text for a prefix LM; ``context_len`` caps the
        tokens a language model sees (default: the training block size). :meth:`stream` gives a
        language model's text piece by piece.

        Raises:
            ValueError: an invalid sampling setting (naming it); ``audio``/``image`` given to a model
                without that tokenizer, both at once, or neither to a prefix LM; a prompt character
                outside the vocabulary; a prefix longer than ``model.max_seq_len``.
            FileNotFoundError: an input file that does not exist (naming it).
        """
        stops = check_stop(stop)
        media = self._media_argument(audio, image)
        if media is not None or self.kind == PREFIX_LM:
            if context_len is not None:
                raise ValueError(
                    f"context_len={context_len}: a prefix LM sees its whole prefix and text (up to "
                    "model.max_seq_len); leave context_len unset"
                )
            temperature = 0.0 if temperature is None else temperature
            check_generation(temperature, top_k, max_new_tokens or 1, num_samples, None, top_p)
            if media is None:
                raise ValueError(
                    f"{self.source} is a prefix LM that writes the text of {self.modality}: give "
                    f"{self.modality}=<file> (and, optionally, prompt= to start its text)"
                )
            items, settings = self.read_media([media]), (max_new_tokens, temperature, top_k)  # read once
            texts = (
                self.writer.write(items, [media], prompt, *settings, seed + i, top_p)[0]
                for i in range(num_samples)
            )
            return [prompt + cut_at_stop(text, stops) for text in texts]
        args = self._lm_args(max_new_tokens, temperature, top_k, num_samples, context_len, top_p, stops)
        return [sample_text(self.net, self.vocab, prompt, seed=seed + i, **args) for i in range(num_samples)]

    def stream(
        self,
        prompt: str = "",
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_k: int | None = 200,
        seed: int = 1337,
        context_len: int | None = None,
        *,
        top_p: float | None = None,
        stop: str | Sequence[str] | None = None,
    ) -> Iterator[str]:
        """A language model's new text after ``prompt``, in pieces as its tokens are drawn (settings as
        :meth:`generate`; checked before the first piece): ``prompt + "".join(model.stream(prompt,
        seed=s))`` is ``model.generate(prompt, seed=s)[0]``. A piece waits for the next token when its
        text could be the start of a ``stop`` string or ends inside a character."""
        self._require(LANGUAGE_MODEL, "stream")
        args = self._lm_args(max_new_tokens, temperature, top_k, 1, context_len, top_p, check_stop(stop))
        return stream_text(self.net, self.vocab, prompt, seed=seed, **args)

    def _lm_args(
        self,
        max_new_tokens: int | None,
        temperature: float | None,
        top_k: int | None,
        num_samples: int,
        context_len: int | None,
        top_p: float | None,
        stop: tuple[str, ...],
    ) -> dict[str, Any]:
        """A language model's sampling arguments (:func:`omniformer.sampling.stream_text`), defaults
        filled in and every setting checked."""
        self._require(LANGUAGE_MODEL, "generate")
        max_new_tokens = LM_MAX_NEW_TOKENS if max_new_tokens is None else max_new_tokens
        temperature = LM_TEMPERATURE if temperature is None else temperature
        check_generation(temperature, top_k, max_new_tokens, num_samples, context_len, top_p)
        window = context_len or self.config.get("context_len")
        return dict(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            stop=stop,
            modality=self.modality,
            head=self.head,
            window=window,
        )

    @torch.no_grad()
    def transcribe(
        self, inputs: MediaInput | Sequence[MediaInput], max_new_tokens: int | None = None
    ) -> list[str]:
        """A prefix LM's text for each input, greedily, as validation transcribed: files (read as the
        training data read media) or tensors already read, batched (:data:`TRANSCRIBE_BATCH` at a
        time) with padding masked, so each text is the one the input gives alone.

        ``max_new_tokens`` caps the ids written (default: the longest training text, end included).

        Raises:
            FileNotFoundError: an input file that does not exist (naming it).
            ValueError: an unreadable file or a prefix longer than ``model.max_seq_len`` (naming
                the input), or a model that is not a prefix LM.
        """
        self._require(PREFIX_LM, "transcribe")
        if isinstance(inputs, (str, Path, Tensor)):
            inputs = [inputs]
        if not inputs:
            raise ValueError("inputs is empty; give files, e.g. inputs='[a.wav, b.wav]'")
        texts: list[str] = []
        for start in range(0, len(inputs), TRANSCRIBE_BATCH):
            chunk = list(inputs[start : start + TRANSCRIBE_BATCH])
            texts += self.writer.write(self.read_media(chunk), chunk, "", max_new_tokens, 0.0, None, 0)
        return texts

    @property
    def media_reading(self) -> MediaReading:
        """How a prefix LM reads input files (``media.json``; for a checkpoint older than that file,
        the rate, channels and height its tokenizer was built for)."""
        self._require(PREFIX_LM, "media_reading")
        if self._reading is None:
            if MEDIA_FILE in self.artifacts:
                self._reading = MediaReading.from_json(self.artifacts[MEDIA_FILE], self.source)
            elif self.modality not in ("audio", "image"):
                raise ValueError(
                    f"{self.source} reads {self.modality} prefixes and stores no {MEDIA_FILE}: only audio "
                    "and image files can be read for it"
                )
            else:
                tokenizer = self.config["model"]["tokenizers"][self.modality]
                self._reading = MediaReading.from_tokenizer(self.modality, tokenizer)
        return self._reading

    def read_media(self, inputs: Sequence[MediaInput]) -> list[Tensor]:
        """Each input as the model reads it: files through :attr:`media_reading`, tensors as given."""
        reading = self.media_reading
        return [x if isinstance(x, Tensor) else read_media_file(x, reading) for x in inputs]

    def _media_argument(self, audio: MediaInput | None, image: MediaInput | None) -> MediaInput | None:
        """The one media input of ``generate``; an error naming the argument the model cannot read."""
        check_one_media(audio, image)
        given = "audio" if audio is not None else "image" if image is not None else None
        if given is None:
            return None
        tokenizers = sorted(self.net.tokenizers)
        if self.kind != PREFIX_LM:
            what = "a language model of text" if self.kind == LANGUAGE_MODEL else KIND_NAMES[self.kind]
            raise ValueError(
                f"{given}= was given, but {self.source} is {what} (tokenizers: {', '.join(tokenizers)}), "
                f"with no {given} tokenizer: only a prefix LM (task=prefix_lm) writes text after {given}"
            )
        if given != self.modality:
            raise ValueError(
                f"{given}= was given, but {self.source} reads {self.modality} prefixes and has no {given} "
                f"tokenizer (tokenizers: {', '.join(tokenizers)}); give {self.modality}=<file>"
            )
        return audio if audio is not None else image

    @property
    def writer(self) -> PrefixWriter:
        """A prefix LM's :class:`~omniformer.prefix_writer.PrefixWriter`, built once: what
        ``generate(audio=... | image=...)`` and ``transcribe`` write text with."""
        self._require(PREFIX_LM, "generating after a prefix")
        if self._writer is None:
            self._writer = PrefixWriter(
                self.net,
                self.vocab,
                self.media_reading,
                self.modality,
                source=self.source,
                eos_id=int(self.config["eos_id"]),
                head=self.head,
                text_modality=self.config.get("text_modality", "text"),
                longest_text=self.config.get("max_new_tokens"),
            )
        return self._writer

    @property
    def vocab(self):
        """A language model's or prefix LM's vocabulary (from ``vocab.json``)."""
        if self._vocab is None:
            from omniformer.tokenizers.vocab import vocab_from_json

            if VOCAB_FILE not in self.artifacts:
                raise ValueError(f"{self.source} holds no text vocabulary ({VOCAB_FILE})")
            self._vocab = vocab_from_json(self.artifacts[VOCAB_FILE])
        return self._vocab

    def example_inputs(self, batch_size: int = 2, seed: int = 0) -> tuple[Tensor, ...]:
        """A seeded synthetic batch of the model's input shape, for :meth:`logits`
        (:func:`omniformer.model_spec.example_inputs`)."""
        return example_inputs(self.config, self.source, batch_size, seed)

    def to(self, device: str | torch.device) -> Model:
        """Move the network to ``device``; returns the model."""
        self.net.to(device)
        return self

    def _require(self, kind: str, what: str) -> None:
        if self.kind == kind:
            return
        use, article, wanted = KIND_USES[self.kind], KIND_NAMES[self.kind], KIND_NAMES[kind]
        raise ValueError(
            f"{self.source} was trained as {self.config.get('task', self.kind)}, {article}, not "
            f"{wanted}: {what} needs {wanted}; use {use}"
        )
