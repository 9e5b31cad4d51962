"""Seeing inside training: how much each block changes the residual stream, and the gradient norm.

:class:`ResidualDiagnostics` records, every ``every_n_steps`` steps on one fixed probe batch, the
*residual contribution* of every block of the shared backbone::

    r_l = ‖block_l(x) − x‖ / ‖x‖        (Frobenius norms over the whole probe batch)

where ``x`` is the residual stream entering block ``l``. In a pre-norm residual network each block
adds ``attn(norm(x))`` and ``mlp(norm(x))`` to the stream, so ``r_l`` is how much the block rewrites
what it receives. omniformer initialises residual projections near zero, so every ``r_l`` starts
near 0 and the heatmap (block × step) shows depth being recruited during training — the
"short algorithm first, deeper blocks kick in later" dynamics of pre-norm nets (Xiong et al. 2020;
the block-as-iterative-refinement view of Veit et al. 2016, Greff et al. 2017).

It also logs the global gradient norm (before clipping) every ``grad_norm_every_n_steps`` steps as
``grad_norm``. Nothing runs on the other steps; values stay on the device until a probe is logged or
the history is saved, so training steps issue no extra host synchronisation.

Enable it with ``omniformer-train callbacks=diagnostics``; the history lands in
``<run>/diagnostics/`` as ``residual.json``, ``residual.csv``, ``grad_norm.csv`` and
``residual_heatmap.png``.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import move_data_to_device, rank_zero_only
from torch import Tensor, nn

from omniformer.files import atomic_write_text

DEFINITION = "||block_l(x) - x||_F / ||x||_F on a fixed probe batch (x: residual stream entering block l)"


def _slice(batch: Any, n: int | None) -> Any:
    """The first ``n`` samples of every tensor in a (nested) batch, detached and cloned."""
    if isinstance(batch, Tensor):
        part = batch if n is None or batch.ndim == 0 else batch[:n]
        return part.detach().clone()
    if isinstance(batch, (list, tuple)):
        return type(batch)(_slice(item, n) for item in batch)
    if isinstance(batch, dict):
        return {key: _slice(value, n) for key, value in batch.items()}
    return batch


def probe_forward(task: L.LightningModule, batch: Any) -> Any:
    """Run ``task``'s objective (``model_step``) on a training ``batch``, as its training step does."""
    model_step = getattr(task, "model_step", None)
    if not callable(model_step):
        raise TypeError(
            f"ResidualDiagnostics cannot run {type(task).__name__} on a probe batch; give the task a "
            "`model_step(batch)` method (omniformer's tasks have one)"
        )
    return model_step(batch)


def residual_contributions(
    blocks: nn.ModuleList, forward: Callable[[], Any], *, compiled_eager: bool = True
) -> Tensor:
    """``r_l`` for every block while ``forward()`` runs once: a ``depth``-long tensor on the device.

    Forward hooks on ``blocks`` see each block's input (the residual stream) and output; they are
    removed before returning. ``compiled_eager`` runs a ``torch.compile``'d model eagerly for this
    one call, so hooks neither break nor recompile its graph.
    """
    ratios: dict[int, Tensor] = {}

    def make_hook(index: int):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["x"]
            delta = torch.linalg.vector_norm((output - x).float())
            ratios[index] = delta / torch.linalg.vector_norm(x.float()).clamp_min(1e-12)

        return hook

    handles = [block.register_forward_hook(make_hook(i), with_kwargs=True) for i, block in enumerate(blocks)]
    try:
        stance = getattr(torch.compiler, "set_stance", None)
        if compiled_eager and stance is not None:
            with stance("force_eager"):
                forward()
        else:
            forward()
    finally:
        for handle in handles:
            handle.remove()
    missing = [i for i in range(len(blocks)) if i not in ratios]
    if missing:
        raise RuntimeError(f"the probe forward pass did not run blocks {missing}")
    return torch.stack([ratios[i] for i in range(len(blocks))])


def gradient_norm(parameters) -> Tensor | None:
    """Global L2 norm of the gradients of ``parameters`` (``None`` when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


class ResidualDiagnostics(L.Callback):
    """Residual-contribution history per block and gradient-norm logging (see the module docstring).

    Args:
        every_n_steps: probe the residual stream every this many optimizer steps (and at step 0,
            before the first update, and after the last step).
        grad_norm_every_n_steps: log ``grad_norm`` (global L2 norm of the gradients, before
            clipping) every this many steps (``0`` or ``None``: never).
        probe_samples: samples of the first training batch kept as the fixed probe (``None``: all).
        out_dir: where the history and heatmap go (default: ``<trainer.default_root_dir>/diagnostics``).
        log_residuals: also send ``resid/block_<l>`` to the loggers at each probe (one host sync
            per probe, never per step).
        plot: draw ``residual_heatmap.png`` at the end of training.
    """

    def __init__(
        self,
        every_n_steps: int = 50,
        grad_norm_every_n_steps: int | None = 50,
        probe_samples: int | None = 8,
        out_dir: str | None = None,
        log_residuals: bool = True,
        plot: bool = True,
    ) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if grad_norm_every_n_steps is not None and grad_norm_every_n_steps < 0:
            raise ValueError(f"grad_norm_every_n_steps must be >= 0 or null, got {grad_norm_every_n_steps}")
        if probe_samples is not None and probe_samples < 1:
            raise ValueError(f"probe_samples must be >= 1 or null, got {probe_samples}")
        self.every_n_steps = every_n_steps
        self.grad_norm_every_n_steps = grad_norm_every_n_steps or 0
        self.probe_samples = probe_samples
        self.out_dir = out_dir
        self.log_residuals, self.plot = log_residuals, plot
        self.probe: Any = None
        self.steps: list[int] = []
        self._ratios: list[Tensor | list[float]] = []
        self.grad_steps: list[int] = []
        self._grad_norms: list[Tensor | float] = []
        self._fresh_fit = True

    # -- recording --------------------------------------------------------------------------------

    @staticmethod
    def _backbone(pl_module: L.LightningModule) -> nn.Module:
        net = getattr(pl_module, "net", None)
        backbone = getattr(net, "backbone", None)
        if backbone is None or not hasattr(backbone, "blocks"):
            raise TypeError(
                f"ResidualDiagnostics needs a task with `net.backbone.blocks` (an omniformer task); "
                f"{type(pl_module).__name__} has none"
            )
        return backbone

    def record(self, trainer: L.Trainer, pl_module: L.LightningModule, step: int) -> Tensor:
        """Probe now: append ``r_l`` of every block at ``step`` to the history and return it."""
        if self.probe is None:
            raise RuntimeError("no probe batch yet: the callback takes it from the first training batch")
        blocks = self._backbone(pl_module).blocks
        self.probe = move_data_to_device(self.probe, pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad(), trainer.precision_plugin.forward_context():
                ratios = residual_contributions(blocks, lambda: probe_forward(pl_module, self.probe))
        finally:
            pl_module.train(was_training)
        self.steps.append(int(step))
        self._ratios.append(ratios.detach())
        if self.log_residuals and trainer.loggers:
            values = ratios.tolist()  # one sync per probe
            metrics = {f"resid/block_{i}": v for i, v in enumerate(values)}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=int(step))
        return ratios

    def on_train_start(self, trainer, pl_module) -> None:
        self._backbone(pl_module)  # fail at the start, not at the first probe
        self._fresh_fit = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.probe is None:
            self.probe = _slice(batch, self.probe_samples)
        if self._fresh_fit:  # the state before this fit's first update (step 0: the initialisation)
            self._fresh_fit = False
            if trainer.global_step not in self.steps:
                self.record(trainer, pl_module, trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step  # already counts this batch's optimizer step
        if step % self.every_n_steps == 0 and step not in self.steps:
            self.record(trainer, pl_module, step)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        every = self.grad_norm_every_n_steps
        if not every or trainer.global_step % every:
            return
        norm = gradient_norm(pl_module.parameters())
        if norm is None:
            return
        self.grad_steps.append(int(trainer.global_step))
        self._grad_norms.append(norm.detach())
        if trainer.loggers:
            # Straight to the loggers at this exact step (self.log would defer it to Lightning's
            # log_every_n_steps cadence); one host sync per logged value, never per step.
            value = float(norm)
            for logger in trainer.loggers:
                logger.log_metrics({"grad_norm": value}, step=int(trainer.global_step))

    def on_train_end(self, trainer, pl_module) -> None:
        if self.probe is not None and trainer.global_step not in self.steps:
            self.record(trainer, pl_module, trainer.global_step)
        self.save(self._out_dir(trainer))

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self.steps:
            self.save(self._out_dir(trainer))

    # -- results ----------------------------------------------------------------------------------

    @property
    def ratios(self) -> list[list[float]]:
        """The history as plain floats, ``[probe][block]`` (converts device values once)."""
        self._ratios = [r.tolist() if isinstance(r, Tensor) else r for r in self._ratios]
        return [list(r) for r in self._ratios]

    @property
    def grad_norms(self) -> list[float]:
        """Logged gradient norms as plain floats, aligned with ``grad_steps``."""
        self._grad_norms = [float(g) for g in self._grad_norms]
        return list(self._grad_norms)

    def history(self) -> dict[str, Any]:
        """Everything recorded, as JSON-ready data."""
        ratios = self.ratios
        depth = len(ratios[0]) if ratios else 0
        return {
            "definition": DEFINITION,
            "steps": list(self.steps),
            "blocks": depth,
            # block-major, the heatmap's layout: ratios[block][probe]
            "ratios": [[row[b] for row in ratios] for b in range(depth)],
            "grad_norm": {"steps": list(self.grad_steps), "values": self.grad_norms},
        }

    def _out_dir(self, trainer: L.Trainer) -> Path:
        return Path(self.out_dir) if self.out_dir else Path(trainer.default_root_dir) / "diagnostics"

    @rank_zero_only
    def save(self, out_dir: str | Path) -> list[Path]:
        """Write ``residual.json``, ``residual.csv``, ``grad_norm.csv`` and the heatmap PNG."""
        out_dir = Path(out_dir)
        history = self.history()
        written = [out_dir / "residual.json"]
        atomic_write_text(written[0], json.dumps(history, indent=1) + "\n")
        table = io.StringIO()
        writer = csv.writer(table)
        writer.writerow(["step", *(f"block_{b}" for b in range(history["blocks"]))])
        for j, step in enumerate(history["steps"]):
            writer.writerow([step, *(history["ratios"][b][j] for b in range(history["blocks"]))])
        atomic_write_text(out_dir / "residual.csv", table.getvalue())
        written.append(out_dir / "residual.csv")
        if history["grad_norm"]["steps"]:
            grads = io.StringIO()
            writer = csv.writer(grads)
            writer.writerow(["step", "grad_norm"])
            writer.writerows(zip(history["grad_norm"]["steps"], history["grad_norm"]["values"]))
            atomic_write_text(out_dir / "grad_norm.csv", grads.getvalue())
            written.append(out_dir / "grad_norm.csv")
        if self.plot and history["steps"]:
            from omniformer.viz.curves import plot_residual_heatmap

            written.append(
                plot_residual_heatmap(history["steps"], history["ratios"], out_dir / "residual_heatmap.png")
            )
        return written

    def state_dict(self) -> dict[str, Any]:
        """The history and the probe batch, so a resumed run continues the same heatmap."""
        return {
            "probe": move_data_to_device(self.probe, torch.device("cpu")),
            "steps": list(self.steps),
            "ratios": self.ratios,
            "grad_steps": list(self.grad_steps),
            "grad_norms": self.grad_norms,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.probe = state_dict.get("probe")
        self.steps = list(state_dict.get("steps", []))
        self._ratios = [list(r) for r in state_dict.get("ratios", [])]
        self.grad_steps = list(state_dict.get("grad_steps", []))
        self._grad_norms = [float(g) for g in state_dict.get("grad_norms", [])]
