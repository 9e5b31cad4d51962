"""``classes.json``: the class names of a classifier in label order, as written into every checkpoint.

Evaluation and prediction read it back (``use_artifacts``) so label ``i`` keeps meaning class ``i``
whatever folders the data at hand has.
"""

from __future__ import annotations

import json

CLASSES_FILE = "classes.json"


def classes_json(classes: list[str], ascii_only: bool = True) -> str:
    """The text of ``classes.json`` for ``classes``.

    ``ascii_only=False`` writes non-ASCII names as they are instead of ``\\u`` escapes (the audio
    modules always did). A resumed run compares the text with the checkpoint's, so each module keeps
    the form it has always written.
    """
    return json.dumps(classes, ensure_ascii=ascii_only)


def read_classes(text: str) -> list[str]:
    """Class names from the text of a ``classes.json``; one error if it is not a list of names."""
    classes = json.loads(text)
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise ValueError(f"{CLASSES_FILE} must hold a JSON list of class names, got {text[:80]!r}")
    return classes
