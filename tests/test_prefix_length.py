"""A prefix and its text longer than model.max_seq_len: one error naming the prefix's tokens, the text's
ids, the limit and the key to raise, at setup (before any step) or, failing that, at the batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from omniformer.backbone import Backbone
from omniformer.heads import LMHead
from omniformer.model import OmniModel
from omniformer.prefix_inputs import prefix_and_text
from omniformer.sequence import SegmentMarkers
from omniformer.tokenizers import ImagePatchTokenizer, TextEmbedding
from tests.helpers.overrides import ON_CPU, TINY_MODEL
from tests.helpers.paths import FIXTURES
from tests.helpers.runs import run_main


def digit_strips(folder) -> str:
    """A CSV manifest of six strips of one or two bundled MNIST digits (28 high, 28 or 56 wide)."""
    pngs = sorted((FIXTURES / "mnist" / "png").glob("*.png"))
    digits = [np.asarray(Image.open(p).convert("L")) for p in pngs]
    rows = []
    for i, order in enumerate([[0, 1], [1], [0], [1, 0], [0, 0], [1, 1]]):
        Image.fromarray(np.concatenate([digits[d] for d in order], axis=1)).save(folder / f"s{i}.png")
        rows.append(f"s{i}.png,{' '.join('72'[d] for d in order)}\n")
    (folder / "strips.csv").write_text("image,text\n" + "".join(rows))
    return str(folder / "strips.csv")


@pytest.mark.slow
def test_a_too_long_prefix_fails_at_setup_from_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_main(
        "omniformer.train",
        "task=prefix_lm",
        "prefix=image",
        "data=paired",
        f"data.manifest={digit_strips(tmp_path)}",
        "data.val_fraction=0.2",
        "data.test_fraction=0.2",
        "data.patch_size=7",
        *TINY_MODEL,
        "model.max_seq_len=12",
        *ON_CPU,
        f"hydra.run.dir={run_dir}",
        check=False,
    )
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    # 28×(28 or 56) pixels in 7×7 patches: 16 or 32 patches + 2 markers; "7 2" + end of text = 4 ids
    assert "at setup (the first training pair, the longest text), the image prefix takes" in out
    assert "the text 4 ids (end of text included)" in out
    assert "more than model.max_seq_len=12; raise model.max_seq_len to" in out
    assert not (run_dir / "checkpoints").exists()


def test_a_batch_whose_prefix_and_text_do_not_fit_names_both_lengths():
    dim, vocab = 32, 5
    net = OmniModel(
        {
            "image": ImagePatchTokenizer(in_channels=1, image_size=8, patch_size=4, dim=dim, cls_token=False),
            "text": TextEmbedding(vocab_size=vocab, dim=dim),
        },
        Backbone(dim=dim, depth=1, heads=2, max_seq_len=12),
        {"lm": LMHead(dim, vocab, tie_to="text")},
        markers=SegmentMarkers(dim=dim, modalities=["image"], unmarked=["text"]),
    )
    images, widths = torch.zeros(2, 1, 8, 16), torch.tensor([16, 8])  # 2×4 patches, padded
    text = torch.zeros(2, 3, dtype=torch.long)  # teacher forcing reads all but the last of 4 ids
    with pytest.raises(ValueError) as err:
        prefix_and_text(net, "image", images, widths, text, "text")
    assert str(err.value) == (
        "in a batch, the image prefix takes 10 tokens (its 2 markers included) and the text 4 ids (end of "
        "text included): 13 positions, more than model.max_seq_len=12; raise model.max_seq_len to 13 or "
        "more, or use shorter media or texts"
    )
    assert prefix_and_text(net, "image", images[..., :8], widths.clamp(max=8), text, "text").x.shape[1] == 9
