"""Scale-out: 2 CPU processes with DDP (gloo) train exactly like 1 process with the same global batch."""

from __future__ import annotations

import json

import pytest
import torch

from omniformer.train import check_launch, run
from tests.helpers.callbacks import dump
from tests.helpers.data import image_folder
from tests.helpers.overrides import image_args
from tests.helpers.runs import compose_train, run_cli


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_with_the_same_global_batch(tmp_path):
    # 20 training images; 2 processes × 5 per batch = 1 process × 10 per batch: 2 steps per epoch.
    args = [a for a in image_args(image_folder(tmp_path / "images")) if not a.startswith("data.batch_size")]
    args = [*args, "model.dropout=0.0", "trainer.max_epochs=2", "optim.warmup_steps=1"]
    for name in ("ddp", "single"):
        (tmp_path / name).mkdir()
    run_cli(
        "omniformer.train",
        *args,
        "trainer=ddp_cpu",
        "data.batch_size=5",
        *dump(tmp_path, "ddp"),
        f"hydra.run.dir={tmp_path / 'ddp' / 'run'}",
    )
    run([*args, "data.batch_size=10", *dump(tmp_path, "single")], tmp_path / "single" / "run")

    rank0, rank1 = (torch.load(tmp_path / "ddp" / f"weights_rank{r}.pt", weights_only=True) for r in (0, 1))
    single = torch.load(tmp_path / "single" / "weights_rank0.pt", weights_only=True)
    assert rank0.keys() == rank1.keys() == single.keys()
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), f"ranks disagree on {key}"
        assert torch.allclose(rank0[key], single[key], atol=1e-5), f"DDP and 1 process differ on {key}"

    rows = [json.loads(line) for line in (tmp_path / "ddp" / "losses.jsonl").read_text().splitlines()]
    by_step: dict[int, list[float]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row["loss"])
    assert sorted({row["rank"] for row in rows}) == [0, 1]
    single_losses = {
        json.loads(line)["step"]: json.loads(line)["loss"]
        for line in (tmp_path / "single" / "losses.jsonl").read_text().splitlines()
    }
    assert sorted(by_step) == sorted(single_losses) == [1, 2, 3, 4]
    for step, pair in by_step.items():  # each rank's mean over 5 images; their mean is the 10-image mean
        assert len(pair) == 2
        assert sum(pair) / 2 == pytest.approx(single_losses[step], abs=1e-5), step
    results = json.loads((tmp_path / "ddp" / "run" / "results.json").read_text())
    assert results["steps"] == 4
    assert (tmp_path / "ddp" / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name", ["ddp", "ddp_cpu", "fsdp"])
def test_scale_out_trainer_configs_build_their_strategy(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from omniformer.config import check_train_config

    cfg = compose_train([f"trainer={name}"])
    check_train_config(cfg)
    strategy = instantiate(OmegaConf.to_container(cfg.trainer.strategy, resolve=True))
    expected = {"ddp": "DDPStrategy", "ddp_cpu": "DDPStrategy", "fsdp": "FSDPStrategy"}[name]
    assert type(strategy).__name__ == expected
    if name == "ddp_cpu":
        assert cfg.trainer.devices == 2 and cfg.trainer.accelerator == "cpu"
        assert strategy._process_group_backend == "gloo"
    if name == "fsdp":
        assert strategy._state_dict_type == "full"  # one checkpoint file the single-file tools can read


def test_an_external_multi_process_launch_needs_an_explicit_run_folder(tmp_path, monkeypatch):
    check_launch(tmp_path, run_dir_given=False)  # one process: the default timestamped folder is fine
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    with pytest.raises(ValueError, match=r"add hydra\.run\.dir=<a folder every process sees>"):
        check_launch(tmp_path, run_dir_given=False)
    check_launch(tmp_path, run_dir_given=True)
