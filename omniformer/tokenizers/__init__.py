"""Modality tokenizers: each turns a raw batch into :class:`Tokens` for the shared backbone."""

from omniformer.tokenizers.audio import AudioFrameTokenizer
from omniformer.tokenizers.image import ImagePatchTokenizer
from omniformer.tokenizers.text import TextTokenizer
from omniformer.tokens import Tokens

__all__ = ["AudioFrameTokenizer", "ImagePatchTokenizer", "TextTokenizer", "Tokens"]
