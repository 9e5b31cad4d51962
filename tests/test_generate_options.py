"""omniformer-generate's nucleus sampling, stop strings, streaming, prompt files and prompt loop (issue
#17), on the session's tiny BPE language model, and each bad input's one error naming the key."""

from __future__ import annotations

import io
import re
import sys

import pytest
import torch

import omniformer
from omniformer.generate import interact, read_prompt, unescape
from omniformer.sampling import sample_next
from omniformer.text_stream import TextStream, check_stop, cut_at_stop
from omniformer.tokenizers.vocab import BPEVocab, CharVocab
from tests.helpers.runs import run_main

SETTINGS = {"max_new_tokens": 24, "temperature": 1.0, "top_k": 0, "seed": 7}


@pytest.fixture(scope="module")
def lm(tiny_lm_checkpoint):
    return omniformer.load(tiny_lm_checkpoint, device="cpu")


def generate_cli(ckpt, *args: str, check: bool = True):
    return run_main("omniformer.generate", f"ckpt={ckpt}", "device=cpu", *args, check=check)


# -- top-p ----------------------------------------------------------------------------------------------
def test_top_p_samples_from_the_fewest_tokens_holding_the_mass():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))

    def draws(**kw) -> set[int]:
        return {
            sample_next(logits, 1.0, None, torch.Generator().manual_seed(i), **kw).item() for i in range(200)
        }

    assert draws(top_p=0.5) == {0}  # the first token alone holds 0.5
    assert draws(top_p=0.7) == {0, 1}
    assert draws(top_p=0.9) == {0, 1, 2}
    assert draws() == {0, 1, 2, 3}


def test_top_p_one_or_none_leaves_sampling_as_it_was_and_combines_with_top_k():
    logits = torch.randn(3, 40)
    for i in range(10):
        plain = sample_next(logits, 0.9, 10, torch.Generator().manual_seed(i))
        assert torch.equal(plain, sample_next(logits, 0.9, 10, torch.Generator().manual_seed(i), top_p=1.0))
        # top_k=1 leaves one token, whatever the mass
        one = sample_next(logits, 0.9, 1, torch.Generator().manual_seed(i), top_p=0.01)
        assert torch.equal(one, logits.argmax(dim=-1, keepdim=True))


# -- stop strings and the text stream --------------------------------------------------------------
def streamed(vocab, ids, stop=()):
    text = TextStream(vocab, stop)
    pieces = [text.push([i]) for i in ids]
    pieces.append(text.finish())
    return pieces, text


def test_a_stream_holds_back_what_may_start_a_stop_string_and_cuts_before_it():
    vocab = CharVocab("ab\n ")
    ids = vocab.encode("ab\na b\n\nba").tolist()
    pieces, text = streamed(vocab, ids, ["\n\n"])
    assert "".join(pieces) == text.text == "ab\na b" and text.stopped
    assert "\n" not in pieces[2]  # the first new line waited: it could have begun "\n\n"
    pieces, text = streamed(vocab, ids, ["zz"])
    assert "".join(pieces) == "ab\na b\n\nba" and not text.stopped
    assert streamed(vocab, ids, ["b", "\n"])[1].text == "a"  # the first of several stop strings wins


def test_a_stream_waits_for_the_rest_of_a_character_split_over_ids():
    vocab = BPEVocab.train("ab cd\n" * 20, 260)  # no merges inside the emoji: one id per byte
    text = "日本 ok 🎉 end"
    ids = vocab.encode(text).tolist()
    pieces, _ = streamed(vocab, ids)
    assert "".join(pieces) == text
    assert all("\ufffd" not in piece for piece in pieces)


def test_stop_settings_are_checked():
    assert check_stop(None) == () and check_stop("\n") == ("\n",) and check_stop(["a", "b"]) == ("a", "b")
    for bad in ("", ["x", ""], 3, ["x", 4]):
        with pytest.raises(ValueError, match=r"^stop="):
            check_stop(bad)
    assert cut_at_stop("one two. three", [".", "two"]) == "one "
    assert unescape(r"\n\n") == "\n\n" and unescape(r"a\tb\\n") == "a\tb\\n"


def test_stop_ends_the_text_before_the_stop_string(lm):
    full = lm.generate("ROMEO:", **SETTINGS)[0]
    new = full[len("ROMEO:") :]
    stop = new[6:9]
    cut = lm.generate("ROMEO:", stop=stop, **SETTINGS)[0]
    assert cut == "ROMEO:" + new[: new.find(stop)]
    assert lm.generate("ROMEO:", stop=[stop, "never there"], **SETTINGS)[0] == cut
    assert lm.generate("ROMEO:", stop="never there", **SETTINGS)[0] == full


def test_streamed_pieces_join_to_the_generated_text(lm):
    for extra in ({}, {"top_p": 0.8}, {"stop": "e"}):
        pieces = list(lm.stream("ROMEO:", **SETTINGS, **extra))
        assert "ROMEO:" + "".join(pieces) == lm.generate("ROMEO:", **SETTINGS, **extra)[0]
    assert len(list(lm.stream("ROMEO:", **SETTINGS))) > 1
    with pytest.raises(ValueError, match=r"^top_p="):
        lm.stream("ROMEO:", top_p=0)  # checked at the call, before the first piece


@pytest.mark.slow
def test_the_cli_streams_the_same_text_as_it_prints_unstreamed(tiny_lm_checkpoint):
    args = ["prompt=ROMEO:", "max_new_tokens=20", "top_p=0.9", "num_samples=2", "seed=4"]
    plain = generate_cli(tiny_lm_checkpoint, *args).stdout
    assert generate_cli(tiny_lm_checkpoint, *args, "stream=true").stdout == plain
    assert plain.count("--- sample") == 2 and "ROMEO:" in plain


def test_the_cli_reads_stop_strings_with_escapes(tiny_lm_checkpoint, lm):
    args = [f"{k}={v}" for k, v in SETTINGS.items()]
    printed = generate_cli(tiny_lm_checkpoint, "prompt=ROMEO:", *args, "stop=['\\n', e]").stdout
    assert printed == lm.generate("ROMEO:", stop=["\n", "e"], **SETTINGS)[0] + "\n"


# -- prompt files and the prompt loop --------------------------------------------------------------
def test_a_prompt_file_is_the_prompt(tiny_lm_checkpoint, tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_bytes("\ufeffROMEO:".encode())  # a byte-order mark is not part of the prompt
    args = ["max_new_tokens=6", "seed=2"]
    from_file = generate_cli(tiny_lm_checkpoint, f"prompt_file={path}", *args).stdout
    assert from_file == generate_cli(tiny_lm_checkpoint, "prompt=ROMEO:", *args).stdout
    assert read_prompt(None, path) == "ROMEO:" and read_prompt("x", None) == "x"


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", r"prompt_file=.*missing\.txt: no such file"),
        ("latin1", r"prompt_file=.*latin1\.txt is not UTF-8 text \(byte offset 3\)"),
        ("both", r"prompt='ROMEO:' and prompt_file=.*both\.txt: give one of them, not both"),
    ],
)
def test_bad_prompt_files_are_named(tiny_lm_checkpoint, tmp_path, case, message):
    path = tmp_path / f"{case}.txt"
    if case != "missing":
        path.write_bytes("caf\u00e9".encode("latin-1"))
    args = ["prompt=ROMEO:"] if case == "both" else []
    proc = generate_cli(tiny_lm_checkpoint, f"prompt_file={path}", *args, check=False)
    assert proc.returncode != 0
    assert re.search(message, proc.stderr), proc.stderr


def test_interactive_answers_each_line_until_an_empty_one(tiny_lm_checkpoint, lm, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("ROMEO:\nJULIET:\n\nnever read\n"))
    out = generate_cli(tiny_lm_checkpoint, "interactive=true", "max_new_tokens=5", "seed=3").stdout
    one = lm.generate("ROMEO:", max_new_tokens=5, seed=3)[0]
    two = lm.generate("JULIET:", max_new_tokens=5, seed=3)[0]
    assert out == f"{one}\n{two}\n"
    streamed_out = io.StringIO()
    lines = io.StringIO("ROMEO:\nJULIET:")  # end of input ends too
    settings = {"max_new_tokens": 5}
    assert interact(lm, settings, seed=3, stream=True, lines=lines, out=streamed_out) == 2
    assert streamed_out.getvalue() == out


@pytest.mark.slow
def test_interactive_refuses_a_prompt_or_a_model_that_is_not_a_language_model(
    tiny_lm_checkpoint, tiny_mnist_run
):
    proc = generate_cli(tiny_lm_checkpoint, "interactive=true", "prompt=ROMEO:", check=False)
    assert proc.returncode != 0 and "interactive=true reads its prompts from standard input" in proc.stderr
    classifier = tiny_mnist_run / "checkpoints" / "best.ckpt"
    proc = generate_cli(classifier, "interactive=true", check=False)
    assert proc.returncode != 0 and "only a language model answers prompts" in proc.stderr


@pytest.mark.parametrize(
    "override, key",
    [("top_p=0", "top_p"), ("top_p=1.5", "top_p"), ("stop=''", "stop"), ("stop=[a,'']", "stop")],
)
def test_bad_settings_fail_naming_the_key_before_loading(tmp_path, override, key):
    proc = generate_cli(tmp_path / "never_loaded.ckpt", override, check=False)
    assert proc.returncode != 0 and f"{key}=" in proc.stderr and "does not exist" not in proc.stderr
