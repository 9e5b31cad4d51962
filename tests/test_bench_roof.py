"""benchmarks/: the CPU roof, CPU MFU, the profile of a real run and the nanoGPT comparison (issue #20)."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from hydra import compose, initialize_config_module

from benchmarks.profile_run import BUCKETS, _compile_report, classify, profile_train, render
from benchmarks.report import render_markdown, validate_result
from benchmarks.roof import add_cpu_mfu, measure_roof
from benchmarks.vs_nanogpt import check_variants, prepare_nanogpt_data, ratios

TOY = [
    "experiment=shakespeare_char",
    "model.dim=32",
    "model.depth=2",
    "model.heads=2",
    "data.batch_size=4",
    "data.block_size=16",
    "trainer.limit_val_batches=3",
    "trainer.limit_test_batches=3",
]


def _bench_config(*overrides: str):
    with initialize_config_module("benchmarks.conf", version_base="1.3"):
        return compose("bench", overrides=list(overrides))


def test_roof_has_a_row_per_dtype_and_shape_and_the_best_per_dtype():
    roof = measure_roof(shapes=[[32, 32, 32], [64, 32, 16]], repeats=2, min_seconds=0.002)
    assert {(r["dtype"], tuple(r["shape"])) for r in roof["rows"]} == {
        (d, s) for d in ("float32", "bfloat16") for s in ((32, 32, 32), (64, 32, 16))
    }
    assert set(roof["roof"]) == {"float32", "bfloat16"} and roof["threads"] == torch.get_num_threads()
    for dtype, best in roof["roof"].items():
        rows = [r for r in roof["rows"] if r["dtype"] == dtype]
        assert best == max(r["flops_per_sec"] for r in rows) > 0
        assert all(r["flops_per_sec"] >= r["median_flops_per_sec"] > 0 for r in rows)


def test_cpu_mfu_is_against_the_roof_of_the_rows_precision():
    runs = [
        {"precision": "32-true", "flops_per_token": 1_000, "tokens_per_sec": 50_000.0},
        {"precision": "bf16-mixed", "flops_per_token": 1_000, "tokens_per_sec": 50_000.0},
        {"precision": "16-mixed", "flops_per_token": 1_000, "tokens_per_sec": 50_000.0},
    ]
    add_cpu_mfu(runs, {"float32": 1e8, "bfloat16": 4e8})
    assert [r["cpu_mfu"] for r in runs] == [0.5, 0.125, None]
    assert [r["roof_dtype"] for r in runs] == ["float32", "bfloat16", None]
    assert runs[0]["model_gflops_per_sec"] == 0.05 and runs[1]["roof_gflops"] == 0.4


@pytest.mark.slow
def test_suite_writes_the_roof_and_rates_every_row_against_it(tmp_path):
    from benchmarks.cli import run_suite

    cfg = _bench_config(
        "suite=smoke",
        "suite.experiments.overhead=null",
        "suite.experiments.sdpa=null",
        "suite.experiments.scaling=null",
        "suite.publish=true",
        f"results_dir={tmp_path}",
        f"markdown={tmp_path / 'RESULTS.md'}",
    )
    result = json.loads(run_suite(cfg, command="python -m benchmarks suite=smoke").read_text())
    validate_result(result)
    roof = result["roof"]
    assert {r["dtype"] for r in roof["rows"]} == {"float32", "bfloat16"}
    assert all(len(r["flops_per_sec_runs"]) == 2 for r in roof["rows"])  # start and end of the run
    assert result["runs"]
    for run in result["runs"]:
        assert run["roof_dtype"] == "float32"  # the smoke suite runs 32-true
        assert 0 < run["cpu_mfu"] <= 1.5 and run["model_gflops_per_sec"] > 0
        assert run["roof_gflops"] == pytest.approx(roof["roof"]["float32"] / 1e9, rel=1e-3)
    page = (tmp_path / "RESULTS.md").read_text()
    assert "CPU roof with" in page and "| bfloat16 | 64×32 @ 32×128 |" in page
    assert "CPU MFU" in page and "% fp32 |" in page
    assert render_markdown(tmp_path) == page


def test_an_unknown_roof_dtype_is_one_clear_error_before_anything_runs(tmp_path):
    from benchmarks.cli import run_suite

    cfg = _bench_config(
        "suite=smoke",
        "suite.experiments.roof.dtypes=[float32,float64]",
        f"results_dir={tmp_path}",
        f"markdown={tmp_path / 'RESULTS.md'}",
    )
    with pytest.raises(ValueError) as err:
        run_suite(cfg)
    message = str(err.value)
    assert message.startswith("suite.experiments.roof (roof): roof: dtypes=['float32', 'float64']")
    assert "choose from ['bfloat16', 'float32']" in message and message.count("\n") == 0
    assert not list(tmp_path.glob("*.json"))  # refused before the first experiment


def test_profile_ranges_fall_in_their_buckets():
    assert classify("[_TrainingEpochLoop].train_dataloader_next") == "data"
    assert classify("[Strategy]SingleDeviceStrategy.batch_to_device") == "data"
    assert classify("[Strategy]SingleDeviceStrategy.training_step") == "forward"
    assert classify("[Strategy]SingleDeviceStrategy.backward") == "backward"
    assert classify("[LightningModule]LanguageModelingTask.optimizer_step") == "optimizer"
    assert classify("[LightningModule]LanguageModelingTask.configure_gradient_clipping") == "optimizer"
    assert classify("[Callback]Throughput.on_train_batch_end") == "callbacks"
    assert classify("[Callback]RunCheckpoint{'monitor': 'val_loss'}.on_train_batch_end") == "checkpointing"
    assert classify("save_checkpoint") == "checkpointing"
    assert classify("[Logging]CSVLogger.log_metrics") == "logging"
    assert classify("[Callback]StepSeed.setup") == "setup"
    assert classify("run_training_batch") == "loop"
    assert classify("[LightningModule]LanguageModelingTask.on_fit_end") == "fit_end"  # the text sample


@pytest.mark.slow
def test_profile_of_a_real_run_covers_its_wall_time(tmp_path):
    report = profile_train(TOY, steps=10, val_check_interval=5, tokens_per_step=4 * 16, run_dir=tmp_path)
    buckets = {row["bucket"]: row["seconds"] for row in report["buckets"]}
    assert list(buckets) == list(BUCKETS)
    wall = report["wall_seconds"]
    assert sum(buckets.values()) == pytest.approx(wall, rel=0.10)
    named = sum(v for k, v in buckets.items() if k != "other")
    assert named == pytest.approx(wall, rel=0.10), report["buckets"]
    busy = ("setup", "data", "forward", "backward", "optimizer", "callbacks", "validation", "fit_end")
    busy += ("checkpointing", "logging", "final_eval")
    for bucket in busy:
        assert buckets[bucket] > 0, bucket
    assert report["steps"] == 10 and len(report["validation_seconds"]) == 2
    assert report["results"]["val_loss"] > 0 and report["steady_tokens_per_sec"] > 0
    assert (tmp_path / "run" / "results.json").is_file()  # omniformer-train's own output
    page = render([report])
    assert "| forward |" in page and "| **wall** |" in page and "eager, 10 steps" in page


def test_compile_report_counts_frames_and_recompiles():
    import torch._dynamo
    from torch._dynamo.utils import counters, get_compilation_metrics

    torch._dynamo.reset()
    counters.clear()
    before = len(get_compilation_metrics())

    def double(x):
        return 2 * x

    compiled = torch.compile(double, backend="eager", dynamic=False)
    compiled(torch.ones(2))
    compiled(torch.ones(3))  # another shape: a recompilation
    report = _compile_report(before)
    assert report["frames_compiled"] == 2 and report["recompiles"] == 1
    assert report["compiled_functions"] == ["double"] and report["graph_breaks"] == 0
    assert report["recompile_reasons"] and report["compile_seconds"] >= 0
    torch._dynamo.reset()


def test_nanogpt_comparison_settings_and_ratios(tmp_path):
    with pytest.raises(ValueError, match="choose from"):
        check_variants(["plain", "nanogpt2"], None)
    with pytest.raises(ValueError, match="nanogpt_dir=None has none"):
        check_variants(["nanogpt", "omniformer"], None)
    check_variants(["plain", "omniformer_compiled"], None)
    rows = [
        {"variant": "plain", "round": 0, "tokens_per_sec": 100.0},
        {"variant": "omniformer", "round": 0, "tokens_per_sec": 90.0},
        {"variant": "omniformer", "round": 1, "tokens_per_sec": 120.0},
        {"variant": "plain", "round": 1, "tokens_per_sec": 100.0},
    ]
    (row,) = ratios(rows)
    assert row == {
        "variant": "omniformer",
        "baseline": "plain",
        "tokens_per_sec_ratio": 1.05,
        "ratio_rounds": [0.9, 1.2],
    }
    data = prepare_nanogpt_data(tmp_path)
    meta = pickle.loads((data / "meta.pkl").read_bytes())
    n = (data / "train.bin").stat().st_size // 2 + (data / "val.bin").stat().st_size // 2
    assert meta["vocab_size"] == 65 and n == 1_115_394  # nanoGPT's shakespeare_char: 65 chars


@pytest.mark.slow
def test_e2e_suite_dry_run_profiles_and_compares(tmp_path):
    from benchmarks.cli import run_suite

    cfg = _bench_config(
        "suite=e2e", "dry_run=true", f"results_dir={tmp_path}", f"markdown={tmp_path / 'RESULTS.md'}"
    )
    result = json.loads(run_suite(cfg).read_text())
    validate_result(result)
    assert [p["compile"] for p in result["profile"]] == [False]  # a dry run does not compile
    assert {r["variant"] for r in result["e2e"]} == {"plain", "omniformer"}
    assert all(0 < r["cpu_mfu"] <= 1.5 for r in result["e2e"])
    (ratio,) = result["e2e_ratios"]
    assert ratio["baseline"] == "plain" and ratio["tokens_per_sec_ratio"] > 0


@pytest.mark.slow
def test_roof_and_e2e_suites_compose_and_check_their_settings():
    from benchmarks.cli import _experiments
    from benchmarks.experiments import Context
    from benchmarks.workloads import build_workloads

    for suite in ("roof", "e2e", "cpu"):
        cfg = _bench_config(f"suite={suite}")
        ctx = Context(torch.device("cpu"), "32-true", 1.0, build_workloads(cfg.workloads))
        kinds = [kind for _, kind, _, _ in _experiments(cfg.suite, ctx, dry_run=False)]
        assert kinds[0] == "roof", suite
    cfg = _bench_config("suite=e2e", "suite.experiments.vs_nanogpt.variants=[nanogpt,omniformer]")
    ctx = Context(torch.device("cpu"), "32-true", 1.0, build_workloads(cfg.workloads))
    with pytest.raises(ValueError, match=r"suite.experiments.vs_nanogpt \(nanogpt_e2e\): .*nanogpt_dir"):
        _experiments(cfg.suite, ctx, dry_run=False)


FAKE_NANOGPT = """
import os, sys
assert os.path.isfile("data/shakespeare_char/train.bin") and os.path.exists("configurator.py")
assert "--device=cpu" in sys.argv and "--max_iters=3" in sys.argv and "--compile=False" in sys.argv
print("step 0: train loss 4.2000, val loss 4.2100")
for i in range(4):
    print(f"iter {i}: loss 4.0000, time {10.0 + i:.2f}ms, mfu -100.00%")
print("step 3: train loss 3.9000, val loss 3.9500")
"""


def test_nanogpt_runs_from_a_checkout_in_a_scratch_folder(tmp_path):
    from benchmarks.vs_nanogpt import run_nanogpt

    checkout = tmp_path / "nanoGPT"
    (checkout / "config").mkdir(parents=True)
    (checkout / "train.py").write_text(FAKE_NANOGPT)
    (checkout / "configurator.py").write_text("")
    (checkout / "config" / "train_shakespeare_char.py").write_text("")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out = run_nanogpt(
        checkout, scratch, steps=3, compile=False, eval_interval=250, eval_iters=20, batch_size=12,
        block_size=64, threads=1,
    )  # fmt: skip
    assert out["val_loss"] == 3.95 and out["ms_per_step_median"] == 12.0  # iteration 0 left out
    assert out["val_loss_kind"] == "20-batch estimate" and out["wall_seconds"] > 0
    check_variants(["nanogpt", "omniformer"], str(checkout))
