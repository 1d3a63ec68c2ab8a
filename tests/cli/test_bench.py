"""zoo-bench and the published numbers it compares against (benchmarks/reference.yaml)."""

from __future__ import annotations

import csv
import re

import pytest
import torchvision
import yaml

from zoo.bench.models import MAC_TOLERANCE, load_reference, reference_path, static_row
from zoo.cli.bench import main
from zoo.models.factory import build_on_meta
from zoo.bench.profiling import count_params
from zoo.models import MODELS

REFERENCE = load_reference()
PUBLISHED = sorted(name for name, ref in REFERENCE.items() if "torchvision" in ref)


def test_every_reference_entry_names_a_registered_model_and_cites_a_source():
    document = yaml.safe_load(reference_path().read_text())
    assert set(REFERENCE) <= set(MODELS.names())
    for name, ref in REFERENCE.items():
        if "paper" in ref:
            assert ref["paper"]["source"] in document["sources"], name
    assert {"resnet50", "vgg16", "googlenet", "densenet121", "efficientnet_b0", "vit_b_16", "alexnet"} <= set(PUBLISHED)


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_parameters_and_macs_match_ours_and_torchvisions(name):
    """The published counts are torchvision's models' (so a typo in the file fails here)
    and ours equal them; our MACs agree with torchvision's GFLOPS to its rounding."""
    ref = REFERENCE[name]
    published = ref["torchvision"]
    theirs = build_on_meta(lambda **kw: torchvision.models.get_model(name, weights=None, **kw), **ref.get("build", {}))
    assert count_params(theirs) == published["params"]
    row = static_row(name, ref)
    assert row.params == published["params"] == row.tv_params
    assert abs(row.macs / 1e9 - published["gflops"]) <= MAC_TOLERANCE * published["gflops"]
    assert row.flags == []


def test_a_count_that_disagrees_with_the_published_one_is_flagged():
    ref = {"torchvision": {**REFERENCE["resnet18"]["torchvision"], "params": 11_000_000, "gflops": 2.5}}
    flags = static_row("resnet18", ref).flags
    assert len(flags) == 2 and "11,000,000" in flags[0] and "2.5" in flags[1]


def test_zoo_bench_writes_tables_and_plots_and_compares_with_torchvision(tmp_path, capsys):
    main([
        "resnet18", "transformer_small", "--throughput", "--compare", "torchvision", "--image-size", "64",
        "--batch-size", "2", "--rounds", "3", "--steps", "1", "--warmup", "1", "--threads", "1", "--out", str(tmp_path),
    ])  # fmt: skip
    rows = {r["model"]: r for r in csv.DictReader((tmp_path / "bench.csv").open())}
    assert set(rows) == {"resnet18", "transformer_small"}
    resnet = rows["resnet18"]
    assert resnet["flags"] == "ok" and resnet["published_acc1"] == "69.758" and resnet["timed_at_px"] == "64"
    for key in ("ours_train_img_s", "torchvision_train_img_s", "train_ratio_vs_torchvision", "ours_train_peak_mib"):
        assert float(resnet[key]) > 0, key
    for key in ("ours_train_img_s", "ours_infer_img_s", "train_ratio_vs_torchvision", "infer_ratio_vs_torchvision"):
        assert float(resnet[f"{key}_min"]) <= float(resnet[key]) <= float(resnet[f"{key}_max"]), key
    assert rows["transformer_small"]["ours_train_img_s"] == ""  # sequence models: counts only
    bench_md = (tmp_path / "bench.md").read_text()
    assert "| resnet18 | 11,689,512 |" in bench_md and "threads 1, 3 rounds" in bench_md
    assert "| `resnet18` | 11,689,512 / 11,689,512 | 1.814 / 1.81 (224) | 69.758 / 89.078 (IMAGENET1K_V1) | - | ok |" in (
        tmp_path / "summary.md").read_text()  # fmt: skip
    assert (tmp_path / "accuracy_vs_macs.png").stat().st_size > 0 and (tmp_path / "throughput_vs_params.png").is_file()
    out = capsys.readouterr().out
    assert "vs tv" in out and re.search(r"\d \([\d.]+-[\d.]+\)", out)  # median (min-max)


def test_a_fixed_input_model_is_timed_at_its_own_size(tmp_path):
    main(["lenet5", "--throughput", "--batch-size", "2", "--rounds", "2", "--steps", "1", "--warmup", "1",
          "--no-memory", "--out", str(tmp_path)])  # fmt: skip
    (row,) = csv.DictReader((tmp_path / "bench.csv").open())
    assert row["timed_at_px"] == "32" and "MNIST" in row["paper"]


@pytest.mark.parametrize("argv, message", [
    (["lenet5", "--throughput", "--image-size", "64"], r"--image-size 64 cannot apply to lenet5 \(32 px\): their input size is fixed"),
    (["resnet18", "--image-size", "64"], "--image-size only apply to the timings: add --throughput"),
    (["resnet18", "--compare", "torchvision", "--threads", "2"], "--compare, --threads only apply to the timings"),
    (["resnet18", "--throughput", "--threads", "0"], "--threads must be at least 1, got 0"),
])  # fmt: skip
def test_options_the_run_would_ignore_are_refused_in_one_line(tmp_path, argv, message):
    with pytest.raises(SystemExit, match=message):
        main([*argv, "--out", str(tmp_path)])


def test_a_busy_machine_and_unsteady_rounds_are_reported(tmp_path, monkeypatch, capsys):
    import zoo.bench.timing
    import zoo.bench.models

    monkeypatch.setattr(zoo.bench.timing, "load_average", lambda: 64.0)  # a fake load figure
    steady = [0.010, 0.010, 0.010]
    monkeypatch.setattr(zoo.bench.models, "time_interleaved", lambda timing, **kw: {
        label: ([0.010, 0.015, 0.010] if label == "ours train" else steady) for label in timing})  # fmt: skip
    main(["resnet18", "--throughput", "--image-size", "32", "--no-memory", "--rounds", "3", "--compare", "torchvision",
          "--batch-size", "2", "--out", str(tmp_path)])  # fmt: skip
    err = capsys.readouterr().err
    assert "Warning: figures unreliable: machine busy (load average 64.0 on" in err
    assert "Warning: figures unreliable: rounds spread beyond 10% (resnet18: ours train rounds 50% apart)" in err
    (row,) = csv.DictReader((tmp_path / "bench.csv").open())
    assert row["unsteady"] == "ours train rounds 50% apart"
    # The ratio against torchvision is taken round by round: 1, 2/3, 1.
    ratio = [float(row[f"train_ratio_vs_torchvision{s}"]) for s in ("", "_min", "_max")]
    assert ratio == pytest.approx([1.0, 0.667, 1.0], abs=1e-3)
    rates = [float(row[f"ours_train_img_s{s}"]) for s in ("", "_min", "_max")]
    assert rates == pytest.approx([200.0, 133.333, 200.0], abs=1e-3)  # 2 images per round of 10 or 15 ms
    assert "Warning: figures unreliable: machine busy" in (tmp_path / "bench.md").read_text()
    monkeypatch.setattr(zoo.bench.timing, "load_average", lambda: 0.5)
    monkeypatch.setattr(zoo.bench.models, "time_interleaved", lambda timing, **kw: {label: steady for label in timing})
    main(["resnet18", "--throughput", "--image-size", "32", "--no-memory", "--rounds", "3", "--out", str(tmp_path)])
    assert "Warning" not in capsys.readouterr().err


def test_an_unknown_model_pattern_lists_the_choices(tmp_path):
    with pytest.raises(SystemExit, match="no registered model matches.*resnet18"):
        main(["resnet9000", "--out", str(tmp_path)])


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_accuracy_and_cost_are_torchvisions_own_metadata(name):
    """acc@1, acc@5, parameters, GFLOPS and input size in reference.yaml are the figures
    torchvision ships with the named weights (their ``meta``, read offline): none typed by hand."""
    published = REFERENCE[name]["torchvision"]
    weights = torchvision.models.get_weight(published["weights"])
    metrics = weights.meta["_metrics"]["ImageNet-1K"]
    assert (published["acc1"], published["acc5"]) == (metrics["acc@1"], metrics["acc@5"])
    assert published["params"] == weights.meta["num_params"]
    assert published["gflops"] == round(weights.meta["_ops"], 2)
    assert published["image_size"] == weights.transforms().crop_size[0]


def test_zoo_bench_page_names_its_command_and_carries_the_summary_and_plot(tmp_path):
    page = tmp_path / "docs" / "models.md"
    main(["resnet18", "--out", str(tmp_path / "out"), "--page", str(page)])
    text = page.read_text()
    assert text.startswith("# Models: ours beside the published numbers\n")
    assert f"```bash\nzoo-bench resnet18 --out {tmp_path / 'out'} --page {page}\n```" in text
    assert (tmp_path / "out" / "summary.md").read_text().strip() in text
    assert "![accuracy vs macs](models-accuracy_vs_macs.png)" in text and (page.parent / "models-accuracy_vs_macs.png").is_file()
