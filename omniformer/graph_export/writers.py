"""Writing a :class:`~omniformer.graph_export.specs.GraphSpec` as ONNX or as a ``torch.export`` program.

Tracing failures are turned into one :class:`GraphExportError` that names the module whose code
could not be traced (the tokenizer, by class, when the failing frame is in its file) and the
operation (the ``aten`` op or the line of code the tracer stopped at).
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import io
import re
import traceback
import warnings
from pathlib import Path

import torch
from torch import nn

from omniformer.graph_export.specs import GraphSpec

FORMATS = {"onnx": ".onnx", "torch_export": ".pt2"}
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


class GraphExportError(RuntimeError):
    """A model that cannot be exported as a graph, or whose graph disagrees with eager PyTorch."""


def check_format(fmt: str) -> None:
    """One clear error for a format that is not one of :data:`FORMATS`."""
    if fmt not in FORMATS:
        known = ", ".join(f"{name!r} ({suffix})" for name, suffix in FORMATS.items())
        raise ValueError(f"unknown graph format {fmt!r}; known formats: {known}")


def require_onnx() -> None:
    """An ImportError naming the ``export`` extra when ONNX export or onnxruntime is missing."""
    missing = [name for name in _ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(_ONNX_PACKAGES)}; missing: {', '.join(missing)}. "
            "Install them with: pip install 'omniformer[export]'"
        )


def export_program(spec: GraphSpec) -> torch.export.ExportedProgram:
    """``torch.export.export`` of the spec's wrapper, with tracing failures named."""
    with _named_failures(spec.module, "torch.export"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.export.export(spec.module, spec.example_inputs, dynamic_shapes=spec.dynamic_shapes)


def write_graph(spec: GraphSpec, out: Path, fmt: str) -> None:
    """Trace ``spec`` and write it to ``out`` as ``fmt`` (``onnx`` or ``torch_export``)."""
    check_format(fmt)
    if fmt == "torch_export":
        program = export_program(spec)
        with warnings.catch_warnings():  # notes on tensors sharing storage; the check below reloads it
            warnings.simplefilter("ignore")
            torch.export.save(program, str(out))
        return
    require_onnx()
    quiet = io.StringIO()  # the exporter prints its progress to stdout
    with (
        _named_failures(spec.module, "ONNX"),
        warnings.catch_warnings(),
        contextlib.redirect_stdout(quiet),
    ):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            spec.module,
            spec.example_inputs,
            dynamo=True,
            dynamic_shapes=spec.dynamic_shapes,
            input_names=spec.input_names,
            output_names=spec.output_names,
        )
    program.save(str(out))


@contextlib.contextmanager
def _named_failures(module: nn.Module, exporter: str):
    """Re-raise any tracing failure as a :class:`GraphExportError` naming the module and the op."""
    try:
        yield
    except GraphExportError:
        raise
    except Exception as err:
        raise GraphExportError(describe_failure(module, exporter, err)) from err


def describe_failure(module: nn.Module, exporter: str, err: BaseException) -> str:
    """A one-paragraph account of a tracing failure: which module (by class) and which op or line."""
    text = "\n".join(f"{e}\n{''.join(traceback.format_tb(e.__traceback__))}" for e in reversed(_chain(err)))
    culprit = _culprit(module, text)
    op = _failing_op(text)
    first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
    hint = ""
    if "data-dependent" in text or "GuardOnDataDependentSymNode" in text:
        hint = " A graph cannot read tensor values into Python (int(), float(), if on a tensor)."
    return f"{exporter} could not trace {culprit}: {op} ({type(err).__name__}: {first[:300]}).{hint}"


def _chain(err: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        chain.append(err)
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return chain


def _culprit(module: nn.Module, text: str) -> str:
    """The submodule class whose source file the failure's frames name (tokenizers first)."""
    net = getattr(module, "net", None)
    candidates: list[tuple[str, nn.Module]] = []
    if net is not None:
        candidates += [(f"tokenizer {name!r}", m) for name, m in net.tokenizers.items()]
        candidates += [("backbone", net.backbone)]
        candidates += [(f"head {name!r}", m) for name, m in net.heads.items()]
    for label, sub in candidates:
        classes = {type(m) for m in sub.modules()}
        for cls in classes:
            try:
                source = inspect.getsourcefile(cls)
            except TypeError:
                continue
            if source and source in text:
                owner = type(sub).__name__
                inner = "" if cls is type(sub) else f" (its {cls.__name__})"
                return f"the {label} ({owner}){inner}"
    return f"the {type(module).__name__} graph"


def _failing_op(text: str) -> str:
    """The line of our (or plug-in) code the tracer stopped at, else the aten op it failed on."""
    raised = re.search(
        r"The following call raised this error:\s*\n\s*File \"([^\"]+)\", line (\d+), in (\w+)\n\s*(.+)", text
    )
    frames = [raised] if raised else []
    frames += reversed(list(re.finditer(r"File \"([^\"]+)\", line (\d+), in (\w+)\n\s*(.+)", text)))
    for found in frames:
        path, line, function, code = found.groups()
        if (
            "site-packages" not in path
            and "/lib/python" not in path
            and "omniformer/graph_export/" not in path
        ):
            return f"`{code.strip()}` in {function}() ({Path(path).name}:{line})"
    op = re.search(r"\b(aten[.:]+\w+(?:\.\w+)?)", text)
    if op:
        return f"operator {op.group(1)}"
    return "an operation the exporter does not support"
