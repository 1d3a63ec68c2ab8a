"""zoo-translate bounds its input: a source longer than the checkpoint's limit is refused
(or cut with truncate=true), and the output length is bounded by the same limit."""

import sys

import pytest
import torch

from zoo.cli.train import train
from zoo.data import build_datamodule
from zoo.inference import FALLBACK_MAX_SOURCE_LEN, load_trained, source_limit, translate

from tests.helpers import TINY_SEQ2SEQ as TINY
from tests.helpers import compose_config, run_main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A real zoo-train checkpoint of a barely trained GRU, and its longest training source
    (tokens with <eos>) measured on the data itself."""
    run_dir = tmp_path_factory.mktemp("tiny")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(compose_config("train", run_dir, TINY))
    finally:
        torch.set_num_threads(threads)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    data = build_datamodule(**torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"])
    longest = max(len(s) for s, _ in data.make_splits()["train"]) + 1
    return ckpt, longest


def _translate(ckpt, *args):
    return run_main("zoo-translate", f"ckpt_path={ckpt}", *args)


def _refused(result, *phrases):
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    for phrase in phrases:
        assert phrase in line, line
    return line


def test_the_default_limit_is_twice_the_longest_training_source(one_thread, tiny):
    ckpt, longest = tiny
    assert torch.load(ckpt, weights_only=True)["SymbolsDataModule"]["longest_source"] == longest
    assert source_limit(load_trained(ckpt).inputs)[0] == 2 * longest
    at_limit = "a" * (2 * longest - 1)  # + <eos>: exactly the limit
    assert _translate(ckpt, f"text={at_limit}").returncode == 0
    _refused(_translate(ckpt, f"text={at_limit}a"), f"{2 * longest + 1} tokens", f"limit of {2 * longest} ")


def test_a_10000_character_line_is_refused_before_any_decoding(one_thread, tiny, monkeypatch):
    ckpt, longest = tiny

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoding started on a source over the limit")

    monkeypatch.setattr(type(load_trained(ckpt).net), "generate", no_decoding)
    result = _translate(ckpt, "text=" + "a" * 10_000)
    line = _refused(result, "10001 tokens", f"limit of {2 * longest} ", "max_source_len=N", "truncate=true")
    assert len(line) < 300  # one readable line, not the text


def test_truncate_cuts_the_source_to_the_limit_warns_and_answers(one_thread, tiny):
    ckpt, longest = tiny
    limit = 2 * longest
    result = _translate(ckpt, "text=" + "a" * 10_000, "truncate=true")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    assert f"truncated to the limit of {limit}" in result.stderr

    (translation,) = translate(load_trained(ckpt), ["abc" * 100], truncate=True)
    assert translation.source_tokens == list(("abc" * 100)[: limit - 1]) + ["<eos>"]
    assert translation.text == "abc" * 100


def test_the_output_length_is_bounded_by_the_limit(one_thread, tiny):
    ckpt, longest = tiny
    trained = load_trained(ckpt)
    asked, generate = [], trained.net.generate

    def recording_generate(src, src_mask, max_len, *args):
        asked.append(max_len)
        return generate(src, src_mask, max_len, *args)

    trained.net.generate = recording_generate
    translate(trained, ["abc"], max_len=1000, beam_size=2)  # asked for more than the limit
    translate(trained, ["abc"], max_source_len=100)  # the default, 2 * 4 + 10, is under this limit
    translate(trained, ["a" * 50], max_source_len=60)  # the default, 2 * 51 + 10, is over it
    assert asked == [2 * longest, 18, 60]


def test_max_source_len_raises_and_lowers_the_limit(one_thread, tiny):
    ckpt, longest = tiny
    long, short = "a" * 40, "a" * (longest - 1)
    _refused(_translate(ckpt, f"text={long}"), f"limit of {2 * longest} ")
    assert _translate(ckpt, f"text={long}", "max_source_len=41").returncode == 0
    _refused(_translate(ckpt, f"text={long}", "max_source_len=40"), "41 tokens", "limit of 40 (max_source_len)")
    assert _translate(ckpt, f"text={short}").returncode == 0
    _refused(_translate(ckpt, f"text={short}", f"max_source_len={longest - 1}"), f"limit of {longest - 1} ")


def test_a_checkpoint_without_the_record_falls_back_to_the_fixed_limit(one_thread, tiny, tmp_path):
    ckpt, longest = tiny
    old = torch.load(ckpt, weights_only=True)
    del old["SymbolsDataModule"]["longest_source"], old["zoo_inputs"]  # as written before either record existed
    torch.save(old, tmp_path / "old.ckpt")
    assert FALLBACK_MAX_SOURCE_LEN == 512  # the number the docs and configs/translate.yaml give
    assert load_trained(tmp_path / "old.ckpt").inputs.longest_source is None
    over_the_recorded_limit = "a" * (4 * longest)
    assert _translate(tmp_path / "old.ckpt", f"text={over_the_recorded_limit}").returncode == 0
    _refused(_translate(tmp_path / "old.ckpt", "text=" + "a" * 512), "513 tokens",
             "limit of 512 (the default for checkpoints that record no training lengths)")


@pytest.mark.parametrize(
    "override", ["max_source_len=0", "max_source_len=-3", "max_source_len=1.5", "max_source_len=abc",
                 "max_len=0", "max_len=true", "max_len=abc"],
)  # fmt: skip
def test_bad_limits_are_refused_naming_the_key(one_thread, tiny, override):
    ckpt, _ = tiny
    key = override.split("=")[0]
    _refused(_translate(ckpt, "text=abc", override), f"{key} must be a positive integer or null")


def test_a_limit_of_one_is_a_limit_not_a_bad_value(one_thread, tiny):
    ckpt, _ = tiny
    _refused(_translate(ckpt, "text=abc", "max_source_len=1"), "4 tokens", "limit of 1 (max_source_len)")


def test_truncate_must_be_a_boolean(one_thread, tiny):
    ckpt, _ = tiny
    _refused(_translate(ckpt, "text=abc", "truncate=yes please"), "truncate must be true or false")


def test_an_all_digit_text_read_as_an_integer_is_translated(one_thread, tiny):
    ckpt, _ = tiny
    result = _translate(ckpt, "text=1_234")
    assert result.returncode == 0, result.stderr
    assert "read as a number" in result.stderr and "quote it" in result.stderr

    # Hydra reads 10,000 digits only once the console entry lifts Python's limit on
    # int <-> str conversion (sys.set_int_max_str_digits(0)); then the length check answers.
    digits = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        result = _translate(ckpt, "text=" + "1" * 10_000)
    finally:
        sys.set_int_max_str_digits(digits)
    _refused(result, "10001 tokens", "max_source_len=N")
