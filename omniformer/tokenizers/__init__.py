"""Modality tokenizers: each turns a raw batch into :class:`Tokens` for the shared backbone."""

from omniformer.tokenizers.audio import AudioSpectrogramTokenizer
from omniformer.tokenizers.image import ImagePatchTokenizer
from omniformer.tokenizers.text import TextEmbedding
from omniformer.tokens import Tokens

# The names these classes had before: configs stored in older checkpoints build them by these names.
TextTokenizer = TextEmbedding
AudioFrameTokenizer = AudioSpectrogramTokenizer

__all__ = ["AudioSpectrogramTokenizer", "ImagePatchTokenizer", "TextEmbedding", "Tokens"]
