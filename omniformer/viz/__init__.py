"""Pictures people would rather look at than read: curves, confusion matrices, attention, spectrograms.

``EXAMPLE_FIGURES`` maps a modality to the function (``module:function``) that draws a few evaluated
examples; ``omniformer-eval`` calls it as ``fn(task, batch, class_names, out_dir) -> list[Path]``.
"""

EXAMPLE_FIGURES: dict[str, str] = {
    "image": "omniformer.viz.attention:save_attention_maps",
    "audio": "omniformer.viz.spectrogram:save_spectrograms",
}
