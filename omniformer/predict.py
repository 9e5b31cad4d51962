"""omniformer-predict: top-k labels with probabilities for files, from a trained classifier; or the text
of each file, from a prefix LM (task=prefix_lm).

omniformer-predict ckpt=outputs/.../checkpoints/best.ckpt inputs='[cat.png, dog.jpg]'
omniformer-predict ckpt=... inputs='[clip.wav]' top_k=3
omniformer-predict ckpt=models/digits inputs='[seven.png]'          # a model folder (omniformer-export)
omniformer-predict ckpt=... inputs='[...]' allow_targets='[my_plugin]'   # a plug-in modality's checkpoint
omniformer-predict ckpt=<prefix LM>/best.ckpt inputs='[a.wav, b.wav]'  # prints "a.wav: three nine two"
omniformer-predict ckpt=... inputs='[a.png, b.png]' output=preds.csv      # or preds.jsonl / preds.json

A classifier prints ``file: label prob, ...`` per input. A prefix LM prints ``file: text`` per input:
the files are read as its training data read media (``media.json`` in the checkpoint), batched with
their lengths (padding masked, so each text is the one the file gives alone) and transcribed
greedily, as validation did. ``output=`` writes one row per input to a file instead (the format from
its suffix, ``.jsonl``, ``.json`` or ``.csv``, or ``format=``): the input, the top label and its
probability, and the top-k labels with probabilities (flattened into ``label_i, prob_i`` columns
in CSV), or a prefix LM's text (:mod:`omniformer.prediction_files`). The model is rebuilt from the
checkpoint's stored config, checked first (:mod:`omniformer.trusted_config`): ``allow_targets``
names plug-in packages it may also build from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from omniformer.api import load
from omniformer.known_warnings import silence_known_warnings
from omniformer.model_spec import PREFIX_LM
from omniformer.prediction_files import output_format, write_predictions
from omniformer.user_errors import reported_briefly


def predict(
    ckpt: str,
    inputs: list[str],
    top_k: int = 5,
    data_overrides: dict[str, Any] | None = None,
    allow_targets: str | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """For each input file: a classifier's ``top_k`` labels with probabilities, most likely first
    (``{"input": ..., "top": [...]}``), or a prefix LM's text (``{"input": ..., "text": ...}``).

    ``ckpt`` is a checkpoint or a model folder (:func:`omniformer.load`); ``allow_targets`` names
    plug-in packages whose classes its stored config may build; ``data_overrides`` change how a
    classifier's data module reads files (a prefix LM reads them as training did).
    """
    if not inputs:
        raise ValueError("inputs is empty; give files, e.g. inputs='[a.png, b.png]'")
    model = load(ckpt, allow_targets=allow_targets)
    if model.kind == PREFIX_LM:
        if data_overrides:
            raise ValueError(
                f"data={data_overrides}: a prefix LM reads files as its training data read media "
                "(media.json in the checkpoint); it takes no data overrides"
            )
        texts = model.transcribe([str(p) for p in inputs])
        return [{"input": str(path), "text": text} for path, text in zip(inputs, texts)]
    return model.predict(inputs, top_k, data_overrides)


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Print one line per input: the top-k labels and probabilities, or the text; with ``output=``,
    write them to that file instead (:mod:`omniformer.prediction_files`)."""
    silence_known_warnings()
    with reported_briefly():  # one message naming the file or key; HYDRA_FULL_ERROR=1 for the frames
        run(cfg)


def run(cfg: DictConfig) -> None:
    """``omniformer-predict`` with the composed config ``cfg``."""
    output, format = cfg.get("output"), cfg.get("format")
    if output is not None:
        output_format(output, format)  # a bad path fails before the model is loaded
    elif format is not None:
        raise ValueError(f"format={format}: give output=<file> too (format= says how to write it)")
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") else None
    rows = predict(cfg.ckpt, list(cfg.inputs), cfg.top_k, data, cfg.get("allow_targets"))
    if output is not None:
        path = write_predictions(rows, output, format)
        print(f"{len(rows)} predictions written to {path}")
        return
    for row in rows:
        if "text" in row:
            print(f"{row['input']}: {row['text']}")
            continue
        ranked = ", ".join(f"{t['label']} {t['prob']:.3f}" for t in row["top"])
        print(f"{row['input']}: {ranked}")


if __name__ == "__main__":
    main()
