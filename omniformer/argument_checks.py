"""Rules among a class's arguments, written once and worded by whoever reports them.

A class states what its arguments must satisfy together (heads dividing the width, a patch that
divides the image) in one static method::

    @staticmethod
    def check_config(args: Mapping[str, Any]) -> list[str]:
        if args.get("positions") == "sincos" and args.get("dim", 0) % 4:
            return ["{dim}: 2-D sin-cos positions need a width divisible by 4"]
        return []

``args`` holds the arguments whose values are known; a rule whose arguments are missing is skipped.
Each problem names arguments as ``{name}`` placeholders (``{{`` and ``}}`` for literal braces) and
never a config path, because only the caller knows where the arguments came from:

* the class's own ``__init__`` raises them with :func:`require_valid`: ``dim=34: ...``;
* the config check (:mod:`omniformer.config`) calls ``check_config`` on every ``_target_`` node before
  any data is read and names each argument by the key a user sets: ``model.dim=34: ...``.

A plug-in class gets the config check by defining the method; nothing registers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any


def shown(value: Any) -> str:
    """``repr(value)``, cut to 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class _Named(dict):
    def __missing__(self, name: str) -> str:
        return name  # a placeholder for an argument that is not known: its bare name


def word(problem: str, args: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """``problem`` with each ``{arg}`` written as ``name=value``; ``names`` maps an argument to the
    name to show (a config key), by default the argument itself."""
    names = names or {}
    return problem.format_map(_Named({a: f"{names.get(a, a)}={shown(v)}" for a, v in args.items()}))


def require_valid(check: Callable[[Mapping[str, Any]], Sequence[str]], **args: Any) -> None:
    """Raise one ``ValueError`` listing ``check(args)``'s problems (``name=value: reason``), if any."""
    problems = check(args)
    if problems:
        raise ValueError("; ".join(word(p, args) for p in problems))
