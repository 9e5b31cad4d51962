"""CPU inference: onnxruntime vs eager PyTorch vs ``torch.compile``, at batch 1 and batch 64.

    python -m benchmarks.inference_cpu                       # rounds 3, 20 decode steps
    python -m benchmarks.inference_cpu --rounds 2 --steps 8 --batches 1 8 --threads 1

Two models with ``model=tiny`` sizes (128 wide, 4 blocks, 4 heads), random weights (speed does not
depend on them):

* an MNIST-shaped image classifier (1×28×28 pixels, 7×7 patches → 16 tokens), in samples/s;
* a language model (a 4096-id vocabulary) decoding ``--steps`` tokens one at a time with its KV cache
  after a 16-token prompt, in tokens/s (``batch × steps`` per timed call).

Variants: ``eager`` (``net(...)``, and for the LM :func:`omniformer.sampling.generate`'s path with a
:class:`~omniformer.backbone.KVCache`), ``compile`` (``torch.compile`` of the graph wrapper that is
exported, :mod:`omniformer.graph_export.graphs`) and ``onnxruntime`` (the ONNX graph written and
checked by :func:`omniformer.graph_export.export_net`). Every variant runs in every round, in a
rotating order, so load from other processes falls on all alike; the ratios (variant over eager,
> 1 = faster) are of medians from this one run. Results: ``benchmarks/results/inference_cpu-<time>.json``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.machine import machine_info
from omniformer.backbone import Backbone
from omniformer.files import write_json
from omniformer.graph_export import export_net
from omniformer.graph_export.check import feeds
from omniformer.graph_export.graphs import ImageClassifierGraph, LanguageModelGraph
from omniformer.heads import ClassificationHead, LMHead
from omniformer.model import OmniModel
from omniformer.tokenizers import ImagePatchTokenizer, TextEmbedding

RESULTS = Path(__file__).resolve().parent / "results"
VARIANTS = ("eager", "compile", "onnxruntime")
VOCAB, PROMPT = 4096, 16


def image_net() -> OmniModel:
    """The MNIST classifier's shape at ``model=tiny`` size, random weights."""
    backbone = Backbone(128, 4, 4, init="xavier")
    tokenizer = ImagePatchTokenizer(1, 28, 7, 128, cls_token=False)
    head = ClassificationHead(128, 10)
    torch.nn.init.normal_(head.proj.weight, std=0.02)
    return OmniModel({"image": tokenizer}, backbone, {"classifier": head}).eval()


def lm_net() -> OmniModel:
    """A ``model=tiny`` language model over a 4096-id vocabulary, random weights."""
    tokenizer = TextEmbedding(VOCAB, 128)
    return OmniModel({"text": tokenizer}, Backbone(128, 4, 4), {"lm": LMHead(128, VOCAB)}).eval()


def ort_session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def image_variants(folder: Path, batch: int, threads: int) -> dict[str, Callable[[], None]]:
    """One timed call per variant: classify ``batch`` images."""
    net = image_net()
    pixels = torch.randn(batch, 1, 28, 28)
    path = folder / "image.onnx"
    if not path.exists():
        export_net(net, "classifier", "image", "classifier", path, "onnx")
    session = ort_session(path, threads)
    compiled = torch.compile(ImageClassifierGraph(net, "image", "classifier"), dynamic=False)
    feed = {"pixels": pixels.numpy()}
    return {
        "eager": lambda: net("image", "classifier", pixels),
        "compile": lambda: compiled(pixels),
        "onnxruntime": lambda: session.run(None, feed),
    }


def lm_variants(folder: Path, batch: int, steps: int, threads: int) -> dict[str, Callable[[], None]]:
    """One timed call per variant: a ``batch × 16`` prompt, then ``steps`` greedy tokens with the cache."""
    net = lm_net()
    backbone, depth = net.backbone, net.backbone.depth
    prompt = torch.randint(0, VOCAB, (batch, PROMPT), generator=torch.Generator().manual_seed(0))
    empty = [torch.zeros(batch, backbone.heads, 0, backbone.dim // backbone.heads)] * depth
    path = folder / "lm.onnx"
    if not path.exists():
        export_net(net, "language_model", "text", "lm", path, "onnx")
    session = ort_session(path, threads)
    names = [i.name for i in session.get_inputs()]
    graph = LanguageModelGraph(net, "text", "lm")
    compiled = torch.compile(graph, dynamic=True)

    def eager() -> None:
        cache = backbone.new_cache(batch, PROMPT + steps)
        logits = net("text", "lm", prompt, causal=True, cache=cache)
        for _ in range(steps):
            ids = logits[:, -1:].argmax(-1)
            logits = net("text", "lm", ids, causal=True, cache=cache, start_pos=cache.length)

    def through(step: Callable) -> Callable[[], None]:
        def decode() -> None:
            logits, keys, values = step(prompt, 0, empty, empty)
            for i in range(steps):
                ids = logits[:, -1:].argmax(-1)
                logits, keys, values = step(ids, PROMPT + i, keys, values)

        return decode

    def ort_step(ids, offset, keys, values):
        leaves = [ids, torch.tensor(offset), *keys, *values]
        out = [torch.from_numpy(a) for a in session.run(None, feeds(names, leaves))]
        return out[0], out[1 : 1 + depth], out[1 + depth :]

    return {
        "eager": eager,
        "compile": through(lambda ids, offset, k, v: compiled(ids, torch.tensor(offset), k, v)),
        "onnxruntime": through(ort_step),
    }


@torch.inference_mode()
def measure(calls: dict[str, Callable[[], None]], items: int, rounds: int, warmup: int = 2) -> dict:
    """Items/s per variant (median over ``rounds``, variants rotating) and each variant's ratio to eager."""
    for call in calls.values():
        for _ in range(warmup):  # compiles, allocates, fills caches
            call()
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - start)
    rate = {name: items / statistics.median(times) for name, times in seconds.items()}
    return {
        "per_s": rate,
        "ratio_to_eager": {name: rate[name] / rate["eager"] for name in rate},
        "seconds": seconds,
    }


def run(batches: list[int], rounds: int, steps: int, threads: int) -> dict:
    """Every (model, batch) case measured; the JSON-ready results."""
    torch.set_num_threads(threads)
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for batch in batches:
            found = measure(image_variants(folder, batch, threads), batch, rounds)
            cases.append({"model": "image classifier", "unit": "samples/s", "batch": batch, **found})
            found = measure(lm_variants(folder, batch, steps, threads), batch * steps, rounds)
            cases.append({"model": "LM decode", "unit": "tokens/s", "batch": batch, **found})
    return {
        "machine": machine_info("cpu"),
        "settings": {"rounds": rounds, "steps": steps, "threads": threads, "batches": batches},
        "versions": _versions(),
        "cases": cases,
    }


def _versions() -> dict[str, str]:
    import onnxruntime

    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}


def table(results: dict) -> str:
    """The results as a Markdown table: rate per variant, and each variant's ratio to eager."""
    lines = [
        "| model | batch | unit | eager | compile | onnxruntime | compile/eager | onnxruntime/eager |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in results["cases"]:
        rate, ratio = case["per_s"], case["ratio_to_eager"]
        lines.append(
            f"| {case['model']} | {case['batch']} | {case['unit']} | "
            + " | ".join(f"{rate[v]:,.0f}" for v in VARIANTS)
            + f" | {ratio['compile']:.2f} | {ratio['onnxruntime']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64], help="batch sizes")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per variant")
    parser.add_argument("--steps", type=int, default=20, help="LM decode steps per timed call")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads")
    args = parser.parse_args(argv)
    results = run(args.batches, args.rounds, args.steps, args.threads)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"inference_cpu-{time.strftime('%Y%m%d-%H%M%S')}.json"
    write_json(out, results)
    print(table(results))
    print(f"\nwritten: {out}")
    return results


if __name__ == "__main__":
    main()
