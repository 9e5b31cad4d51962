"""Checking a config's ``_target_`` nodes against the classes they build, for any class.

For every node with a ``_target_`` (a plug-in's as much as omniformer's own):

* the target must be importable;
* with a structured-config schema (a dataclass) for it, the node is merged onto the schema key by key;
  otherwise its keys must be arguments of the target (``**kwargs`` that no omniformer base class
  resolves accept anything) and each value must fit the argument's annotation (``int``, ``float``,
  ``bool``, ``str``, ``Literal`` choices, ``Optional``, sequences, mappings);
* a target that defines ``check_config(args) -> list[str]`` (:mod:`omniformer.argument_checks`)
  reports the problems among its arguments. Each argument is named by the key a user sets: the source
  of a plain interpolation (``model.dim`` for ``dim: ${model.dim}``), else the node's own key.

Nothing here knows omniformer's config tree; :mod:`omniformer.config.train_rules` does. Problems are
collected as ``key=value: reason`` lines and raised together as one :class:`ConfigError`.
"""

from __future__ import annotations

import difflib
import inspect
import re
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

from omniformer.argument_checks import word

#: Keys Hydra reads itself; never arguments of the target.
HYDRA_KEYS = frozenset({"_target_", "_partial_", "_convert_", "_recursive_", "_args_"})
#: What :func:`value_of` returns for a value that cannot be resolved yet (``${data_spec...}``).
UNSET: Any = object()
_PLAIN_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][\w-]*(?:\.[\w-]+)*)\}")


class ConfigError(ValueError):
    """One or more invalid config values; the message lists ``key=value: reason`` per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config ({len(self.problems)} problem(s)):\n{lines}")


def show(value: Any) -> str:
    """A config value as a message shows it: its ``repr`` (containers as plain data), cut to 80 chars."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def value_of(node: DictConfig, key: Any) -> Any:
    """``node[key]`` resolved (containers as plain data), or :data:`UNSET` when it cannot be yet."""
    try:
        value = node[key]
    except OmegaConfBaseException:
        return UNSET
    if isinstance(value, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(value, resolve=True)
        except OmegaConfBaseException:
            return UNSET
    return value


def source_key(node: DictConfig, key: str, prefix: str) -> str:
    """The key a user sets for ``node[key]``: ``a.b`` when the value is ``${a.b}``, else ``prefix.key``."""
    if OmegaConf.is_interpolation(node, key):
        found = _PLAIN_INTERPOLATION.fullmatch(str(node._get_node(key)._value()))
        if found:
            return found.group(1)
    return f"{prefix}.{key}"


def close_matches(key: str, known: Iterable[Any], prefix: str = "") -> str:
    """``; did you mean <prefix><match>?`` for the known names closest to ``key`` (or nothing)."""
    matches = difflib.get_close_matches(key, [str(k) for k in known], n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(prefix + m for m in matches)}?" if matches else ""


# ---------------------------------------------------------------------------------------------- signatures
def parameters(target: Any) -> tuple[dict[str, inspect.Parameter], dict[str, Any], bool]:
    """Arguments a ``_target_`` accepts, their type hints, and whether it takes any keyword (``**kwargs``
    that no base class resolves)."""
    params: dict[str, inspect.Parameter] = {}
    hints: dict[str, Any] = {}
    functions = []
    if inspect.isclass(target):
        for cls in target.__mro__:
            if cls is object or "__init__" not in vars(cls):
                continue
            functions.append(cls.__init__)
    else:
        functions.append(target)
    open_kwargs = False
    for function in functions:
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return params, hints, True
        try:
            function_hints = typing.get_type_hints(function)
        except Exception:  # unresolvable forward references: skip the type checks
            function_hints = {}
        has_kwargs = False
        for name, param in signature.parameters.items():
            if name == "self" or param.kind is inspect.Parameter.VAR_POSITIONAL:
                continue
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                has_kwargs = True
                continue
            params.setdefault(name, param)
            if name in function_hints:
                hints.setdefault(name, function_hints[name])
        if not has_kwargs:
            return params, hints, False
        # omniformer's classes pass **kwargs on to their base class; elsewhere (DDPStrategy passes
        # them to DistributedDataParallel) the accepted keys are unknown.
        if not getattr(target, "__module__", "").startswith("omniformer."):
            return params, hints, True
        open_kwargs = True
    return params, hints, open_kwargs


def fits(value: Any, hint: Any) -> bool:
    """Whether a config value suits a type hint (unknown hints accept anything)."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or (origin is not None and type(hint).__name__ == "UnionType"):
        return any(fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is type(None):
        return value is None
    if value is None:
        return False
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in (list, tuple, Sequence, typing.Sequence) or (
        inspect.isclass(container) and issubclass(container, Sequence) and container is not str
    ):
        return isinstance(value, (list, tuple))
    if container in (dict, Mapping) or (inspect.isclass(container) and issubclass(container, Mapping)):
        return isinstance(value, dict)
    return True  # classes (modules, settings objects) are built from nested nodes


def hint_name(hint: Any) -> str:
    """A type hint as a message names it: ``int | None``, ``one of 'cls', 'mean'``."""
    if typing.get_origin(hint) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# ---------------------------------------------------------------------------------------------- nodes
def check_schema(node: DictConfig, schema: type, prefix: str, problems: list[str]) -> None:
    """Merge ``node`` onto ``schema``, one key at a time so that every bad key is reported."""
    base = OmegaConf.structured(schema)
    for key in node:
        value = value_of(node, key)
        if value is UNSET:
            continue
        try:
            OmegaConf.merge(base, OmegaConf.create({key: value}))
        except ConfigKeyError:
            valid = ", ".join(k for k in base if not str(k).startswith("_"))
            problems.append(f"{prefix}.{key}={show(value)}: unknown key for {node.get('_target_')} ({valid})")
        except ValidationError as err:
            reason = str(err.msg).splitlines()[0]
            problems.append(f"{prefix}.{key}={show(value)}: {reason}")


def check_arguments(
    target: Any,
    node: DictConfig,
    prefix: str,
    problems: list[str],
    *,
    schema: type | None = None,
    ignore: Iterable[str] = (),
) -> None:
    """Check ``node`` as the arguments of ``target`` (a class or function): against ``schema`` when
    one is given, else against the signature; then the target's own ``check_config`` rules.

    ``ignore`` names keys of ``node`` that are not the target's arguments (checked elsewhere).
    """
    name = node.get("_target_")
    if not isinstance(name, str):
        name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', target)}"
    params, hints, open_kwargs = parameters(target)
    skip = HYDRA_KEYS | set(ignore)
    if schema is not None:
        check_schema(node, schema, prefix, problems)
    else:
        for key in node:
            if key in skip:
                continue
            if key not in params and not open_kwargs:
                valid = ", ".join(params) or "no arguments"
                shown = show(node._get_node(key))
                problems.append(f"{prefix}.{key}={shown}: unknown key for {name} ({valid})")
                continue
            value, hint = value_of(node, key), hints.get(key)
            if value is UNSET or hint is None or isinstance(node._get_node(key), DictConfig):
                continue
            if not fits(value, hint):
                problems.append(f"{prefix}.{key}={show(value)}: {name} expects {hint_name(hint)}")
    check = getattr(target, "check_config", None)
    if not callable(check):
        return
    args, names = _known_arguments(node, prefix, params, hints, skip)
    try:
        found = check(args)
    except Exception as err:  # a plug-in's rule that trips over a value: report it, check the rest
        problems.append(f"{prefix}: {name}.check_config failed ({type(err).__name__}: {err})")
        return
    problems.extend(word(problem, args, names) for problem in found)


def _known_arguments(
    node: DictConfig, prefix: str, params: Mapping[str, inspect.Parameter], hints: Mapping, skip: set
) -> tuple[dict[str, Any], dict[str, str]]:
    """The arguments whose values are known and fit their annotations (the signature's defaults for
    keys ``node`` leaves out), and the key a user sets for each."""
    args: dict[str, Any] = {}
    names: dict[str, str] = {}
    for key in node:
        value = value_of(node, key)
        if key in skip or value is UNSET or (key in hints and not fits(value, hints[key])):
            continue
        args[str(key)], names[str(key)] = value, source_key(node, str(key), prefix)
    for key, param in params.items():
        if key not in node and param.default is not inspect.Parameter.empty:
            args[key], names[key] = param.default, f"{prefix}.{key}"
    return args, names


def check_targets(
    node: Any,
    prefix: str,
    problems: list[str],
    schema_for: Callable[[str], type | None] = lambda target: None,
) -> None:
    """Walk ``node``; check every ``_target_`` node with :func:`check_arguments` (with the schema
    ``schema_for`` gives its target, if any). Interpolated nodes are checked where they are defined."""
    if isinstance(node, ListConfig):
        for i, item in enumerate(node):
            if isinstance(item, (DictConfig, ListConfig)) and not item._is_none():
                check_targets(item, f"{prefix}[{i}]", problems, schema_for)
        return
    if not isinstance(node, DictConfig):
        return
    target_name = node.get("_target_") if "_target_" in node else None
    if isinstance(target_name, str):
        try:
            target = get_object(target_name)
        except Exception as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            problems.append(f"{prefix}._target_={target_name!r}: cannot be imported ({reason})")
        else:
            check_arguments(target, node, prefix, problems, schema=schema_for(target_name))
    if node.get("_recursive_") is False:
        return  # the target builds its children itself, possibly with other arguments
    for key in node:
        child = node._get_node(key)
        if (
            isinstance(child, (DictConfig, ListConfig))
            and not OmegaConf.is_interpolation(node, key)
            and not child._is_none()
        ):
            check_targets(child, f"{prefix}.{key}", problems, schema_for)
