"""Scale-out launch paths on one CPU machine: torchrun, SLURM's environment, FSDP, the submitit launcher.

``tests/test_ddp.py`` covers Lightning starting the processes itself (``trainer=ddp_cpu``). Here the
processes come from outside: torchrun really starts 2 processes; SLURM is only simulated through the
variables ``srun`` sets (no cluster: rendezvous between nodes, ``sbatch`` and requeueing are not run);
FSDP is refused on CPU by Lightning, which is asserted so the docs notice when that changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from omniformer.train import run
from tests.helpers.callbacks import dump, launch_record
from tests.helpers.paths import REPO
from tests.helpers.runs import compose_train, read_results, run_cli, run_main


def corpus(path: Path) -> Path:
    """8 kB of text for a character vocabulary (no BPE to train)."""
    path.write_text("to be or not to be, that is the question\n" * 200)
    return path


def lm_args(text: Path) -> list[str]:
    """A 13k-parameter character LM, 4 optimizer steps, no dropout (ranks and runs comparable)."""
    return [
        "data=textfile",
        f"data.path={text}",
        "data.tokenizer=char",
        "data.block_size=16",
        "data.batch_size=4",
        "model.dim=32",
        "model.depth=1",
        "model.heads=2",
        "model.dropout=0.0",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "trainer.limit_val_batches=2",
        "trainer.log_every_n_steps=1",
        "optim.warmup_steps=1",
        "task.sample_tokens=0",
        "callbacks.progress=null",
        "test_after_fit=false",
    ]


@pytest.mark.slow
def test_torchrun_processes_train_one_model_like_one_process_with_the_same_global_batch(tmp_path):
    # torchrun (python -m torch.distributed.run) starts both processes and sets WORLD_SIZE, RANK,
    # LOCAL_RANK, TORCHELASTIC_RUN_ID; Lightning's TorchElasticEnvironment uses them instead of
    # starting processes of its own, as long as devices × num_nodes equals torchrun's world size.
    args = lm_args(corpus(tmp_path / "corpus.txt"))
    for name in ("torchrun", "single"):
        (tmp_path / name).mkdir()
    run_dir = tmp_path / "torchrun" / "run"
    # PYTHONPATH: the recording callbacks live in tests/, and the processes run in the temp folder.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"),
        *("-m", "omniformer.train", *args, "trainer=ddp_cpu", "trainer.devices=2"),
        *dump(tmp_path, "torchrun"),
        *launch_record(tmp_path / "torchrun"),
        f"hydra.run.dir={run_dir}",
    ]
    # cwd is the temp folder: a process that ignored hydra.run.dir would leave outputs/ there.
    proc = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"

    records = [json.loads((tmp_path / "torchrun" / f"launch_rank{r}.json").read_text()) for r in (0, 1)]
    for rank, record in enumerate(records):
        assert record["environment"] == "TorchElasticEnvironment" and record["torchelastic"]
        assert (record["world_size"], record["global_rank"], record["local_rank"]) == (2, rank, rank)
    assert records[0]["pid"] != records[1]["pid"]
    assert not (tmp_path / "outputs").exists()
    assert read_results(run_dir)["steps"] == 4
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]

    # The language model's rank r trains on batch 2·i + r at step i; one process with 2 accumulated
    # batches of the same size sees batches 2·i and 2·i + 1 and averages their gradients like DDP.
    run([*args, "trainer.accumulate_grad_batches=2", *dump(tmp_path, "single")], tmp_path / "single" / "run")
    rank0, rank1 = (
        torch.load(tmp_path / "torchrun" / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1)
    )
    one = torch.load(tmp_path / "single" / "weights_rank0.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() == one.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        assert torch.allclose(rank0[key], one[key], atol=1e-5), f"torchrun and 1 process differ on {key}"

    def rows(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / name / "losses.jsonl").read_text().splitlines()]

    assert sorted((row["rank"], row["batch"]) for row in rows("torchrun")) == [
        (r, b) for r in (0, 1) for b in range(4)
    ]
    # Lightning reports an accumulated batch's loss divided by the number of batches accumulated.
    single = {row["batch"]: 2 * row["loss"] for row in rows("single")}
    assert sorted(single) == list(range(8))
    for row in rows("torchrun"):
        assert row["loss"] == pytest.approx(single[2 * row["batch"] + row["rank"]], abs=1e-5), row


class _Built(Exception):
    """Raised instead of fitting: the trainer ``omniformer-train`` built is all a test needs."""


def _raise_built(*args, **kwargs):
    raise _Built("the check came too late: the process group was being formed")


def srun_task(monkeypatch, tasks_per_node: int, nodes: int, procid: int) -> None:
    """Set the variables ``srun`` gives task ``procid`` of ``tasks_per_node × nodes`` (and nothing else)."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "TORCHELASTIC_RUN_ID", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, "")  # so that monkeypatch restores the original state afterwards
        monkeypatch.delenv(name)
    slurm = {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "omniformer",  # not "bash"/"interactive", which Lightning treats as no SLURM
        "SLURM_NNODES": nodes,
        "SLURM_NODELIST": "node[07-08]" if nodes > 1 else "node07",
        "SLURM_NTASKS": tasks_per_node * nodes,
        "SLURM_NTASKS_PER_NODE": tasks_per_node,
        "SLURM_PROCID": procid,
        "SLURM_LOCALID": procid % tasks_per_node,
        "SLURM_NODEID": procid // tasks_per_node,
    }
    for name, value in slurm.items():
        monkeypatch.setenv(name, str(value))


@pytest.mark.parametrize(
    ("tasks_per_node", "nodes"), [(2, 1), (1, 2)], ids=["2-tasks-1-node", "1-task-2-nodes"]
)
def test_an_srun_task_gets_its_ranks_from_slurm(tmp_path, monkeypatch, tasks_per_node, nodes):
    # Task 1 of 2 as srun starts it; fit is replaced, so no process group is formed (there is no task 0).
    srun_task(monkeypatch, tasks_per_node, nodes, procid=1)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)  # the Trainer sets it to the task's rank
    built: list[L.Trainer] = []

    def fit(trainer, *args, **kwargs):
        built.append(trainer)
        raise _Built

    monkeypatch.setattr(L.Trainer, "fit", fit)
    overrides = ["trainer=ddp_cpu", f"trainer.devices={tasks_per_node}", f"trainer.num_nodes={nodes}"]
    with pytest.raises(_Built):
        run([*lm_args(corpus(tmp_path / "corpus.txt")), *overrides], tmp_path / "run")

    (trainer,) = built
    environment = trainer.strategy.cluster_environment
    assert type(environment).__name__ == "SLURMEnvironment"
    assert (trainer.world_size, trainer.num_nodes, trainer.num_devices) == (2, nodes, tasks_per_node)
    assert (trainer.global_rank, trainer.local_rank, trainer.node_rank) == (
        1,
        1 % tasks_per_node,
        1 // tasks_per_node,
    )
    assert not trainer.is_global_zero
    # Every task derives the same rendezvous point: the first node of the job, a port from the job id.
    assert (environment.main_address, environment.main_port) == ("node07", 15000 + 4242)


def test_devices_that_differ_from_srun_tasks_per_node_are_refused(tmp_path, monkeypatch):
    # Lightning checks the shape when fit starts, before the rendezvous (which would wait for task 1).
    srun_task(monkeypatch, tasks_per_node=2, nodes=1, procid=0)
    monkeypatch.setattr(rank_zero_only, "rank", rank_zero_only.rank)
    monkeypatch.setattr(torch.distributed, "init_process_group", _raise_built)
    with pytest.raises(ValueError, match=r"devices=1.*--ntasks-per-node=2.*does not match"):
        run(
            [*lm_args(corpus(tmp_path / "corpus.txt")), "trainer=ddp_cpu", "trainer.devices=1"],
            tmp_path / "run",
        )


@pytest.mark.slow
def test_an_srun_task_without_a_run_folder_refuses_to_start(tmp_path, monkeypatch):
    srun_task(monkeypatch, tasks_per_node=2, nodes=1, procid=1)
    proc = run_main("omniformer.train", "trainer=ddp_cpu", cwd=tmp_path, check=False)
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "this is one of 2 processes of a multi-process launch, but hydra.run.dir is not set" in output
    assert "add hydra.run.dir=<a folder every process sees>" in output


def test_lightning_refuses_fsdp_on_cpu():
    # Why trainer=fsdp is GPU-only (docs/TRAINING.md; omniformer's config check says so before Lightning
    # does). If this starts failing, Lightning runs FSDP on CPU: test it here and update the docs.
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cpu = ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]
    cfg = compose_train(["trainer=fsdp", *cpu])
    message = r"The strategy `fsdp` requires a GPU accelerator, but received `accelerator='cpu'`"
    with pytest.raises(InstantiationException, match=message):
        instantiate(OmegaConf.to_container(cfg.trainer, resolve=True), logger=False)


def documented_submitit_command() -> list[str]:
    """The ``omniformer-train --multirun hydra/launcher=submitit_slurm ...`` example of docs/TRAINING.md."""
    import shlex

    text = (REPO / "docs" / "TRAINING.md").read_text()
    start = text.index("omniformer-train --multirun hydra/launcher=submitit_slurm")
    lines = []
    for line in text[start:].splitlines():
        lines.append(line.rstrip("\\ "))
        if not line.rstrip().endswith("\\"):
            break
    return shlex.split(" ".join(lines))


def test_the_documented_submitit_slurm_sweep_composes():
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed"
    )
    args = documented_submitit_command()
    assert args[:3] == ["omniformer-train", "--multirun", "hydra/launcher=submitit_slurm"]
    # --cfg cannot be combined with --multirun: compose the first job of the sweep.
    first = [arg.split(",")[0] for arg in args[2:]]
    out = run_cli("omniformer.train", *first, "--cfg", "hydra", "-p", "hydra.launcher").stdout
    launcher = {}
    for line in out.splitlines():
        key, _, value = line.partition(": ")
        launcher[key] = value
    assert launcher["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    for arg in first:
        if arg.startswith("hydra.launcher."):
            key, value = arg.removeprefix("hydra.launcher.").split("=")
            assert launcher[key] == value, key


@pytest.mark.slow
def test_a_sweep_through_the_local_submitit_launcher_writes_one_folder_per_job(tmp_path):
    pytest.importorskip(
        "hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher not installed"
    )
    sweep = tmp_path / "sweep"
    args = [*lm_args(corpus(tmp_path / "corpus.txt")), "trainer.max_steps=2", "trainer.val_check_interval=2"]
    run_cli(
        "omniformer.train",
        "--multirun",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=5",
        f"hydra.sweep.dir={sweep}",
        *args,
        "optim.lr=1e-3,3e-4",
        cwd=tmp_path,
    )
    for job in ("0", "1"):
        assert read_results(sweep / job)["steps"] == 2
        assert (sweep / job / "checkpoints" / "last.ckpt").is_file()
    assert not (tmp_path / "outputs").exists()
