"""Log-mel spectrograms of a few evaluated clips, titled with the true and the predicted label.

``omniformer-eval`` calls :func:`save_spectrograms` (registered for ``audio`` in
``omniformer.viz.EXAMPLE_FIGURES``) with the first batch of the evaluated split. The spectrogram is
the one the model reads: the audio tokenizer's own log-mel front end, before normalisation, cut at
each clip's real length.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

MAX_CLIPS = 8


@torch.no_grad()
def save_spectrograms(
    task,
    batch: Sequence[torch.Tensor],
    class_names: Sequence[str],
    out_dir: str | Path,
    max_clips: int = MAX_CLIPS,
) -> list[Path]:
    """Draw the log-mel spectrograms of up to ``max_clips`` clips of ``batch`` into one PNG.

    Args:
        task: a classification task whose model has an ``audio`` tokenizer with a ``log_mel`` method.
        batch: ``(waveforms, labels)`` or ``(waveforms, lengths, labels)``, as the loaders yield.
        class_names: names of the classes in label order.
        out_dir: folder for ``spectrograms.png`` (created if needed).
        max_clips: how many clips of the batch to draw.

    Returns:
        The paths of the files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    waveforms, *lengths, labels = batch
    lengths = lengths[0] if lengths else None
    tokenizer = task.net.tokenizers[task.modality]
    if not hasattr(tokenizer, "log_mel"):
        raise TypeError(f"the {task.modality!r} tokenizer has no log_mel front end to draw")
    count = min(max_clips, waveforms.shape[0])
    waveforms, labels = waveforms[:count], labels[:count]
    lengths = lengths[:count] if lengths is not None else None
    was_training = task.training
    task.eval()
    try:
        probs = task(waveforms, lengths).float().softmax(dim=-1)
        mel, frames = tokenizer.log_mel(waveforms, lengths)
    finally:
        task.train(was_training)
    confidence, predicted = probs.max(dim=-1)
    seconds_per_frame = tokenizer.hop_length / tokenizer.sample_rate

    cols = min(4, count)
    rows = -(-count // cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, constrained_layout=True
    )
    for ax in axes.flat[count:]:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[:count]):
        image = mel[i, :, : int(frames[i])].cpu().numpy()
        ax.imshow(
            image,
            origin="lower",
            aspect="auto",
            cmap="magma",
            extent=(0, image.shape[1] * seconds_per_frame, 0, image.shape[0]),
        )
        truth, guess = class_names[int(labels[i])], class_names[int(predicted[i])]
        right = truth == guess
        ax.set_title(
            f"true {truth} · pred {guess} ({float(confidence[i]):.0%})",
            fontsize=9,
            color="tab:green" if right else "tab:red",
        )
        ax.set_xlabel("time (s)", fontsize=8)
        ax.set_ylabel("mel band", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"log-mel spectrograms ({tokenizer.n_mels} bands, {tokenizer.sample_rate} Hz)", fontsize=10)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "spectrograms.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
