"""Checks that belong to how a run was launched: one run folder for every process of a launch."""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_only


def is_rank_zero() -> bool:
    """Whether this process is the launch's first (or only) one."""
    return (rank_zero_only.rank or 0) == 0


def check_launch(run_dir: Path, run_dir_given: bool) -> None:
    """Every process of a multi-process launch (torchrun, srun) must write to one run folder.

    Hydra's default run folder is a timestamp, which differs between processes started a second
    apart; Lightning's own launcher passes its folder on, external launchers cannot.
    """
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    slurm = int(os.environ.get("SLURM_NTASKS", "1") or 1) if "SLURM_PROCID" in os.environ else 1
    if max(world, slurm) > 1 and not run_dir_given:
        raise ValueError(
            f"this is one of {max(world, slurm)} processes of a multi-process launch, but hydra.run.dir is "
            f"not set (this process would write to {run_dir}); add hydra.run.dir=<a folder every process "
            "sees> to the command"
        )
