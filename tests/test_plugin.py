"""The plug-in modality contract, exercised by examples/video: a tubelet tokenizer and a Moving-MNIST
data module that live outside the package and are wired in only by Hydra ``_target_`` s and a search
path. The end-to-end test runs the example from a temporary copy, away from the repository."""

from __future__ import annotations

import itertools
import shutil

import pytest
import torch

from omniformer.config import ConfigError, check_train_config
from tests.helpers.overrides import VIDEO
from tests.helpers.paths import FIXTURES
from tests.helpers.plugin import EXAMPLE, forget_plugin
from tests.helpers.runs import compose_train, read_results, run_main

MNIST_FIXTURE = FIXTURES / "mnist"


@pytest.fixture
def video(monkeypatch):
    """The example's package, imported from examples/video (as PYTHONPATH=examples/video would)."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    import omniformer_video

    yield omniformer_video
    forget_plugin()


def test_tubelet_tokens_and_3d_positions(video):
    tokenizer = video.TubeletTokenizer(32, in_channels=1, frames=8, image_size=64, tubelet=[2, 8, 8])
    tokens = tokenizer(torch.randn(2, 8, 1, 64, 64))
    assert tokens.x.shape == (2, 4 * 8 * 8, 32) and tokens.mask is None and tokens.positions is None
    table = video.sincos_3d(4, 8, 8, 32)
    assert table.shape == (256, 32)
    assert len({tuple(row.tolist()) for row in table.round(decimals=5)}) == 256  # every tubelet distinct
    # the first 3/4 of the channels depend only on (row, col), the last 1/4 only on time
    torch.testing.assert_close(table[0, :24], table[64, :24])
    torch.testing.assert_close(table[0, 24:], table[1, 24:])
    cls = video.TubeletTokenizer(32, frames=4, image_size=32, cls_token=True)
    assert cls(torch.randn(1, 4, 1, 32, 32)).x.shape == (1, 1 + 2 * 4 * 4, 32)


def test_tubelet_tokenizer_refuses_bad_shapes(video):
    with pytest.raises(ValueError, match="divisible by 16"):
        video.TubeletTokenizer(40)
    with pytest.raises(ValueError, match=r"clip of 7×64×64 .* not divisible by the tubelet 2×8×8"):
        video.TubeletTokenizer(32, frames=7)
    with pytest.raises(ValueError, match=r"expects clips of shape B×T×1×H×W"):
        video.TubeletTokenizer(32)(torch.randn(2, 1, 8, 64, 64))


def test_digits_bounce_inside_the_frame(video):
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        corners = video.trajectory(20, 64, generator)
        assert all(0 <= r <= 36 and 0 <= c <= 36 for r, c in corners)
        steps = [abs(a[0] - b[0]) + abs(a[1] - b[1]) for a, b in itertools.pairwise(corners)]
        assert max(steps) > 0  # it moves
    assert all(0 <= r <= 2 and 0 <= c <= 2 for r, c in video.trajectory(30, 30, generator))  # tiny frame


def test_clips_hold_the_real_digit_and_its_label(video):
    data = video.MovingMNISTDataModule(
        str(MNIST_FIXTURE), frames=6, image_size=64, train_clips=8, val_clips=4
    )
    data.setup()
    clip, label = data.val_set[0]
    assert clip.shape == (6, 1, 64, 64)
    digit = data.val_set.digits[0].float() / 255
    pixels = clip * data.std + data.mean
    frame = pixels[0, 0]
    found = [
        (r, c)
        for r in range(37)
        for c in range(37)
        if torch.allclose(frame[r : r + 28, c : c + 28], digit, atol=1e-5)
    ]
    assert found and label == int(data.val_set.labels[0])
    torch.testing.assert_close(data.val_set[0][0], clip)  # evaluation clips are fixed
    assert data.spec()["num_classes"] == 10 and data.spec()["frames"] == 6


def test_plugin_training_loader_resumes_mid_epoch(video, monkeypatch):
    """The plug-in builds its training loader through omniformer.resume.training_loader: a loader
    given the position of a mid-epoch checkpoint yields the rest of that epoch's batches (order and
    random trajectories alike)."""
    from omniformer.resume import ResumableLoader

    monkeypatch.setenv("PL_GLOBAL_SEED", "5")  # the run's seed, as seed_everything records it

    def loader():
        data = video.MovingMNISTDataModule(
            str(MNIST_FIXTURE), frames=2, image_size=32, train_clips=8, val_clips=4, batch_size=2
        )
        data.setup()
        return data.train_dataloader()

    whole = loader()
    assert isinstance(whole, ResumableLoader) and whole.sampler.seed == 5
    whole.sampler.set_epoch(1)
    epoch = list(whole)
    resumed = loader()
    resumed.load_state_dict({"epoch": 1, "batches": 3})
    resumed.sampler.set_epoch(1)
    rest = list(resumed)
    assert len(epoch) == 4 and len(rest) == 1
    assert torch.equal(rest[0][0], epoch[3][0]) and torch.equal(rest[0][1], epoch[3][1])


def test_missing_mnist_names_the_root(video, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=f"data.root='{tmp_path}': MNIST's raw IDX files were not found"
    ):
        video.MovingMNISTDataModule(str(tmp_path)).setup()


@pytest.mark.slow
def test_plugin_trains_from_a_copy_outside_the_package(tmp_path, monkeypatch, entry_point):
    """Copy examples/video elsewhere and run the CLI there: configs through the search path, classes
    through PYTHONPATH, nothing inside omniformer/ touched."""
    shutil.copytree(EXAMPLE, tmp_path / "video", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "video"))  # for the CLI process
    monkeypatch.syspath_prepend(str(tmp_path / "video"))  # the same, for main() in this process
    run_dir = tmp_path / "run"
    try:
        entry_point(
            "omniformer.train",
            "hydra.searchpath=[file://video/conf]",  # relative to the working directory, as in the docs
            "task=video_classification",
            f"data.root={MNIST_FIXTURE}",
            *VIDEO,
            f"hydra.run.dir={run_dir}",
            cwd=tmp_path,
        )
    finally:
        forget_plugin()
    results = read_results(run_dir)
    assert results["steps"] == 2 and 0 <= results["test_acc"] <= 1
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert "net.tokenizers.video.proj.weight" in state


def test_a_plugin_target_that_cannot_be_imported_names_the_module_path():
    """Without the example's folder on the path, the config check names both targets before any data."""
    forget_plugin()
    cfg = compose_train([f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "task=video_classification"])
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    message = str(err.value)
    assert (
        "task.net.tokenizers.video._target_='omniformer_video.TubeletTokenizer': cannot be imported"
        in message
    )
    assert "data._target_='omniformer_video.MovingMNISTDataModule': cannot be imported" in message


def test_a_plugin_classes_own_rules_are_checked_before_any_data(video):
    """The example's TubeletTokenizer defines check_config; the config check calls it like any of
    omniformer's own classes and names the key a user sets (model.dim, not the tokenizer's dim)."""
    cfg = compose_train(
        [f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "task=video_classification", "model.dim=40"]
    )
    with pytest.raises(ConfigError) as err:
        check_train_config(cfg)
    assert "model.dim=40: 3-D sin-cos positions of video tubelets need a width divisible by 16" in str(
        err.value
    )
    check_train_config(
        compose_train([f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]", "task=video_classification"])
    )


@pytest.mark.slow
def test_the_cli_refuses_an_unimportable_plugin_before_reading_data(tmp_path, monkeypatch):
    monkeypatch.delenv("PYTHONPATH", raising=False)
    forget_plugin()
    proc = run_main(
        "omniformer.train",
        f"hydra.searchpath=[file://{EXAMPLE / 'conf'}]",
        "task=video_classification",
        f"data.root={MNIST_FIXTURE}",
        f"hydra.run.dir={tmp_path}",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode != 0
    assert "'omniformer_video.TubeletTokenizer': cannot be imported" in proc.stdout + proc.stderr
    assert not (tmp_path / "checkpoints").exists()
