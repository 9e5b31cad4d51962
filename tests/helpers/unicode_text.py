"""Arbitrary Unicode text for round-trip tests: seeded, so a failure names a reproducible string."""

from __future__ import annotations

import random

# Code point ranges that tokenizers get wrong: ASCII and its control characters, Latin-1, combining
# marks, right-to-left scripts, CJK, the byte-order mark and other specials, and the astral planes
# (emoji, historic scripts, private use). Surrogates (U+D800-U+DFFF) are not text and never drawn.
RANGES = (
    (0x00, 0x7F),
    (0x80, 0xFF),
    (0x300, 0x36F),
    (0x590, 0x6FF),
    (0x4E00, 0x4FFF),
    (0xFE00, 0xFFFF),
    (0x1F300, 0x1FAFF),
    (0x10000, 0x10FFFF),
)
EDGE_CASES = ("", " ", "\n", "\r\n", "\x00", "e\u0301", "\ufeffBOM", "a" * 200, "🙂" * 50, "\u202eRTL")


def arbitrary_texts(count: int, *, min_size: int = 0, max_size: int = 200, seed: int = 0) -> list[str]:
    """The edge cases no shorter than ``min_size``, then random strings of ``min_size`` to ``max_size``
    code points, ``count`` in all; half drawn from one range (a script), half from all of them."""
    rng = random.Random(seed)
    texts = [text for text in EDGE_CASES if min_size <= len(text) <= max_size]
    while len(texts) < count:
        ranges = RANGES if len(texts) % 2 else [rng.choice(RANGES)]
        length = rng.randint(min_size, max_size)
        texts.append("".join(chr(_code_point(rng, ranges)) for _ in range(length)))
    return texts[:count]


def _code_point(rng: random.Random, ranges) -> int:
    low, high = rng.choice(ranges)
    point = rng.randint(low, high)
    return point if not 0xD800 <= point <= 0xDFFF else 0xFFFD
