"""The fixed character vocabulary of digit transcripts ("three nine two" or "3 9 2")."""

from __future__ import annotations

from omniformer.data.digit_strings import DIGIT_WORDS
from omniformer.tokenizers.vocab import CharVocab


def digit_vocab(text_form: str) -> CharVocab:
    """Every character a transcript of ``text_form`` (``words`` or ``digits``) can hold, space included.

    Fixed rather than read from the drawn texts, so a run's vocabulary (and its checkpoint's) never
    depends on which utterances or strings its seed and sizes happened to draw.
    """
    if text_form not in ("words", "digits"):
        raise ValueError(f"data.text_form={text_form!r}; choose 'words' or 'digits'")
    return CharVocab.train(" ".join(DIGIT_WORDS if text_form == "words" else map(str, range(10))))
