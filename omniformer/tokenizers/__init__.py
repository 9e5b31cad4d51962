"""Modality tokenizers: each turns a raw batch into :class:`Tokens` for the shared backbone."""

from omniformer.tokenizers.text import TextTokenizer
from omniformer.tokenizers.tokens import Tokens

__all__ = ["TextTokenizer", "Tokens"]
