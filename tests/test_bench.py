"""benchmarks/: FLOPs formula, result schema, Markdown table, smoke and GPU dry-run suites."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from benchmarks.experiments import parse_variant
from benchmarks.flops import (
    counted_flops,
    flops_per_token,
    matmul_parameters,
    mfu,
    model_flops_per_token,
)
from benchmarks.machine import PeakMemory, machine_info, measure_peak_flops
from benchmarks.report import load_results, render_markdown, validate_result
from benchmarks.workloads import Workload, batch_shape, build_workloads, prefetch_batches
from omniformer.backbone import Backbone
from omniformer.heads import LMHead
from omniformer.model import OmniModel
from omniformer.tokenizers import TextTokenizer
from tests.helpers.paths import REPO

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tiny_lm(dim: int = 8, depth: int = 2, heads: int = 2, vocab: int = 16) -> OmniModel:
    backbone = Backbone(dim=dim, depth=depth, heads=heads, mlp_ratio=4.0, max_seq_len=64)
    return OmniModel(
        {"text": TextTokenizer(vocab, dim, max_len=64)}, backbone, {"lm": LMHead(dim, vocab, tie_to="text")}
    )


def test_flops_per_token_matches_a_hand_count():
    model = tiny_lm(dim=8, depth=2, heads=2, vocab=16)
    # Per block: qkv 8·24 + attention out 8·8 + MLP in 8·32 + MLP out 32·8 = 768 weights in matmuls;
    # two blocks + the LM head (16·8, tied to the embedding, counted once as a matmul) = 1664.
    assert matmul_parameters(model) == 2 * (8 * 24 + 8 * 8 + 8 * 32 + 32 * 8) + 16 * 8 == 1664
    seq = 4
    # training: 6N + 12·L·D·T = 6·1664 + 12·2·8·4 = 9984 + 768
    assert flops_per_token(1664, depth=2, dim=8, seq_len=seq) == 10752
    assert model_flops_per_token(model, model.backbone, seq) == 10752
    # inference: 2N + 4·L·D·T
    assert model_flops_per_token(model, model.backbone, seq, training=False) == 2 * 1664 + 4 * 2 * 8 * 4


def test_flops_formula_agrees_with_torch_flop_counter():
    model = tiny_lm(dim=16, depth=3, heads=4, vocab=32)
    ids = torch.randint(32, (3, 10))

    def step():
        logits = model("text", "lm", ids, causal=True)
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids.flatten()).backward()

    counted = counted_flops(step)
    assert counted == 3 * 10 * model_flops_per_token(model, model.backbone, 10)


def test_mfu_and_bad_sizes():
    assert mfu(1e9, 100.0, 1e12) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="peak"):
        mfu(1e9, 1.0, 0.0)
    with pytest.raises(ValueError, match="non-negative"):
        flops_per_token(-1, 1, 1, 1)


def test_machine_info_peak_and_memory():
    info = machine_info("cpu")
    assert info["cpu_cores"] >= 1 and info["torch"] == torch.__version__ and info["cpu_model"]
    peak = measure_peak_flops("cpu", "float32", size=64, repeats=2)
    assert peak["flops_per_sec"] >= peak["median_flops_per_sec"] > 0
    with pytest.raises(ValueError, match=r"peak\.dtype"):
        measure_peak_flops("cpu", "int8")
    with PeakMemory(torch.device("cpu")) as memory:
        block = torch.ones(64, 2**20 // 8, dtype=torch.float64)  # 64 MiB, touched
        block += 1
    assert memory.peak_mib > 64 and memory.kind.startswith("rss")


def test_variant_names():
    assert parse_variant("lightning_compiled") == ("lightning", True)
    assert parse_variant("plain") == ("plain", False)
    with pytest.raises(ValueError, match="unknown"):
        parse_variant("lightnin")


def test_workload_registry_and_data_override_errors():
    registry = build_workloads(
        {"w": {"name": "w", "overrides": ["task=language_modeling"], "data": {"_target_": "x.Y", "a": 1}}}
    )
    assert isinstance(registry["w"], Workload) and registry["w"].data == {"_target_": "x.Y", "a": 1}
    with pytest.raises(ValueError, match="key and the name"):
        build_workloads({"w": {"name": "other"}})
    with pytest.raises(ValueError, match="unit"):
        Workload(name="w", unit="bytes")
    with pytest.raises(ValueError, match=r"data\.nope is not a key"):
        registry["w"].config("tiny", ["data.nope=3"])


def _bench_config(*overrides: str):
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        return compose("bench", overrides=list(overrides))


def test_bench_configs_compose():
    for suite in ("cpu", "gpu", "smoke"):
        cfg = _bench_config(f"suite={suite}")
        assert cfg.suite.name == suite and cfg.suite.experiments
        build_workloads(cfg.workloads)


def test_plain_loops_run_a_task_through_its_model_step():
    """The hand-written loops call ``task.model_step``: a classifier with ``(waves, lengths, labels)``
    batches needs no benchmark code of its own."""
    from benchmarks.runners import infer, train_plain

    bench = _bench_config("suite=gpu")
    workload = build_workloads(bench.workloads)["kws_synthetic"]
    cfg = workload.config(None, list(bench.suite.dry_run_overrides.kws_synthetic))
    task = workload.build(cfg).task
    batches = prefetch_batches(workload.build_data(cfg), 2)
    samples, tokens = batch_shape(task, batches[0])
    assert samples == 2 and tokens > 1
    cpu = torch.device("cpu")
    trained = train_plain(task, batches, steps=2, warmup=1, device=cpu, clip=1.0)
    inferred = infer(task, batches, steps=2, warmup=1, device=cpu)
    assert trained.steps == inferred.steps == 2 and trained.cpu_seconds is not None


@pytest.mark.slow
def test_lightning_default_runs_the_callbacks_and_loggers_omniformer_train_builds(tmp_path):
    """``lightning_default`` uses train.py's own builders, with every file redirected into a folder."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    from benchmarks.runners import train_callbacks, train_lightning, train_loggers
    from omniformer.callbacks import StepSeed, Throughput

    workload = build_workloads(_bench_config().workloads)["shakespeare_char"]
    cfg = workload.config(None, ["model.dim=16", "model.depth=1", "model.heads=1", "data.batch_size=2"])
    callbacks = train_callbacks(cfg, str(tmp_path))
    configured = [name for name, node in cfg.callbacks.items() if node is not None]
    assert len(callbacks) == len(configured) + 2
    assert isinstance(callbacks[-2], Throughput) and isinstance(callbacks[-1], StepSeed)
    (checkpoint,) = [c for c in callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.dirpath == str(tmp_path / "checkpoints")
    assert [logger.save_dir for logger in train_loggers(cfg, str(tmp_path))] == [str(tmp_path)] * len(
        cfg.logger
    )
    task = workload.build(cfg).task
    measured = train_lightning(
        cfg,
        task,
        workload.build_data(cfg),
        steps=2,
        warmup=1,
        device=torch.device("cpu"),
        default_callbacks=True,
    )
    assert measured.steps == 2 and task.trainer.global_step == 3


def _check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    width, height = struct.unpack(">II", data[16:24])
    assert width > 100 and height > 100 and len(data) > 2000


@pytest.mark.slow
def test_smoke_suite_writes_a_valid_result(tmp_path):
    from benchmarks.cli import run_suite

    cfg = _bench_config("suite=smoke", f"results_dir={tmp_path}", f"markdown={tmp_path / 'RESULTS.md'}")
    path = run_suite(cfg, command="python -m benchmarks suite=smoke")
    result = json.loads(path.read_text())
    validate_result(result)
    assert result["suite"] == "smoke" and result["publish"] is False
    kinds = {run["experiment"] for run in result["runs"]}
    assert kinds == {"overhead", "throughput", "sdpa", "scaling"}
    modes = {(run["experiment"], run["mode"]) for run in result["runs"]}
    assert ("throughput", "infer") in modes and ("throughput", "train") in modes
    for run in result["runs"]:
        assert run["tokens_per_sec"] > 0 and run["peak_mem_mib"] > 0 and run["flops_per_token"] > 0
        assert run["tokens_per_sec"] == pytest.approx(run["samples_per_sec"] * run["seq_len"], rel=1e-3)
    train = next(r for r in result["runs"] if r["experiment"] == "overhead" and r["mode"] == "train")
    assert train["flops_per_token_counted"] == train["flops_per_token"]
    rows = {(row["kind"], row["variant"], row["baseline"]): row for row in result["overhead"]}
    assert set(rows) == {
        ("overhead", "plain_loader", "plain"),  # the data pipeline
        ("overhead", "lightning", "plain"),  # loop + data pipeline
        ("loop_overhead", "lightning", "plain_loader"),  # the Lightning loop alone
    }
    ratio = rows[("overhead", "lightning", "plain")]
    assert ratio["ratio"] > 0
    assert len(ratio["ratio_rounds"]) == 1 and ratio["ratio_paired"] == ratio["ratio_rounds"][0]
    assert ratio["ratio_cpu"] > 0 and train["cpu_ms_per_step"] > 0
    assert result["peak"]["flops_per_sec"] >= result["peak"]["flops_per_sec_end"]
    _check_png(tmp_path / result["plots"][0])
    assert "No published results" in (tmp_path / "RESULTS.md").read_text()


def _result(publish: bool = True) -> dict:
    run = {
        "experiment": "throughput", "workload": "text_lm", "unit": "tokens", "model": "tiny",
        "variant": "lightning", "mode": "train", "compiled": False, "precision": "32-true", "sdpa": "default",
        "batch_size": 12, "seq_len": 64, "params": 800_000, "steps": 10, "tokens_per_sec": 16_100.0,
        "samples_per_sec": 251.6,
        "ms_per_step": 47.7, "ms_per_step_median": 47.0, "data_ms_per_step": 0.5, "compute_ms_per_step": 47.2,
        "data_wait_fraction": 0.01, "peak_mem_mib": 860.0, "mem_kind": "rss", "flops_per_token": 5_000_000,
        "flops_per_token_counted": None, "achieved_tflops": 0.08, "mfu": 0.4123, "host_syncs_per_step": None,
        "cpu_ms_per_step": 46.0,
    }  # fmt: skip
    return {
        "schema": "omniformer-bench/1", "suite": "cpu", "publish": publish, "created": "2026-11-29T03:00:00",
        "command": "omniformer-bench", "wall_seconds": 1.0,
        "machine": {"cpu_model": "AMD EPYC", "cpu_cores": 2, "torch_threads": 2, "torch": "2.14.1",
                    "device": "cpu", "device_name": "AMD EPYC"},
        "peak": {"device": "cpu", "dtype": "float32", "size": 2048, "flops_per_sec": 2e11},
        "settings": {"device": "cpu"}, "runs": [run],
        "overhead": [{"kind": "overhead", "workload": "text_lm", "model": "tiny", "variant": "lightning",
                      "baseline": "plain", "ratio": 1.03, "ratio_median": 1.01, "ratio_paired": 1.021,
                      "ratio_rounds": [1.02, 1.022], "ratio_cpu": 1.012, "steps": 300}],
        "skipped": [], "plots": [],
    }  # fmt: skip


def test_schema_names_what_is_wrong():
    validate_result(_result())
    broken = _result()
    del broken["runs"][0]["mfu"]
    broken["machine"]["cpu_cores"] = "two"
    with pytest.raises(ValueError) as err:
        validate_result(broken)
    assert "runs[0].mfu is missing" in str(err.value) and "machine.cpu_cores must be int" in str(err.value)


def test_markdown_lists_published_results_with_their_machine(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(_result(publish=True)))
    hidden = _result(publish=False)
    hidden["created"] = "2026-11-30T00:00:00"
    (tmp_path / "b.json").write_text(json.dumps(hidden))
    (tmp_path / "junk.json").write_text("{}")
    assert [p.name for p, _ in load_results(tmp_path)] == ["b.json", "a.json"]
    page = render_markdown(tmp_path)
    assert "[`a.json`](results/a.json)" in page and "b.json" not in page
    assert "AMD EPYC, 2 cores" in page and "0.200 TFLOP/s" in page
    assert (
        "| 16,100 |" in page
        and "41.2%" in page
        and "**1.021** | 1.02, 1.02 |" in page
        and "| 1.012 | 300 |" in page
    )


def test_gpu_suite_refuses_without_cuda_and_names_the_dry_run(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    from benchmarks.cli import run_suite

    with pytest.raises(RuntimeError, match="dry_run=true"):
        run_suite(_bench_config("suite=gpu", f"results_dir={tmp_path}"))


@pytest.mark.slow
def test_gpu_suite_script_dry_run(tmp_path):
    """benchmarks/gpu_suite.sh --dry-run: the script and ``python -m benchmarks suite=gpu`` it runs, every
    experiment's code path on the CPU, into $OUT (the device tool's output folder)."""
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "OUT": str(out),
        "OMNIFORMER_BENCH_RESULTS": str(tmp_path / "results"),
        "OMNIFORMER_BENCH_MARKDOWN": str(tmp_path / "RESULTS.md"),
        "PYTHON": str(Path(os.sys.executable)),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), "--dry-run"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (result_file,) = out.glob("*-gpu-dry.json")
    result = json.loads(result_file.read_text())
    validate_result(result)
    assert result["settings"]["dry_run"] is True and result["publish"] is False
    assert {run["precision"] for run in result["runs"]} == {"bf16-mixed"}
    assert {run["variant"] for run in result["runs"] if run["experiment"] == "gpt2"} == {"plain", "lightning"}
    assert sorted(p.suffix for p in out.iterdir()) == [".json", ".log", ".md", ".png"]
