"""The rows of zoo-bench's model table (zoo.bench.models): what a row records and flags."""

from __future__ import annotations

from zoo.bench.models import MAC_TOLERANCE, Row

REF = {
    "torchvision": {"params": 100, "gflops": 2.0, "image_size": 224, "acc1": 70.1, "acc5": 89.2, "weights": "X_Weights.V1"},
    "paper": {"metric": "top-1", "value": 71.0},
}


def test_a_row_records_every_count_beside_the_published_ones_and_flags_what_differs():
    row = Row("m", 101, 2_100_000_000, 224, tv_params=99, ref=REF, measured={"ours_train_img_s": 12.3456}, unsteady=["train"])
    flags = ["params 101 != published 100", "GMACs 2.100 != published 2.0"]
    assert row.flags == flags
    assert row.record() == {
        "model": "m", "params": 101, "torchvision_params": 99, "published_params": 100, "gmacs": 2.1,
        "published_gmacs": 2.0, "image_size": 224, "published_acc1": 70.1, "published_acc5": 89.2,
        "weights": "X_Weights.V1", "paper": "top-1: 71.0", "ours_train_img_s": 12.346, "flags": "; ".join(flags),
        "unsteady": "train",
    }  # fmt: skip


def test_macs_within_the_tolerance_of_the_published_figure_are_not_flagged_and_beyond_it_are():
    assert MAC_TOLERANCE == 0.02  # torchvision rounds its GFLOPS to two decimals
    within, beyond = Row("m", 100, 2_039_000_000, 224, ref=REF), Row("m", 100, 2_041_000_000, 224, ref=REF)
    below = Row("m", 100, 1_959_000_000, 224, ref=REF)
    assert within.flags == [] and within.record()["flags"] == "ok" and "unsteady" not in within.record()
    assert beyond.flags == ["GMACs 2.041 != published 2.0"] and below.flags == ["GMACs 1.959 != published 2.0"]


def test_a_row_without_published_numbers_records_blanks_and_no_flags():
    bare = Row("transformer_small", 5, None, None)
    assert bare.flags == []
    assert bare.record() == {
        "model": "transformer_small", "params": 5, "torchvision_params": None, "published_params": None, "gmacs": None,
        "published_gmacs": None, "image_size": None, "published_acc1": None, "published_acc5": None, "weights": None,
        "paper": "", "flags": "ok",
    }  # fmt: skip
    assert Row("m", 5, 3_000_000, None, ref={"torchvision": {"params": 5}}).record()["gmacs"] == 0.003
