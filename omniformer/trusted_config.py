"""What a config stored in a checkpoint may build: an allow-list checked before anything is built.

``omniformer-eval``, ``-generate`` and ``-predict`` rebuild the task and the data module from the
config stored inside the checkpoint. ``torch.load(weights_only=True)`` keeps pickled code out of the
file, but that config is plain data anyone who can write the file can edit, and a Hydra ``_target_``
is a call: ``pathlib.Path.touch``, ``shutil.copyfile``, or an unsafe (not weights-only) ``torch.load``
of a pickle of the attacker's would run on load. Hydra's own block-list names a few dangerous callables; it
is not a boundary. So a stored config is checked against an allow-list first:

1. Its ``task`` and ``data`` subtrees (the only parts ever built from a checkpoint; ``trainer``,
   ``callbacks`` and ``logger`` never are) are resolved to plain data, so that an interpolation
   (``${callbacks.x}``, ``${oc.decode:...}``) cannot bring in a node that was not checked.
2. Every ``_target_`` anywhere in them — nested, in lists, in ``_args_``, under ``_partial_`` or
   ``_recursive_: false`` nodes, in image transform steps — must name:

   - a **class defined in omniformer** (its ``__module__`` under ``omniformer.``) that is a model
     part (``nn.Module``: tasks, OmniModel, backbone, tokenizers, heads), a data module
     (``LightningDataModule``) or a settings / objective class (:data:`SETTINGS_CLASSES`); a
     re-exported name (``omniformer.tasks.ClassificationTask``) is fine, a function
     (``omniformer.train.run``) or something an omniformer module imports
     (``omniformer.checkpoint.torch.load``) is not;
   - one of :data:`TRUSTED_FACTORIES` (``build_backbone``: a Backbone, pretrained weights read only
     through weights-only loads);
   - one of the torchvision transform classes in :data:`TRUSTED_TRANSFORMS`;
   - or, only when the user names its package in ``allow_targets`` (e.g.
     ``allow_targets='[omniformer_video]'``), a class or function *defined* in that plug-in package.

   No part of a name may start with ``_`` (``__main__``, ``__globals__``). Names outside omniformer
   and the allowed packages are refused without importing anything.
3. Nothing is built unless every target passes; the error lists each offending config key with its
   target, and names the ``allow_targets`` flag.
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

#: The command-line flag (a key of conf/eval.yaml, generate.yaml and predict.yaml).
FLAG = "allow_targets"

#: torchvision ``v2`` transform classes a stored image config may build: those conf/data/ uses and
#: their usual kin. ``Lambda`` is absent on purpose: it calls whatever function it is given.
TRUSTED_TRANSFORMS: frozenset[str] = frozenset(
    f"torchvision.transforms.v2.{name}"
    for name in (
        "AugMix",
        "AutoAugment",
        "CenterCrop",
        "ColorJitter",
        "Compose",
        "ElasticTransform",
        "GaussianBlur",
        "GaussianNoise",
        "Grayscale",
        "Normalize",
        "Pad",
        "RandAugment",
        "RandomAdjustSharpness",
        "RandomAffine",
        "RandomApply",
        "RandomAutocontrast",
        "RandomChoice",
        "RandomCrop",
        "RandomEqualize",
        "RandomErasing",
        "RandomGrayscale",
        "RandomHorizontalFlip",
        "RandomInvert",
        "RandomOrder",
        "RandomPerspective",
        "RandomPosterize",
        "RandomResizedCrop",
        "RandomRotation",
        "RandomSolarize",
        "RandomVerticalFlip",
        "RandomZoomOut",
        "Resize",
        "TrivialAugmentWide",
    )
)

#: omniformer functions a stored config may call: conf/model/_backbone.yaml builds every backbone
#: with ``build_backbone``, and ``from_checkpoint`` is documented as a target around any part. Both
#: build modules from their arguments and read other checkpoints only through weights-only loads.
TRUSTED_FACTORIES: frozenset[str] = frozenset(
    {"omniformer.transfer.build_backbone", "omniformer.transfer.from_checkpoint"}
)

#: omniformer classes outside ``nn.Module`` / ``LightningDataModule`` that configs build: the
#: optimizer settings and the multi-task objectives (matched by base class, by name, so that this
#: module imports no task code; older checkpoints' ``omniformer.tasks.multitask.ClassificationLoss``
#: is a re-export of an ``Objective``).
SETTINGS_CLASSES: frozenset[str] = frozenset(
    {"omniformer.tasks.optim.OptimSettings", "omniformer.tasks.objectives.Objective"}
)

#: Top-level packages that are never plug-ins: allowing one would allow its file-writing functions.
NOT_PLUGINS: frozenset[str] = frozenset(sys.stdlib_module_names) | {
    "hydra",
    "lightning",
    "lightning_fabric",
    "numpy",
    "omegaconf",
    "pytorch_lightning",
    "torch",
    "torchaudio",
    "torchvision",
}

_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_PARTS = ("task", "data")


class UntrustedConfigError(ValueError):
    """A checkpoint's stored config names something omniformer does not build from a checkpoint."""


def parse_allow_targets(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """The plug-in packages of an ``allow_targets`` value (``None``, one name, or a list of names).

    A name is a package or module (``omniformer_video``, ``my_lab.models``; a trailing ``.`` is
    dropped) whose classes and functions a stored config may then build.

    Raises:
        ValueError: a name that is not a dotted Python name, names omniformer itself (always
            allowed, within the rules above), or the standard library / torch / Lightning / Hydra
            (their functions write, copy and delete files: never plug-ins).
    """
    if value is None:
        return ()
    names = [value] if isinstance(value, str) else list(value)
    allowed = []
    for raw in names:
        name = str(raw).strip().rstrip(".")
        if not _DOTTED.fullmatch(name):
            raise ValueError(
                f"{FLAG}={names!r}: {raw!r} is not a package name; give plug-in packages, "
                f"e.g. {FLAG}='[omniformer_video]'"
            )
        top = name.split(".")[0]
        if top == "omniformer":
            raise ValueError(
                f"{FLAG}={names!r}: omniformer's own model, data and settings classes are always "
                f"allowed; {FLAG} names plug-in packages outside omniformer"
            )
        if top in NOT_PLUGINS:
            raise ValueError(
                f"{FLAG}={names!r}: {name!r} is not a plug-in package ({top} is part of Python or of "
                f"the frameworks omniformer runs on, and has functions that write or delete files); "
                f"{FLAG} names the packages of your own tokenizers, heads and data modules"
            )
        allowed.append(name)
    return tuple(allowed)


def untrusted_targets(tree: Any, key: str, allow_targets: Sequence[str] = ()) -> list[str]:
    """``<key path>._target_=<target>: <why>`` for every ``_target_`` in ``tree`` that may not be built.

    ``tree`` is plain data (dicts, lists, scalars); ``key`` is its place in the config (``task``).
    """
    problems = []
    for path, node in _nodes(tree, key):
        if isinstance(node, Mapping) and "_target_" in node:
            why = _refusal(node["_target_"], allow_targets)
            if why:
                problems.append(f"{path}._target_={node['_target_']!r}: {why}")
    return problems


def live_interpolations(tree: Any, key: str) -> list[str]:
    """``<key path>=<text>: ...`` for every string in resolved ``tree`` that still reads ``${...}``.

    Such a text (from an escaped ``\\${...}``) would become a live interpolation again once the plain
    tree is handed to Hydra; a config omniformer stores is resolved and never holds one.
    """
    return [
        f"{path}={node!r}: an interpolation left after resolving the stored config"
        for path, node in _nodes(tree, key)
        if isinstance(node, str) and "${" in node
    ]


def _nodes(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """Every node of a plain config tree with its key path (``data.members.mnist``, ``x[0]``)."""
    yield path, node
    if isinstance(node, Mapping):
        for name, value in node.items():
            yield from _nodes(value, f"{path}.{name}")
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from _nodes(value, f"{path}[{index}]")


def buildable_parts(
    config: DictConfig,
    allow_targets: Sequence[str] = (),
    data_overrides: Mapping[str, Any] | None = None,
    source: str | Path | None = None,
) -> dict[str, Any]:
    """The stored ``task`` and ``data`` configs as checked plain data, ready for ``instantiate``.

    Both parts are resolved against the whole stored config, ``data_overrides`` (the user's own
    ``data.*`` settings) are merged into ``data``, and every target of both is checked before either
    is returned. A transfer run's ``model.backbone.init_from`` is dropped: the checkpoint's own
    weights replace the pretrained ones, so the pretrained file is never read again. A missing part
    is ``None``.

    Raises:
        UntrustedConfigError: a part that cannot be resolved or is not a mapping, a target that is
            not allowed, or a leftover interpolation; every problem named by its config key.
    """
    from omniformer.transfer import without_init_from  # transfer imports checkpoint, which imports us

    where = f"the config stored in {source}" if source else "the checkpoint's stored config"
    parts: dict[str, Any] = {}
    problems: list[str] = []
    for key in _PARTS:
        node = config.get(key)
        if node is None:
            parts[key] = None
            continue
        if not isinstance(node, DictConfig):
            raise UntrustedConfigError(f"refusing to build {where}: {key}={node!r} is not a mapping")
        try:
            tree = OmegaConf.to_container(node, resolve=True)
        except OmegaConfBaseException as err:
            raise UntrustedConfigError(
                f"refusing to build {where}: its {key} config does not resolve ({err})"
            ) from None
        leftover = live_interpolations(tree, key)
        if not leftover and key == "data":
            tree = without_stored_writes(tree)
        if not leftover and key == "data" and data_overrides:
            merged = OmegaConf.merge(OmegaConf.create(tree), OmegaConf.create(dict(data_overrides)))
            tree = OmegaConf.to_container(merged, resolve=True)
            leftover = live_interpolations(tree, key)
        problems += leftover or untrusted_targets(tree, key, allow_targets)
        parts[key] = tree
    if problems:
        raise UntrustedConfigError(_refusal_message(where, problems, allow_targets))
    parts["task"] = without_init_from(parts["task"])
    return parts


#: Data-module arguments that make building the module write files where the config says (a
#: download into ``root``, a tokenised cache in ``cache_dir``): a stored config does not choose them.
STORED_WRITES = {"download": False, "cache_dir": None}


def without_stored_writes(tree: Any) -> Any:
    """``tree`` with every data module's ``download`` off and ``cache_dir`` at its default, members of a
    multi-task module included; the user's own ``data.*`` overrides are merged afterwards and may
    turn them back on."""
    if isinstance(tree, dict):
        out = {k: without_stored_writes(v) for k, v in tree.items()}
        if "_target_" in out:
            out.update({k: v for k, v in STORED_WRITES.items() if k in out})
        return out
    if isinstance(tree, list):
        return [without_stored_writes(v) for v in tree]
    return tree


# ------------------------------------------------------------------------------------------ the rules
def _refusal(target: Any, allow_targets: Sequence[str]) -> str | None:
    """Why ``target`` may not be built from a stored config, or ``None`` when it may."""
    if not isinstance(target, str) or not _DOTTED.fullmatch(target):
        return "a _target_ must be the dotted name of a class"
    if target in TRUSTED_TRANSFORMS or target in TRUSTED_FACTORIES:
        return None
    parts = target.split(".")
    if any(part.startswith("_") for part in parts):
        return "names a private or special attribute (a part starting with '_'), never a buildable class"
    if parts[0] == "omniformer":
        found, error = _locate(target)
        return error or _omniformer_refusal(found)
    plugin = next((p for p in allow_targets if target.startswith(p + ".")), None)
    if plugin is None and parts[0] in NOT_PLUGINS:
        return "not one of omniformer's own classes nor a torchvision transform on the trusted list"
    if plugin is None:
        return f"not an omniformer class, and its package {parts[0]} is not named by {FLAG}"
    found, error = _locate(target)
    if error:
        return error
    defined_in = getattr(found, "__module__", None) or ""
    if not (inspect.isclass(found) or inspect.isfunction(found)) or not _within(defined_in, plugin):
        return (
            f"is {_describe(found)}, not a class or function defined in {plugin} "
            f"({FLAG} trusts what a package defines, not what it imports)"
        )
    return None


def _omniformer_refusal(found: Any) -> str | None:
    """Why an object found under ``omniformer.`` may not be built, or ``None`` when it may."""
    from torch import nn

    if not inspect.isclass(found):
        return f"is {_describe(found)}, not a class"
    name = f"{found.__module__}.{found.__qualname__}"
    if not _within(found.__module__, "omniformer"):
        return f"is {name}, a class omniformer imports but does not define"
    settings = any(f"{base.__module__}.{base.__qualname__}" in SETTINGS_CLASSES for base in found.__mro__)
    if not (issubclass(found, nn.Module) or settings or _is_data_module(found)):
        return (
            f"is {name}, which is not a model part, data module or settings class "
            "(only those are built from a checkpoint)"
        )
    return None


def _is_data_module(found: type) -> bool:
    """A LightningDataModule; Lightning is imported only here, so that checking a model folder's
    config (model parts only) does not import it."""
    import lightning as L

    return issubclass(found, L.LightningDataModule)


def _locate(target: str) -> tuple[Any, str | None]:
    """The object a dotted name leads to, importing modules along it as Hydra's ``_locate`` does."""
    parts = target.split(".")
    try:
        found: Any = importlib.import_module(parts[0])
        for index in range(1, len(parts)):
            try:
                found = getattr(found, parts[index])
            except AttributeError:
                found = importlib.import_module(".".join(parts[: index + 1]))
    except Exception as err:  # an import that fails for any reason: nothing to build
        return None, f"cannot be imported ({type(err).__name__}: {err})"
    return found, None


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _describe(found: Any) -> str:
    if inspect.ismodule(found):
        return f"the module {found.__name__}"
    qualname = getattr(found, "__qualname__", None)
    module = getattr(found, "__module__", None)
    if qualname and module:
        kind = "class" if inspect.isclass(found) else "function" if callable(found) else "object"
        return f"the {kind} {module}.{qualname}"
    return f"a {type(found).__name__}"


def _refusal_message(where: str, problems: list[str], allow_targets: Sequence[str]) -> str:
    allowed = f" (now {FLAG}={list(allow_targets)})" if allow_targets else ""
    return (
        f"refusing to build {where}: a checkpoint's config is data anyone who can write the file can "
        "edit, so only omniformer's own model, data and settings classes, a fixed list of torchvision "
        f"transforms, and classes of plug-in packages named by {FLAG} are built from it{allowed}:\n  "
        + "\n  ".join(problems)
        + f"\nIf you trust this checkpoint and it uses classes of your own plug-in package, name the "
        f"package: {FLAG}='[my_package]' (e.g. {FLAG}='[omniformer_video]' for examples/video)"
    )
