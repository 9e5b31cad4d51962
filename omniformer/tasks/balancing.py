"""How several tasks share one optimizer on one backbone: loss scales and per-member AdamW state.

With one member per step, the members' gradients share one AdamW, whose second-moment estimate of
each shared parameter mixes every member's gradient: a member whose gradients on the backbone are
smaller than the others' then moves it by smaller steps than it would alone. Two remedies:

* ``grad_norm`` (:func:`balance_scales`, :func:`update_running_norm`): each member's loss is scaled so
  that its backbone gradient has the same running norm as the others' (the geometric mean of the
  members' running norms), in the spirit of GradNorm (Chen et al. 2018).
* ``member_moments`` (:class:`MemberMoments`): each member keeps its own AdamW state (moments and step
  count) for every parameter, so a member's steps on the shared backbone are the steps its own
  optimizer would take, whatever the other members' gradients look like.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

BALANCE = ("none", "grad_norm", "member_moments")
STATES_KEY = "multitask_member_optimizer_states"  # checkpoint entry of member_moments' states
MIXED = "*"  # the optimizer state of steps whose gradients several members made (member_moments)


def balance_scales(norm_sum: Tensor, weight_sum: Tensor) -> Tensor:
    """Each member's loss scale under ``grad_norm`` (1 for members not yet measured).

    ``norm_sum / weight_sum`` is a member's bias-corrected running gradient norm; the scale brings it
    to the geometric mean of the measured members' norms. No host synchronisation: no branches.
    """
    measured = weight_sum > 0
    norms = torch.where(measured, norm_sum / weight_sum.clamp_min(1e-12), 1.0)
    logs = torch.where(measured, torch.log(norms), 0.0)
    reference = torch.exp(logs.sum() / measured.sum().clamp_min(1))
    return torch.where(measured, reference / norms, 1.0).detach()


def update_running_norm(
    norm_sum: Tensor, weight_sum: Tensor, index: int, norm: Tensor, momentum: float
) -> None:
    """Fold one step's gradient ``norm`` of member ``index`` into its running norm, in place; a norm
    that is zero (a zero-initialised head's first step) or not finite is skipped on the device."""
    usable = torch.isfinite(norm) & (norm > 0)
    norm_sum[index] = torch.where(usable, momentum * norm_sum[index] + (1 - momentum) * norm, norm_sum[index])
    weight_sum[index] = torch.where(usable, momentum * weight_sum[index] + (1 - momentum), weight_sum[index])


def squared_grad_norm(parameters: Iterable[nn.Parameter]) -> Tensor | None:
    """Sum of squared gradient entries of ``parameters`` (``None`` when none has a gradient)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    return torch.stack([g.detach().float().pow(2).sum() for g in grads]).sum()


class MemberMoments:
    """Every member's own optimizer state, swapped into the optimizer before each of its steps.

    The states live here, keyed by member and parameter; :meth:`use` points the optimizer's
    per-parameter state at a member's (created empty on first use: the optimizer fills it on its first
    step, exactly as for a fresh parameter). A step whose gradients several members made (gradient
    accumulation) uses a state of its own, :data:`MIXED`.
    """

    def __init__(self) -> None:
        self.states: dict[str, dict[nn.Parameter, dict]] = {}
        self._to_place = False

    def use(self, optimizer: torch.optim.Optimizer, member: str) -> None:
        """Give ``optimizer`` the state of ``member`` for every parameter."""
        if self._to_place:
            self._place(optimizer)
        states = self.states.setdefault(member, {})
        for group in optimizer.param_groups:
            for param in group["params"]:
                optimizer.state[param] = states.setdefault(param, {})

    def _place(self, optimizer: torch.optim.Optimizer) -> None:
        """Move states read from a checkpoint where the optimizer keeps them: moments on the
        parameter's device and dtype, the step count there too for fused or capturable groups."""
        self._to_place = False
        on_device = {
            param: bool(group.get("fused") or group.get("capturable"))
            for group in optimizer.param_groups
            for param in group["params"]
        }
        for states in self.states.values():
            for param, state in states.items():
                for key, value in state.items():
                    if not isinstance(value, Tensor):
                        continue
                    if key == "step":
                        device = param.device if on_device.get(param, False) else torch.device("cpu")
                        state[key] = value.to(device=device, dtype=torch.float32)
                    else:
                        state[key] = value.to(device=param.device, dtype=param.dtype)

    def state_dict(self, named_parameters: Iterable[tuple[str, nn.Parameter]]) -> dict[str, dict[str, dict]]:
        """Every member's non-empty states by parameter name (what a checkpoint stores)."""
        names = {param: name for name, param in named_parameters}
        return {
            member: {names[param]: dict(state) for param, state in states.items() if state}
            for member, states in self.states.items()
        }

    def load_state_dict(
        self,
        saved: Mapping[str, Mapping[str, Any]],
        named_parameters: Iterable[tuple[str, nn.Parameter]],
        members: Iterable[str],
    ) -> None:
        """Restore states saved by :meth:`state_dict`; an unknown member or parameter is an error
        naming it."""
        params = dict(named_parameters)
        known = list(members)
        restored: dict[str, dict[nn.Parameter, dict]] = {}
        for member, states in saved.items():
            if member != MIXED and member not in known:
                raise ValueError(
                    f"the checkpoint holds optimizer state of member {member!r}, which this task lacks "
                    f"(members: {', '.join(known)})"
                )
            for name, state in states.items():
                if name not in params:
                    raise ValueError(
                        f"the checkpoint holds {member}'s optimizer state of parameter {name!r}, "
                        "which this model lacks"
                    )
                restored.setdefault(member, {})[params[name]] = dict(state)
        self.states = restored
        self._to_place = True
