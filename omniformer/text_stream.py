"""Text of sampled ids as it comes, in pieces safe to show, ending before a stop string.

Generation draws one id at a time, but an id is not always a whole piece of text: a byte-level BPE
id may hold the first bytes of a character whose last byte comes with the next id (decoding it alone
gives U+FFFD), and text that ends with ``"\\n"`` may be the start of a stop string ``"\\n\\n"``. A
:class:`TextStream` holds such text back until the next ids settle it, so that what it hands out,
joined, is exactly the final text: streamed and non-streamed generation print the same thing.
Stop strings are what OpenAI-style APIs and llama.cpp call ``stop``: the text ends before the first
one found in the new text (the prompt is not searched).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

#: What a decoder writes for bytes that are not (yet) a whole UTF-8 character.
REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    """What a stream needs of a vocabulary."""

    def decode(self, ids: Iterable[int]) -> str: ...


def check_stop(stop: str | Sequence[str] | None) -> tuple[str, ...]:
    """``stop`` as a tuple of strings (``None``: none); one error naming ``stop`` for an empty string or
    something that is not a string."""
    if stop is None:
        return ()
    stops = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, Sequence) or isinstance(stops, bytes):
        raise ValueError(f"stop={stop!r}: give a string or a list of strings that end the text")
    for item in stops:
        if not isinstance(item, str):
            raise ValueError(
                f"stop={list(stops)!r}: {item!r} is not a string; give strings that end the text"
            )
        if not item:
            raise ValueError(
                f"stop={list(stops)!r}: an empty stop string would end the text before it starts; "
                "give non-empty strings (or null for none)"
            )
    return tuple(stops)


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to (not including) the first stop string in it."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return text[: min(found)] if found else text


class TextStream:
    """Feed it ids with :meth:`push` as they are drawn, then call :meth:`finish`; each returns the new
    text that is now settled ("" when none is). :attr:`stopped` turns true once a stop string appeared:
    :attr:`text` then ends before it and the generation can end.
    """

    def __init__(self, vocab: Decoder, stop: Sequence[str] = ()) -> None:
        self.vocab = vocab
        self.stop = tuple(stop)
        self.text = ""  # the new text decoded so far (cut before a stop string once one appears)
        self.stopped = False
        self._pending: list[int] = []  # ids whose text ends inside a character
        self._shown = 0  # characters of text handed out

    def push(self, ids: Iterable[int]) -> str:
        """Take the next id(s); return the text they settle."""
        if self.stopped:
            return ""
        self._pending.extend(int(i) for i in ids)
        piece = self.vocab.decode(self._pending)
        if piece.endswith(REPLACEMENT):  # a character split over ids: wait for its other bytes
            return ""
        self._pending = []
        return self._add(piece, final=False)

    def finish(self) -> str:
        """The text still held back (the generation ended)."""
        piece = "" if self.stopped or not self._pending else self.vocab.decode(self._pending)
        self._pending = []
        return self._add(piece, final=True)

    def _add(self, piece: str, final: bool) -> str:
        if self.stopped:
            return ""
        start = len(self.text)
        self.text += piece
        # a stop string may begin in text held back from earlier pieces
        found = [i for s in self.stop if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
        if found:
            self.text, self.stopped, final = self.text[: min(found)], True, True
        end = len(self.text) if final else max(self._shown, len(self.text) - self._held())
        out, self._shown = self.text[self._shown : end], end
        return out

    def _held(self) -> int:
        """How many characters at the end of the text could be the start of a stop string."""
        longest = max((len(s) for s in self.stop), default=1) - 1
        for size in range(min(longest, len(self.text)), 0, -1):
            tail = self.text[-size:]
            if any(s.startswith(tail) for s in self.stop):
                return size
        return 0
