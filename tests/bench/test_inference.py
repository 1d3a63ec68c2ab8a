"""zoo-bench --infer: the figures are the documented arithmetic of the timed rounds."""

from __future__ import annotations

import csv
import statistics

import pytest
import torch

from zoo.bench import inference
from zoo.cli.bench import main


def _planted(seconds_by_call, seen=None):
    """A stand-in for ``time_interleaved`` that gives each call's per-round seconds in turn
    (and notes each call's steps per round and warm-up in ``seen``)."""
    calls = iter(seconds_by_call)

    def time_interleaved(steps, *, rounds, steps_per_round, warmup):
        planted = next(calls)
        assert set(steps) == set(planted) and all(len(s) == rounds for s in planted.values())
        if seen is not None:
            seen.append((steps_per_round, warmup))
        return planted

    return time_interleaved


def test_ratios_are_taken_pair_by_pair_and_figures_are_medians_with_their_range(monkeypatch):
    ours, tv = [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]  # each side's median is 2 s: a ratio of medians would say 1
    big_ours, big_tv = [0.5, 0.25, 1.0], [0.25, 1.0, 0.75]
    seen = []
    monkeypatch.setattr(inference, "time_interleaved", _planted([
        {"ours": ours, "torchvision": tv}, {"ours": big_ours, "torchvision": big_tv},
    ], seen))  # fmt: skip
    (row,) = inference.measure("resnet18", ["eager"], 4, size=32, rounds=3, steps=3, warmup=1)
    assert seen == [(30, 1), (3, 1)]  # a single image takes ten times the steps of a batch per round
    r = row.record()
    assert (r["model"], r["backend"], r["image_size"], r["batch_size"]) == ("resnet18", "eager", 32, 4)
    assert (r["ours_b1_ms"], r["ours_b1_ms_min"], r["ours_b1_ms_max"]) == (2000, 1000, 3000)
    assert r["torchvision_b1_ms"] == 2000
    # torchvision's seconds over ours, round by round: 3, 0.5, 2/3
    assert r["b1_ratio_vs_torchvision"] == pytest.approx(2 / 3)
    assert (r["b1_ratio_vs_torchvision_min"], r["b1_ratio_vs_torchvision_max"]) == (0.5, 3.0)
    assert (r["ours_b4_img_s"], r["ours_b4_img_s_min"], r["ours_b4_img_s_max"]) == (8, 4, 16)
    assert r["torchvision_b4_img_s"] == pytest.approx(16 / 3)
    assert r["b4_ratio_vs_torchvision"] == 0.75 and r["b4_ratio_vs_torchvision_min"] == 0.5
    assert r["b4_ratio_vs_torchvision_max"] == 4.0
    assert statistics.median(big_tv) / statistics.median(big_ours) != r["b4_ratio_vs_torchvision"]  # pairs, not medians
    assert row.unsteady() == [
        "resnet18 eager ours batch 1: rounds 100% apart", "resnet18 eager torchvision batch 1: rounds 100% apart",
        "resnet18 eager ours batch 4: rounds 150% apart", "resnet18 eager torchvision batch 4: rounds 100% apart",
    ]  # fmt: skip
    (line,) = inference.table([row])[2:]
    assert line == "| `resnet18` | eager fp32 | 2e+03 (1e+03-3e+03) | 0.667 (0.5-3) | 8 (4-16) | 0.75 (0.5-4) |"


def test_the_fastest_backend_is_chosen_per_batch_size(monkeypatch):
    monkeypatch.setattr(inference, "time_interleaved", _planted([
        {"ours": [0.010] * 2}, {"ours": [0.5] * 2},  # eager: the quicker single image
        {"ours": [0.020] * 2}, {"ours": [0.25] * 2},  # onnxruntime: the larger throughput
    ]))  # fmt: skip
    rows = inference.measure("lenet5", ["eager", "onnxruntime"], 8, rounds=2)
    assert inference.fastest(rows) == {"lenet5": ("eager", "onnxruntime")}
    assert [row.record()["ours_b8_img_s"] for row in rows] == [16, 32]
    assert "b1_ratio_vs_torchvision" not in rows[0].record()  # LeNet-5 has no torchvision counterpart
    (line,) = [line for line in inference.table(rows) if "ONNX" in line]
    assert line == "| `lenet5` | ONNX Runtime fp32 | 20 (20-20) | - | 32 (32-32) | - |"


def test_the_auto_rule_is_stated_with_what_the_rows_measured_of_it(monkeypatch):
    """Per model, batch-8 seconds per backend (eager, bf16, onnxruntime): bf16 is fastest for
    resnet18, ONNX Runtime for efficientnet_b0 (bf16 at 0.8 of its speed); ONNX Runtime is
    1.25x and 2.5x eager's speed, and for alexnet slower (0.5x)."""
    seconds = {"resnet18": (1.0, 0.25, 0.8), "efficientnet_b0": (1.0, 0.5, 0.4), "alexnet": (0.5, 0.2, 1.0)}
    planted = []
    for per_backend in seconds.values():
        for batch_seconds in per_backend:
            planted += [{"ours": [0.01] * 2, "torchvision": [0.01] * 2}, {"ours": [batch_seconds] * 2, "torchvision": [1.0] * 2}]
    monkeypatch.setattr(inference, "time_interleaved", _planted(planted))
    monkeypatch.setattr(inference, "predictor", lambda *a: lambda x: lambda: None)
    rows = [row for name in seconds for row in inference.measure(name, ["eager", "bf16", "onnxruntime"], 8, size=32, rounds=2)]
    lines = inference.auto_rule(rows)
    assert lines[0].startswith("`zoo-predict backend=auto` (`zoo.export.choose_backend`) runs torch in bf16")
    assert lines[0].endswith("at batch 8:") and lines[1] == ""
    assert lines[2:] == [
        "- bf16 + channels_last was the fastest backend for 2 of 3 models: not for `efficientnet_b0` "
        "(ONNX Runtime fp32; bf16 at 0.80 of its speed)",
        "- ONNX Runtime was faster than eager fp32 for 2 of 3 models (0.50x to 2.50x its speed)",
    ]  # fmt: skip
    only_eager = [row for row in rows if row.backend == "eager"]
    assert inference.auto_rule(only_eager)[2:] == []  # nothing measured of either branch


def test_zoo_bench_infer_writes_the_csv_the_table_and_the_page(tmp_path, capsys, one_thread):
    page = tmp_path / "inference.md"
    main(["--infer", "lenet5", "resnet18", "--image-size", "32", "--batch-size", "4", "--rounds", "2",
          "--backends", "eager,onnxruntime", "--out", str(tmp_path), "--page", str(page)])  # fmt: skip
    rows = list(csv.DictReader((tmp_path / "inference.csv").open()))
    assert [(r["model"], r["backend"]) for r in rows] == [
        ("lenet5", "eager"), ("lenet5", "onnxruntime"), ("resnet18", "eager"), ("resnet18", "onnxruntime"),
    ]  # fmt: skip
    for r in rows:
        assert float(r["ours_b1_ms_min"]) <= float(r["ours_b1_ms"]) <= float(r["ours_b1_ms_max"])
        assert float(r["ours_b4_img_s"]) > 0
    for r in rows[2:]:  # resnet18 is timed beside torchvision's
        low, mid, high = (float(r[f"b4_ratio_vs_torchvision{s}"]) for s in ("_min", "", "_max"))
        assert low <= mid <= high and 0.2 < mid < 5
    assert rows[0]["b1_ratio_vs_torchvision"] == ""
    text = page.read_text()
    assert text.startswith("# Inference speed\n") and "zoo-bench --infer lenet5 resnet18" in text
    assert "| `resnet18` | ONNX Runtime fp32 |" in text and "- `lenet5`: batch 1 " in text
    assert "1 threads" in text and "onnxruntime " in text
    assert "## How `zoo-predict backend=auto` chooses" in text and "[inference.csv](inference.csv)" in text
    assert (tmp_path / "inference.csv").read_text() == page.with_suffix(".csv").read_text()  # the page's own CSV
    assert "| `resnet18` | eager fp32 |" in capsys.readouterr().out


@pytest.mark.parametrize(("argv", "line"), [
    (["--infer", "lenet5", "--backends", "eager,tensorrt"], "--backends takes eager, bf16, compile, onnxruntime; got tensorrt"),
    (["--infer", "seq2seq_gru"], "zoo-bench --infer times image models; seq2seq_gru is not one"),
    (["--infer", "nosuch*"], "no registered model matches ['nosuch*']"),
])  # fmt: skip
def test_what_cannot_be_timed_is_one_line(tmp_path, argv, line):
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--out", str(tmp_path), "--rounds", "1"])
    assert str(exit_.value).startswith(f"Error: {line}")


def test_each_backend_runs_the_network_as_it_says(tmp_path):
    """The timed calls compute the model's own output: fp32 as it is, bf16 under autocast on
    channels-last weights and inputs, ONNX Runtime on the exported file."""
    torch.manual_seed(0)
    x = torch.randn(3, 3, 32, 32)
    model = inference.build("ours", "resnet18", 32)
    assert model.fc.out_features == 1000 and not model.training
    torch.testing.assert_close(inference.build("ours", "resnet18", 32).state_dict(), model.state_dict())  # seeded
    with torch.no_grad():
        expected = model(x)
    eager = inference.predictor(model, "eager", x[:2], tmp_path, "ours")(x)()
    assert eager.dtype == torch.float32 and torch.equal(eager, expected)
    (onnx,) = inference.predictor(model, "onnxruntime", x[:2], tmp_path, "ours")(x)()
    torch.testing.assert_close(torch.from_numpy(onnx), expected, rtol=1e-4, atol=1e-4)
    assert (tmp_path / "ours.onnx").is_file()
    fast = inference.predictor(model, "bf16", x[:2], tmp_path, "ours")(x)()
    assert fast.dtype == torch.bfloat16 and model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not torch.equal(fast.float(), expected)
    torch.testing.assert_close(fast.float(), expected, rtol=0.1, atol=0.15)
    vit = inference.build("torchvision", "vit_b_16", 32)
    assert vit.image_size == 32 and vit.heads.head.out_features == 1000  # sized for the timed images
    assert inference.build("torchvision", "lenet5", 32) is None


def test_each_model_is_compiled_from_an_empty_cache(monkeypatch, one_thread):
    """Our models share one forward, of which dynamo keeps `recompile_limit` compiled versions
    per process before it runs the rest eagerly: a table of eight models timed eager code as
    "compile" from the fifth on. Here the limit is 1 and reaching it is an error; the second
    model (LeNet-5, then the MLP: both ImageModel.forward) compiles all the same."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, backend="eager"))  # dynamo's cache without inductor's code generation
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True):
        for name in ("lenet5", "mlp"):
            (row,) = inference.measure(name, ["compile"], batch_size=1, rounds=1, steps=1, warmup=1)
            assert len(row.seconds["ours", 1]) == 1
