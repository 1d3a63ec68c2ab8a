"""``zoo-train -m hparams_search=digits_optuna``: Optuna tunes the default run."""

from __future__ import annotations

import csv

import pytest
import yaml

from tests.helpers import run_cli


def test_optuna_search_runs_its_trials_and_reports_the_best(tmp_path):
    result = run_cli(
        "zoo-train", "-m", "hparams_search=digits_optuna", "hydra.sweeper.n_trials=2", "trainer.max_epochs=1",
        "callbacks.progress_bar=none", "trainer.enable_model_summary=false", f"hydra.sweep.dir={tmp_path}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    best = results["best_params"]
    assert set(best) == {"optim.lr", "optim.weight_decay", "task.label_smoothing"}
    assert 0.01 <= best["optim.lr"] <= 0.5 and 0.0 <= best["task.label_smoothing"] <= 0.2
    # The objective is each trial's best validation accuracy, read here from its own log.
    best_val = []
    for trial in ("0", "1"):
        overrides = yaml.safe_load((tmp_path / trial / ".hydra" / "overrides.yaml").read_text())
        assert any(o.startswith("optim.lr=") for o in overrides)
        with open(tmp_path / trial / "csv" / "metrics.csv", newline="") as f:
            best_val.append(max(float(row["val/acc"]) for row in csv.DictReader(f) if row.get("val/acc")))
    assert results["best_value"] == pytest.approx(max(best_val), abs=1e-6)
    # The sweep's table works for the Optuna sweeper too: one row per trial, the best marked.
    with open(tmp_path / "summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["job"] for r in rows] == ["0", "1"] and all("optim.lr=" in r["overrides"] for r in rows)
    (best,) = [r for r in rows if r["best"] == "*"]
    assert float(best["best_val"]) == pytest.approx(results["best_value"], abs=1e-6)
