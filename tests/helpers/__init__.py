"""What the test modules share, one place each; no test module imports another.

- :mod:`tests.helpers.paths`: the repository, the bundled fixtures, ``../shared/data``.
- :mod:`tests.helpers.runs`: composing the train config, running a console entry point, reading a
  run's results, copying a run folder.
- :mod:`tests.helpers.overrides`: the tiny command lines (tiny model, tiny data, CPU) per modality.
- :mod:`tests.helpers.callbacks`: callbacks a run gets through ``+callbacks.<name>._target_=...``
  (record the losses, crash or signal at a step, poison a step with NaN, dump the weights), and the
  overrides that add them.
- :mod:`tests.helpers.data`: generated image folders.
- :mod:`tests.helpers.plugin`: the examples/video plug-in's location, and forgetting its modules.
"""
