"""zoo.loggers piece by piece, fast: the CSV writer and its resume, the trackers' decisions and checks, with fakes."""

from __future__ import annotations

import hashlib
import http.server
import inspect
import itertools
import logging
import os
import socket
import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch.loggers
import mlflow.tracking
import pytest
import wandb
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS
from sqlalchemy.exc import SQLAlchemyError

from zoo import loggers
from zoo.errors import ConfigError
from zoo.files import append_whole, atomic_write
from zoo.loggers import (
    PROBE_TIMEOUT_S,
    ResumableCSVLogger,
    WholeRowsWriter,
    _cause,
    _check_sqlite_store,
    _create_experiment,
    _lightning_log_model,
    _mlflow_errors,
    _mlflow_requests_fail_fast,
    _mlflow_run_of,
    _mlflow_upload,
    _os_cause,
    _redacted,
    _require,
    _step,
    _unreachable,
    _wandb_base_url,
    _wandb_credentials,
    _wandb_upload,
    finish_trackers,
    log_run_artifacts,
    mlflow_logger,
    tracker_run_name,
    wandb_logger,
)

ADVICE = "it is left as it is: move it away, or set paths.output_dir or logger.mlflow.tracking_uri"
BOUNDS = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """Nothing of the machine's own (home folder, W&B and MLflow settings, netrc, proxies) reaches these tests."""
    for name in list(os.environ):
        if name.startswith(("WANDB_", "MLFLOW_")) or name.lower() in ("netrc", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


def text_of(path: Path) -> str:
    """A file's text with its line ends as written (the csv module ends rows with ``\\r\\n``)."""
    return path.read_bytes().decode()


def no_space(*args, **kwargs):
    raise OSError(28, "No space left on device")


# WholeRowsWriter: rows appended whole under an unchanged header, the file rewritten when it grows.


@pytest.fixture
def writes(monkeypatch) -> list[tuple[str, str]]:
    """The writes of ``metrics.csv`` as ``(how, text)``, ``append`` (append_whole) or ``replace`` (atomic_write), still done."""
    done = []

    def append(path, text):
        done.append(("append", text))
        append_whole(path, text)

    def replace(path, text):
        done.append(("replace", text))
        atomic_write(path, text)

    monkeypatch.setattr(loggers, "append_whole", append)
    monkeypatch.setattr(loggers, "atomic_write", replace)
    return done


def test_the_first_save_writes_the_header_and_the_rows(tmp_path, writes):
    writer = WholeRowsWriter(log_dir=str(tmp_path))
    writer.log_metrics({"train/loss": 2.0}, step=0)
    writer.log_metrics({"train/loss": 1.5}, step=1)
    writer.save()
    assert text_of(tmp_path / "metrics.csv") == "step,train/loss\r\n0,2.0\r\n1,1.5\r\n"
    assert writes == [("replace", "step,train/loss\r\n0,2.0\r\n1,1.5\r\n")]
    assert writer.metrics == [] and writer.metrics_keys == ["step", "train/loss"]


def saved_once(folder: Path) -> WholeRowsWriter:
    """A writer in ``folder`` that has saved one row: step 0, ``train/loss`` 2.0."""
    writer = WholeRowsWriter(log_dir=str(folder))
    writer.log_metrics({"train/loss": 2.0}, step=0)
    writer.save()
    return writer


def test_a_first_save_writes_the_header_even_when_the_keys_are_known(tmp_path):
    writer = WholeRowsWriter(log_dir=str(tmp_path))
    writer.metrics_keys = ["step", "train/loss"]  # as a resume sets them
    writer.log_metrics({"train/loss": 2.0}, step=0)
    writer.save()
    assert text_of(tmp_path / "metrics.csv") == "step,train/loss\r\n0,2.0\r\n"


def test_rows_under_an_unchanged_header_are_appended(tmp_path, writes):
    writer = saved_once(tmp_path)
    writer.log_metrics({"train/loss": 1.5}, step=1)
    writer.log_metrics({"train/loss": 1.25}, step=2)
    writer.save()
    assert writes[1:] == [("append", "1,1.5\r\n2,1.25\r\n")]
    assert text_of(tmp_path / "metrics.csv") == "step,train/loss\r\n0,2.0\r\n1,1.5\r\n2,1.25\r\n"
    assert writer.metrics == []


def test_a_new_metric_rewrites_the_file_under_the_merged_header_keeping_the_old_rows(tmp_path, writes):
    writer = saved_once(tmp_path)
    writer.log_metrics({"val/acc": 0.5}, step=1)
    writer.log_metrics({"train/loss": 1.5}, step=2)
    writer.save()
    expected = "step,train/loss,val/acc\r\n0,2.0,\r\n1,,0.5\r\n2,1.5,\r\n"
    assert writes[1:] == [("replace", expected)]
    assert text_of(tmp_path / "metrics.csv") == expected
    assert writer.metrics_keys == ["step", "train/loss", "val/acc"]


def test_a_save_without_rows_writes_nothing(tmp_path, writes):
    writer = WholeRowsWriter(log_dir=str(tmp_path))
    writer.save()
    assert writes == [] and not (tmp_path / "metrics.csv").exists()


def test_the_writer_does_not_delete_an_existing_metrics_csv(tmp_path):
    (tmp_path / "metrics.csv").write_text("step,train/loss\n0,2.0\n")  # Lightning's own writer deletes it here
    WholeRowsWriter(log_dir=str(tmp_path))
    assert (tmp_path / "metrics.csv").read_text() == "step,train/loss\n0,2.0\n"


@pytest.mark.parametrize(
    ("failing", "row", "after_retry"),
    [
        ("append_whole", {"train/loss": 1.5}, "step,train/loss\r\n0,2.0\r\n1,1.5\r\n"),  # under the same header
        ("atomic_write", {"val/acc": 0.5}, "step,train/loss,val/acc\r\n0,2.0,\r\n1,,0.5\r\n"),  # a new metric: rewritten
    ],
)
def test_a_failed_save_keeps_the_file_the_header_keys_and_the_rows_for_the_next_save(tmp_path, monkeypatch, failing, row, after_retry):
    writer = saved_once(tmp_path)
    writer.log_metrics(row, step=1)
    with monkeypatch.context() as patch:
        patch.setattr(loggers, failing, no_space)
        with pytest.raises(OSError, match="No space left on device"):
            writer.save()
    assert writer.metrics_keys == ["step", "train/loss"]  # the file's header: the next save sees a new metric as new
    assert writer.metrics == [{**row, "step": 1}]
    assert text_of(tmp_path / "metrics.csv") == "step,train/loss\r\n0,2.0\r\n"
    writer.save()
    assert text_of(tmp_path / "metrics.csv") == after_retry


# ResumableCSVLogger: the rows before the resume step are kept, the rest dropped.


def csv_logger(tmp_path: Path, resume_step: int | None, log: str | None = None) -> tuple[ResumableCSVLogger, Path]:
    """A CSV logger as zoo builds it (``<tmp_path>/csv/metrics.csv``) over a log of text ``log``, if given."""
    path = tmp_path / "csv" / "metrics.csv"
    if log is not None:
        path.parent.mkdir()
        path.write_bytes(log.encode())
    return ResumableCSVLogger(save_dir=tmp_path, name="csv", version="", resume_step=resume_step), path


def test_the_csv_logger_takes_lightnings_arguments_by_position_too(tmp_path):
    logger = ResumableCSVLogger(tmp_path, "csv", "v1", resume_step=3)
    assert (Path(logger.log_dir), logger.resume_step) == (tmp_path / "csv" / "v1", 3)


def test_a_fresh_run_starts_an_empty_log_where_one_exists(tmp_path):
    logger, path = csv_logger(tmp_path, None, "epoch,step,train/loss\n0,0,2.0\n0,1,1.5\n")
    writer = logger.experiment
    assert not path.exists()
    writer.log_metrics({"val/acc": 0.5}, step=0)
    writer.save()
    assert text_of(path) == "step,val/acc\r\n0,0.5\r\n"


def test_a_resume_keeps_exactly_the_rows_before_its_step(tmp_path):
    log = (
        "epoch,step,train/loss\n"
        "0,0,2.0\n"
        "0,1,1.75\n"
        "0,2.0,1.5\n"  # a step written as a float: kept
        "0,,1.4\n"  # no step: dropped
        "0,abc,1.3\n"  # a damaged step: dropped
        "1,3,1.25\n"  # the last step before the resume: kept
        "1,4,1.0\n"  # the resume step itself: logged again by the resumed run
        "1,5,0.75\n"
        "1\n"  # a row cut short, without its step
    )
    logger, path = csv_logger(tmp_path, 4, log)
    assert isinstance(logger.experiment, WholeRowsWriter)
    assert text_of(path) == "epoch,step,train/loss\r\n0,0,2.0\r\n0,1,1.75\r\n0,2.0,1.5\r\n1,3,1.25\r\n"


def test_a_resume_from_step_zero_keeps_nothing(tmp_path):
    logger, path = csv_logger(tmp_path, 0, "epoch,step,train/loss\n0,0,2.0\n0,1,1.5\n")
    assert isinstance(logger.experiment, WholeRowsWriter)
    assert not path.exists()


def test_a_resume_without_a_log_starts_one(tmp_path):
    logger, path = csv_logger(tmp_path, 3)
    writer = logger.experiment
    assert not path.exists()
    writer.log_metrics({"train/loss": 1.0}, step=3)
    writer.save()
    assert text_of(path) == "step,train/loss\r\n3,1.0\r\n"


def test_rows_logged_after_a_resume_are_appended_under_the_same_header(tmp_path, writes):
    logger, path = csv_logger(tmp_path, 2, "epoch,step,train/loss\n0,0,2.0\n0,1,1.5\n0,2,1.0\n")
    writer = logger.experiment
    assert logger.experiment is writer
    assert writer.metrics_keys == ["epoch", "step", "train/loss"]
    writer.log_metrics({"epoch": 0, "train/loss": 1.25}, step=2)
    writer.save()
    assert writes == [("replace", "epoch,step,train/loss\r\n0,0,2.0\r\n0,1,1.5\r\n"), ("append", "0,2,1.25\r\n")]
    assert text_of(path) == "epoch,step,train/loss\r\n0,0,2.0\r\n0,1,1.5\r\n0,2,1.25\r\n"


def test_rows_logged_after_a_resume_line_up_with_a_header_that_was_not_sorted(tmp_path):
    # A log of an older Lightning (which kept the logging order) or of another tool: the kept
    # rows are rewritten under the sorted header Lightning's writer appends by.
    logger, path = csv_logger(tmp_path, 2, "step,train/loss,epoch\n0,2.0,0\n1,1.5,0\n2,1.0,1\n")
    writer = logger.experiment
    writer.log_metrics({"train/loss": 0.5, "epoch": 1}, step=2)
    writer.save()
    assert text_of(path) == "epoch,step,train/loss\r\n0,0,2.0\r\n0,1,1.5\r\n1,2,0.5\r\n"


def test_a_kept_row_with_more_fields_than_the_header_keeps_its_named_fields(tmp_path):
    logger, path = csv_logger(tmp_path, 2, "epoch,step\n0,1,stray\n")
    assert isinstance(logger.experiment, WholeRowsWriter)
    assert text_of(path) == "epoch,step\r\n0,1\r\n"


@pytest.mark.parametrize(
    ("row", "step"),
    [
        ({"step": "3"}, 3),
        ({"step": "3.0"}, 3),
        ({"step": ""}, None),
        ({}, None),
        ({"step": None}, None),
        ({"step": "abc"}, None),
    ],
)
def test_step_reads_a_rows_step_and_none_for_a_damaged_one(row, step):
    assert _step(row) == step


def test_step_of_an_infinite_step_is_none():
    assert _step({"step": "inf"}) is None


# Small helpers of the trackers: names, messages, URIs.


def test_a_run_folder_is_named_by_its_parent_and_itself():
    assert tracker_run_name(Path("/outputs/2024-01-02/10-11-12")) == "2024-01-02/10-11-12"


def test_require_passes_for_an_installed_module_and_names_the_extra_for_a_missing_one():
    _require("json", "any", "any")
    with pytest.raises(ConfigError) as error:
        _require("zoo_no_such_module", "tracker", "extra")
    assert str(error.value) == "logger=tracker needs zoo_no_such_module, which is not installed: pip install 'zoo[extra]'"


@pytest.mark.parametrize(("build", "tracker"), [(mlflow_logger, "mlflow"), (wandb_logger, "wandb")])
def test_a_tracker_without_its_package_names_its_extra(tmp_path, monkeypatch, build, tracker):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == tracker else find_spec(name, *a))
    options = {"store_dir": tmp_path / "outputs", "resume": False} if tracker == "mlflow" else {}
    with pytest.raises(ConfigError) as error:
        build(tmp_path / "run", **options)
    assert str(error.value) == f"logger={tracker} needs {tracker}, which is not installed: pip install 'zoo[{tracker}]'"


def chained(*errors: BaseException) -> BaseException:
    """``errors[0]`` raised from ``errors[1]``, raised from ``errors[2]``, ...: the chain a library's wrapping leaves."""
    for outer, inner in itertools.pairwise(errors):
        outer.__cause__ = inner
    return errors[0]


def test_os_cause_is_the_os_error_at_the_bottom_of_the_chain():
    refused = ConnectionRefusedError(111, "Connection refused")
    assert _os_cause(chained(RuntimeError("request failed"), OSError("Max retries exceeded"), refused)) == "Connection refused"
    assert _os_cause(refused) == "Connection refused"


def test_os_cause_follows_the_context_where_there_is_no_cause():
    outer = RuntimeError("request failed")
    outer.__context__ = TimeoutError(110, "Connection timed out")
    assert _os_cause(outer) == "Connection timed out"


def test_os_cause_names_the_file_of_a_file_error():
    assert _os_cause(chained(RuntimeError("x"), PermissionError(13, "Permission denied", "/data/mlflow.db"))) == (
        "Permission denied: /data/mlflow.db"
    )


def test_os_cause_takes_the_text_of_an_os_error_without_a_reason_and_skips_one_without_text():
    assert _os_cause(chained(RuntimeError("x"), OSError("a socket closed"))) == "a socket closed"
    assert _os_cause(chained(OSError("the outer one"), OSError())) == "the outer one"


def test_os_cause_is_none_without_an_os_error():
    assert _os_cause(chained(RuntimeError("x"), ValueError("y"))) is None


def test_os_cause_of_a_cyclic_chain_ends():
    first, second = RuntimeError("first"), ValueError("second")
    first.__context__, second.__context__ = second, first
    assert _os_cause(first) is None
    refused = ConnectionRefusedError(111, "Connection refused")
    first.__context__, refused.__context__ = refused, first
    assert _os_cause(first) == "Connection refused"


def test_cause_prefers_the_os_error_to_the_first_line():
    error = chained(RuntimeError("request failed\nsee below"), ConnectionRefusedError(111, "Connection refused"))
    assert _cause(error) == "Connection refused"


def test_cause_is_the_first_line_of_the_text():
    assert _cause(ValueError("\n  the reason\nmore detail\n")) == "the reason"


def test_cause_cuts_a_see_http_pointer():
    assert _cause(ValueError("Bad request. See https://mlflow.org/docs for more. Really.")) == "Bad request"


def test_cause_is_at_most_300_characters():
    assert _cause(ValueError("x" * 400)) == "x" * 300
    assert _cause(ValueError("y" * 300)) == "y" * 300


@pytest.mark.parametrize("error", [ValueError(), RuntimeError(""), ValueError(" \n ")])
def test_cause_of_an_error_without_text_is_its_type(error):
    assert _cause(error) == type(error).__name__


def test_cause_of_an_os_error_with_a_text_of_several_lines_is_one_line():
    assert _cause(OSError("cannot open the store\ndetails")) == "cannot open the store"


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("http://me:s3cret@127.0.0.1:5000/api", "http://me:***@127.0.0.1:5000/api"),
        ("https://me:p@ss@host/x", "https://me:***@host/x"),
        ("http://me@127.0.0.1:5000", "http://me@127.0.0.1:5000"),
        ("sqlite:////data/mlflow.db", "sqlite:////data/mlflow.db"),
    ],
)
def test_redacted_hides_a_password_and_nothing_else(uri, shown):
    assert _redacted(uri) == shown


@pytest.mark.parametrize(
    ("log_model", "lightnings"), [("all", "all"), (True, False), (False, False), ("true", False), (None, False)]
)
def test_lightning_gets_log_model_all_and_nothing_else(log_model, lightnings):
    given = _lightning_log_model(log_model)
    assert given == lightnings and type(given) is type(lightnings)


# _check_sqlite_store: a file that is not an MLflow store is refused before MLflow opens it.


def sqlite_database(path: Path, *tables: str) -> bytes:
    """An SQLite database at ``path`` with ``tables`` (made in this order); its bytes."""
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (x)")
    db.close()
    return path.read_bytes()


def store_file(tmp_path: Path) -> Path:
    """Where a store file goes, in a folder of its own (nothing is to appear beside it)."""
    (tmp_path / "outputs").mkdir()
    return tmp_path / "outputs" / "mlflow.db"


@pytest.mark.parametrize(
    "uri", ["sqlite:///", "sqlite:///:memory:", "postgresql:///{folder}", "file://{folder}", "http://127.0.0.1:5000/"]
)
def test_a_uri_that_names_no_sqlite_file_is_left_to_mlflow(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)  # "" is this folder, and a folder ":memory:" is here: neither is looked at
    (tmp_path / ":memory:").mkdir()
    assert _check_sqlite_store(uri.format(folder=tmp_path)) is None


def test_a_missing_store_file_is_a_new_store_and_is_not_made(tmp_path):
    _check_sqlite_store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert not (tmp_path / "mlflow.db").exists()


def test_a_folder_as_the_store_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ConfigError) as error:
        _check_sqlite_store(f"sqlite:///{tmp_path}")
    assert str(error.value) == f"logger=mlflow: {tmp_path} is a folder, not an MLflow store file; {ADVICE}"


@pytest.mark.parametrize("tables", [(), ("experiments", "alembic_version")])
def test_an_empty_database_or_one_with_mlflows_tables_is_accepted(tmp_path, tables):
    path = tmp_path / "mlflow.db"
    path.touch()
    before = sqlite_database(path, *tables)
    _check_sqlite_store(f"sqlite:///{path}")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    ("tables", "listed"),
    [
        (("experiments",), "experiments"),  # one of MLflow's tables is not a store
        (("e", "d", "c", "b", "a"), "a, b, c, d, e"),
        (("f", "e", "d", "c", "b", "a"), "a, b, c, d, e, ..."),
    ],
)
def test_a_database_with_other_tables_is_refused_listing_five_and_left_unchanged(tmp_path, tables, listed):
    path = store_file(tmp_path)
    before = sqlite_database(path, *tables)
    with pytest.raises(ConfigError) as error:
        _check_sqlite_store(f"sqlite:///{path}")
    assert (
        str(error.value)
        == f"logger=mlflow: {path} is an SQLite database but not an MLflow store (its tables: {listed}); {ADVICE}"
    )
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["mlflow.db"]


def test_a_file_that_is_not_sqlite_is_refused_and_left_unchanged(tmp_path):
    path = store_file(tmp_path)
    path.write_text("model: mlp\n" * 100)
    with pytest.raises(ConfigError) as error:
        _check_sqlite_store(f"sqlite:///{path}")
    assert str(error.value) == f"logger=mlflow: cannot read {path} as an MLflow store (file is not a database); {ADVICE}"
    assert path.read_text() == "model: mlp\n" * 100 and [p.name for p in path.parent.iterdir()] == ["mlflow.db"]


def test_a_store_uri_with_a_driver_and_a_query_is_checked_by_its_path(tmp_path):
    path = tmp_path / "mlflow.db"
    sqlite_database(path, "notes")
    with pytest.raises(ConfigError) as error:
        _check_sqlite_store(f"sqlite+pysqlite:///{path}?mode=x")
    assert (
        str(error.value) == f"logger=mlflow: {path} is an SQLite database but not an MLflow store (its tables: notes); {ADVICE}"
    )


# MLflow's requests at start-up, its errors, and the run of a folder.


def test_mlflow_requests_fail_fast_inside_the_block_only():
    with _mlflow_requests_fail_fast():
        assert (os.environ[BOUNDS[0]], os.environ[BOUNDS[1]]) == ("0", str(PROBE_TIMEOUT_S))
    assert not set(BOUNDS) & set(os.environ)


def test_mlflow_requests_bounds_are_removed_after_an_error():
    with pytest.raises(KeyError), _mlflow_requests_fail_fast():
        raise KeyError("x")
    assert not set(BOUNDS) & set(os.environ)


@pytest.mark.parametrize("users", BOUNDS)
def test_mlflow_requests_keep_the_users_own_setting(monkeypatch, users):
    monkeypatch.setenv(users, "17")
    (other,) = set(BOUNDS) - {users}
    with _mlflow_requests_fail_fast():
        assert os.environ[users] == "17" and os.environ[other] == ("0" if other == BOUNDS[0] else str(PROBE_TIMEOUT_S))
    assert os.environ[users] == "17" and other not in os.environ


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_unreachable_tracking_server_is_one_line_with_the_password_hidden(scheme):
    uri = f"{scheme}://me:s3cret@127.0.0.1:5000"
    failure = chained(
        MlflowException("API request failed"), OSError("Max retries"), ConnectionRefusedError(111, "Connection refused")
    )
    with pytest.raises(ConfigError) as error, _mlflow_errors(uri):
        raise failure
    assert str(error.value) == (
        f"logger=mlflow: cannot reach the tracking server {scheme}://me:***@127.0.0.1:5000 (Connection refused); start it or "
        "fix logger.mlflow.tracking_uri (null: the local store <paths.output_dir>/mlflow.db)"
    )
    assert error.value.__cause__ is None and error.value.__suppress_context__


def test_a_tracking_server_that_answers_with_an_error_is_one_line_with_its_first_line():
    with pytest.raises(ConfigError) as error, _mlflow_errors("http://me:s3cret@127.0.0.1:5000"):
        raise MlflowException("API request to endpoint /api/2.0 failed with error code 404\n<html>")
    assert str(error.value) == (
        "logger=mlflow: tracking store http://me:***@127.0.0.1:5000: API request to endpoint /api/2.0 failed with error code 404"
    )


@pytest.mark.parametrize(
    ("failure", "cause"),
    [
        (
            chained(MlflowException("cannot open"), PermissionError(13, "Permission denied", "/data/mlflow.db")),
            "Permission denied: /data/mlflow.db",
        ),
        (sqlite3.OperationalError("database is locked"), "database is locked"),
        (ImportError("No module named 'psycopg2'"), "No module named 'psycopg2'"),
        (SQLAlchemyError("the engine failed"), "the engine failed"),
        (OSError(28, "No space left on device"), "No space left on device"),
    ],
    ids=["mlflow's", "sqlite's", "a driver missing", "sqlalchemy's", "the disk's"],
)
def test_a_store_error_is_one_line_naming_the_store_and_the_cause(failure, cause):
    with pytest.raises(ConfigError) as error, _mlflow_errors("sqlite:////data/mlflow.db"):
        raise failure
    assert str(error.value) == f"logger=mlflow: tracking store sqlite:////data/mlflow.db: {cause}"


def test_an_error_that_is_not_the_stores_passes_through_unchanged():
    failure = KeyError("a bug")
    with pytest.raises(KeyError) as error, _mlflow_errors("http://127.0.0.1:5000"):
        raise failure
    assert error.value is failure


def recording_client(runs: list) -> SimpleNamespace:
    """A stand-in for MlflowClient whose ``search_runs`` records its arguments and answers ``runs``."""
    client = SimpleNamespace(searches=[])

    def search_runs(experiment_ids, filter_string, max_results):
        client.searches.append((experiment_ids, filter_string, max_results))
        return runs

    client.search_runs = search_runs
    return client


def test_the_mlflow_run_of_a_folder_is_found_by_its_tag():
    client = recording_client([SimpleNamespace(info=SimpleNamespace(run_id="run-7"))])
    assert _mlflow_run_of(client, "3", "/outputs/2024-01-02/10-11-12") == "run-7"
    assert client.searches == [(["3"], "tags.`zoo.run_dir` = '/outputs/2024-01-02/10-11-12'", 1)]


def test_a_folder_without_an_mlflow_run_has_none():
    client = recording_client([])
    assert _mlflow_run_of(client, "3", "/outputs/a") is None


@pytest.fixture
def file_store(monkeypatch, tmp_path) -> str:
    """A real MLflow store, of MLflow's file kind: set up in milliseconds, where an SQLite store takes seconds."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


@pytest.mark.parametrize(
    "folder",
    [
        "runs",
        "it's runs",  # MLflow's filter strings have no escapes: the other quotes
        'the "best" runs',
        """it's the "best" runs""",  # both kinds of quotes: found by LIKE, then compared exactly
    ],
)
def test_a_resumed_run_continues_the_mlflow_run_of_its_folder(tmp_path, file_store, folder):
    run_dir = tmp_path / folder / "10-11-12"
    first = mlflow_logger(run_dir, tmp_path / "outputs", resume=False, tracking_uri=file_store).run_id
    resumed = mlflow_logger(run_dir, tmp_path / "outputs", resume=True, tracking_uri=file_store)
    assert resumed._run_id == first


def test_a_folder_with_both_quotes_is_not_taken_for_one_its_like_pattern_also_matches(tmp_path, file_store):
    quoted, lookalike = tmp_path / """it's the "best" runs""" / "1", tmp_path / "it_s the _best_ runs" / "1"
    runs = {}
    for run_dir in (quoted, lookalike):  # the lookalike last: MLflow lists the newest run first
        runs[run_dir] = mlflow_logger(run_dir, tmp_path / "outputs", resume=False, tracking_uri=file_store).run_id
    for run_dir in (quoted, lookalike):
        assert mlflow_logger(run_dir, tmp_path / "outputs", resume=True, tracking_uri=file_store)._run_id == runs[run_dir]


# mlflow_logger with a fake client and a fake Lightning MLFlowLogger: what it is given.


class FakeMLFlowLogger:
    """Lightning's MLFlowLogger as mlflow_logger builds it: the options it gets, checked against the real signature."""

    real = inspect.signature(lightning.pytorch.loggers.MLFlowLogger)

    def __init__(self, **kwargs):
        self.real.bind(**kwargs)  # a TypeError for an option Lightning's does not take
        self.kwargs = kwargs


@pytest.fixture
def mlflow_world(monkeypatch) -> SimpleNamespace:
    """What MLflow answers mlflow_logger (``experiment``, ``runs``) and what it was asked."""
    world = SimpleNamespace(experiment=None, runs=[], create_error=None, clients=[], created=[], searches=[], bounds=[])

    class FakeClient:
        def __init__(self, uri):
            world.clients.append(uri)

        def get_experiment_by_name(self, name):
            world.bounds.append(tuple(os.environ.get(name) for name in BOUNDS))
            return world.experiment

        def create_experiment(self, name, artifact_location=None):
            world.created.append((name, artifact_location))
            if world.create_error is not None:
                raise world.create_error

        def search_runs(self, experiment_ids, filter_string, max_results):
            world.searches.append((experiment_ids, filter_string, max_results))
            return world.runs

    monkeypatch.setattr(mlflow.tracking, "MlflowClient", FakeClient)
    monkeypatch.setattr(lightning.pytorch.loggers, "MLFlowLogger", FakeMLFlowLogger)
    return world


def experiment(lifecycle_stage: str = "active") -> SimpleNamespace:
    return SimpleNamespace(name="zoo", experiment_id="7", lifecycle_stage=lifecycle_stage)


def test_mlflow_defaults_to_an_sqlite_store_in_the_store_folder(tmp_path, monkeypatch, mlflow_world):
    monkeypatch.chdir(tmp_path)
    tmp_path = tmp_path.resolve()
    logger = mlflow_logger(Path("2024-01-02/10-11-12"), Path("runs/outputs"), resume=False)
    store = tmp_path / "runs" / "outputs"
    uri = f"sqlite:///{store / 'mlflow.db'}"
    artifacts = (store / "mlartifacts").as_uri()
    assert logger.kwargs == {
        "tracking_uri": uri,
        "artifact_location": artifacts,
        "tags": {"zoo.run_dir": str(tmp_path / "2024-01-02" / "10-11-12")},
        "experiment_name": "zoo",
        "run_name": "2024-01-02/10-11-12",
        "log_model": False,
    }
    assert store.is_dir() and mlflow_world.clients == [uri]
    assert mlflow_world.created == [("zoo", artifacts)] and mlflow_world.searches == []
    assert mlflow_world.bounds == [("0", str(PROBE_TIMEOUT_S))] and not set(BOUNDS) & set(os.environ)
    assert logger.log_final_checkpoint is False
    second = mlflow_logger(Path("2024-01-02/10-11-13"), Path("runs/outputs"), resume=False)  # the store folder exists now
    assert second.kwargs["tracking_uri"] == uri and second.kwargs["run_name"] == "2024-01-02/10-11-13"


def test_mlflow_refuses_a_store_file_that_is_not_mlflows_before_asking_mlflow(tmp_path, mlflow_world):
    (tmp_path / "outputs" / "mlflow.db").mkdir(parents=True)
    with pytest.raises(ConfigError) as error:
        mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=False)
    assert (
        str(error.value)
        == f"logger=mlflow: {(tmp_path / 'outputs' / 'mlflow.db').resolve()} is a folder, not an MLflow store file; {ADVICE}"
    )
    assert mlflow_world.clients == []


def test_mlflow_with_a_tracking_uri_leaves_the_store_folder_alone(tmp_path, mlflow_world):
    logger = mlflow_logger(tmp_path / "day" / "run", tmp_path / "outputs", resume=False, tracking_uri="http://127.0.0.1:5000")
    assert logger.kwargs["tracking_uri"] == "http://127.0.0.1:5000" and "artifact_location" not in logger.kwargs
    assert mlflow_world.clients == ["http://127.0.0.1:5000"] and mlflow_world.created == [("zoo", None)]
    assert not (tmp_path / "outputs").exists()


def test_mlflow_keeps_the_users_options(tmp_path, mlflow_world):
    run_dir = tmp_path / "day" / "run"
    options = {
        "experiment_name": "exp",
        "run_name": "mine",
        "tags": {"team": "a"},
        "artifact_location": "file:///art",
        "prefix": "p",
    }
    logger = mlflow_logger(run_dir, tmp_path / "outputs", resume=False, **options)
    assert logger.kwargs == {
        **options,
        "tracking_uri": f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}",
        "tags": {"zoo.run_dir": str(run_dir.resolve()), "team": "a"},
        "log_model": False,
    }
    assert mlflow_world.created == [("exp", "file:///art")]


def test_mlflow_names_an_unnamed_run_after_its_folder(tmp_path, mlflow_world):
    logger = mlflow_logger(tmp_path / "day" / "run", tmp_path / "outputs", resume=False, run_name=None)  # the config's null
    assert logger.kwargs["run_name"] == "day/run"


def test_a_deleted_experiment_is_one_line_saying_how_to_restore_it(tmp_path, mlflow_world):
    mlflow_world.experiment = experiment("deleted")
    with pytest.raises(ConfigError) as error:
        mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=True, tracking_uri="http://me:pw@127.0.0.1:5000")
    assert str(error.value) == (
        "logger=mlflow: the experiment 'zoo' of http://me:***@127.0.0.1:5000 is deleted: restore it "
        "(mlflow experiments restore --experiment-id 7) or set logger.mlflow.experiment_name"
    )
    assert mlflow_world.created == [] and mlflow_world.searches == []


def test_an_existing_experiment_is_used_and_a_resume_continues_the_folders_run(tmp_path, mlflow_world):
    mlflow_world.experiment = experiment()
    mlflow_world.runs = [SimpleNamespace(info=SimpleNamespace(run_id="run-1"))]
    logger = mlflow_logger(tmp_path / "day" / "run", tmp_path / "outputs", resume=True)
    assert logger.kwargs["run_id"] == "run-1" and mlflow_world.created == []
    assert mlflow_world.searches == [(["7"], f"tags.`zoo.run_dir` = '{(tmp_path / 'day' / 'run').resolve()}'", 1)]


def test_a_resume_without_an_earlier_mlflow_run_starts_one(tmp_path, mlflow_world):
    mlflow_world.experiment = experiment()
    logger = mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=True)
    assert logger.kwargs["run_id"] is None


@pytest.mark.parametrize(
    ("resume", "run_id", "existing"),
    [(False, None, True), (True, "given", True), (True, None, False)],
    ids=["fresh run", "run id given", "new experiment"],
)
def test_mlflow_looks_for_the_folders_run_only_when_resuming_into_an_existing_experiment(
    tmp_path, mlflow_world, resume, run_id, existing
):
    mlflow_world.experiment = experiment() if existing else None
    mlflow_world.runs = [SimpleNamespace(info=SimpleNamespace(run_id="found"))]
    options = {"run_id": run_id} if run_id else {}
    logger = mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=resume, **options)
    assert mlflow_world.searches == [] and logger.kwargs.get("run_id") == run_id


@pytest.mark.parametrize(
    ("log_model", "lightnings", "final"), [(True, False, True), ("all", "all", False), (False, False, False)]
)
def test_mlflow_log_model_true_is_zoos_final_checkpoint_and_all_is_lightnings(
    tmp_path, mlflow_world, log_model, lightnings, final
):
    logger = mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=False, log_model=log_model)
    assert logger.kwargs["log_model"] == lightnings and logger.log_final_checkpoint is final


def test_an_option_mlflow_does_not_take_is_a_config_error(tmp_path, mlflow_world):
    with pytest.raises(ConfigError, match=r"^logger\.mlflow: .*'bogus'"):
        mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=False, bogus=1)


def test_an_experiment_made_meanwhile_is_kept_and_another_error_is_one_line(tmp_path, mlflow_world):
    mlflow_world.create_error = MlflowException("exists", error_code=RESOURCE_ALREADY_EXISTS)
    mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=False, tracking_uri="http://127.0.0.1:5000")
    mlflow_world.create_error = MlflowException("Invalid experiment name\nmore")
    with pytest.raises(ConfigError) as error:
        mlflow_logger(tmp_path / "run", tmp_path / "outputs", resume=False, tracking_uri="http://127.0.0.1:5000")
    assert str(error.value) == "logger=mlflow: tracking store http://127.0.0.1:5000: Invalid experiment name"


def test_create_experiment_raises_an_error_that_is_not_already_exists():
    def create_experiment(name, artifact_location=None):
        raise MlflowException("Invalid experiment name")

    with pytest.raises(MlflowException, match="Invalid experiment name"):
        _create_experiment(SimpleNamespace(create_experiment=create_experiment), "x", None)


# wandb_logger with a fake Lightning WandbLogger: offline or online, what it is given.


class FakeWandbLogger:
    """Lightning's WandbLogger as wandb_logger builds it: the options it gets."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs


@pytest.fixture
def wandb_world(monkeypatch) -> SimpleNamespace:
    """The W&B server wandb_logger sees (``base_url``; ``credentials``; ``problem``: why it cannot be reached) and what it asked."""
    world = SimpleNamespace(base_url="https://me:pw@wandb.example.com", credentials=True, problem=None, asked=[], probed=[])

    def credentials(base_url):
        world.asked.append(base_url)
        return world.credentials

    def unreachable(url):
        world.probed.append(url)
        return world.problem

    monkeypatch.setattr(lightning.pytorch.loggers, "WandbLogger", FakeWandbLogger)
    monkeypatch.setattr(loggers, "_wandb_base_url", lambda: world.base_url)
    monkeypatch.setattr(loggers, "_wandb_credentials", credentials)
    monkeypatch.setattr(loggers, "_unreachable", unreachable)
    return world


@pytest.mark.parametrize(("credentials", "offline"), [(False, True), (True, False)])
def test_wandb_is_offline_without_credentials_and_online_with_them(tmp_path, wandb_world, credentials, offline):
    wandb_world.credentials = credentials
    logger = wandb_logger(tmp_path / "run")
    assert logger.kwargs["offline"] is offline and wandb_world.asked == [wandb_world.base_url]
    assert wandb_world.probed == ([] if offline else [wandb_world.base_url])


def test_wandb_mode_online_is_not_overruled_by_missing_credentials(tmp_path, monkeypatch, wandb_world):
    monkeypatch.setenv("WANDB_MODE", "online")
    wandb_world.credentials = False
    logger = wandb_logger(tmp_path / "run")
    assert logger.kwargs["offline"] is False and wandb_world.probed == [wandb_world.base_url]


@pytest.mark.parametrize("mode", [" Offline ", "dryrun", "DISABLED"])
@pytest.mark.parametrize("offline", [None, False])
def test_wandb_modes_that_do_not_upload_need_no_server(tmp_path, monkeypatch, wandb_world, mode, offline):
    monkeypatch.setenv("WANDB_MODE", mode)
    wandb_world.problem = "Connection refused"
    logger = wandb_logger(tmp_path / "run", offline=offline)
    assert logger.kwargs["offline"] is False and wandb_world.probed == []  # W&B itself reads WANDB_MODE


def test_an_unreachable_server_sends_a_run_left_to_decide_offline_with_one_warning(tmp_path, wandb_world, caplog):
    wandb_world.problem = "Connection refused"
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="zoo"):
        logger = wandb_logger(run_dir, log_model=True)
    assert logger.kwargs["offline"] is True and logger.log_final_checkpoint is True
    assert caplog.messages == [
        (
            "logger=wandb: cannot reach the W&B server https://me:***@wandb.example.com (Connection refused): logging offline; "
            f"upload later with: wandb sync {run_dir}/wandb/offline-run-*"
        )
    ]


@pytest.mark.parametrize("asked", ["offline=false", "WANDB_MODE=online"])
def test_an_unreachable_server_is_an_error_for_a_run_that_asked_to_be_online(tmp_path, monkeypatch, wandb_world, asked):
    wandb_world.problem = "Connection refused"
    options = {"offline": False} if asked == "offline=false" else {}
    if asked == "WANDB_MODE=online":
        monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.raises(ConfigError) as error:
        wandb_logger(tmp_path / "run", **options)
    assert str(error.value) == (
        "logger=wandb: cannot reach the W&B server https://me:***@wandb.example.com (Connection refused); "
        "log offline with logger.wandb.offline=true and upload later with wandb sync"
    )


def test_an_unreachable_server_is_an_error_for_log_model_all(tmp_path, wandb_world):
    wandb_world.problem = "Connection refused"
    with pytest.raises(ConfigError) as error:
        wandb_logger(tmp_path / "run", log_model="all")
    assert str(error.value) == (
        "logger=wandb: cannot reach the W&B server https://me:***@wandb.example.com (Connection refused), "
        "and log_model=all needs it: checkpoints cannot be uploaded offline"
    )


@pytest.mark.parametrize(("credentials", "offline"), [(False, None), (True, True)], ids=["no credentials", "offline=true"])
def test_log_model_all_offline_is_an_error(tmp_path, wandb_world, credentials, offline):
    wandb_world.credentials = credentials
    with pytest.raises(ConfigError) as error:
        wandb_logger(tmp_path / "run", offline=offline, log_model="all")
    assert str(error.value) == (
        "logger=wandb: log_model=all uploads checkpoints, which an offline run cannot "
        "(no WANDB_API_KEY or wandb login, or offline=true): log in, or set logger.wandb.log_model=false"
    )


def test_wandb_defaults_name_the_run_and_derive_its_id_from_the_folder(tmp_path, monkeypatch, wandb_world):
    monkeypatch.chdir(tmp_path)
    logger = wandb_logger(Path("2024-01-02/10-11-12"), name=None, offline=None)  # as the config gives them
    run_id = hashlib.sha1(str(tmp_path.resolve() / "2024-01-02" / "10-11-12").encode()).hexdigest()[:16]
    assert logger.kwargs == {
        "save_dir": "2024-01-02/10-11-12",
        "offline": False,
        "name": "2024-01-02/10-11-12",
        "project": "zoo",
        "id": run_id,
        "resume": "allow",
        "log_model": False,
    }
    assert logger.log_final_checkpoint is False


def test_wandb_keeps_the_users_options(tmp_path, wandb_world):
    options = {"project": "p", "name": "n", "id": "i", "resume": "must", "tags": ["t"], "offline": True}
    logger = wandb_logger(tmp_path / "run", **options)
    assert logger.kwargs == {**options, "save_dir": str(tmp_path / "run"), "log_model": False}


@pytest.mark.parametrize(
    ("log_model", "lightnings", "final"), [(True, False, True), ("all", "all", False), (False, False, False)]
)
def test_wandb_log_model_true_is_zoos_final_checkpoint_and_all_is_lightnings(
    tmp_path, wandb_world, log_model, lightnings, final
):
    logger = wandb_logger(tmp_path / "run", log_model=log_model)
    assert logger.kwargs["log_model"] == lightnings and logger.log_final_checkpoint is final


# What W&B's server, credentials and reachability are, read as W&B reads them.


def netrc_at(path: Path, *hosts: str) -> None:
    """A netrc file with a W&B login (a 40-character key) for each of ``hosts``, private as netrc wants it."""
    path.write_text("".join(f"machine {host}\n  login user\n  password {'k' * 40}\n" for host in hosts))
    path.chmod(0o600)


def test_an_api_key_in_the_environment_is_a_credential(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert _wandb_credentials("https://wandb.example.com") is True


def test_no_key_and_no_netrc_is_no_credential(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "")
    assert _wandb_credentials("https://wandb.example.com") is False


@pytest.mark.parametrize(
    ("hosts", "base_url", "found"),
    [
        (["wandb.example.com"], "https://wandb.example.com", True),
        (["api.wandb.ai"], "https://wandb.example.com", True),  # W&B's cloud, behind every server name
        (["other.example.com"], "https://wandb.example.com", False),
        (["localhost:8080"], "http://me:pw@localhost:8080", True),  # the machine is host:port, without the user
        (["localhost"], "http://localhost:8080", False),  # W&B looks up host:port only
    ],
)
def test_a_netrc_login_for_the_server_or_wandbs_cloud_is_a_credential(tmp_path, hosts, base_url, found):
    netrc_at(tmp_path / "home" / ".netrc", *hosts)
    assert _wandb_credentials(base_url) is found


def test_a_damaged_netrc_is_no_credential(tmp_path):
    (tmp_path / "home" / ".netrc").write_text("machine wandb.example.com\n  login user\n  password pw\nstray-token\n")
    (tmp_path / "home" / ".netrc").chmod(0o600)
    assert _wandb_credentials("https://wandb.example.com") is False


def a_wandb_login(tmp_path, monkeypatch, where):
    """Set up a ``wandb login`` as W&B itself reads it back: ``where`` says how it differs from a plain ~/.netrc."""
    base_url = "http://localhost:8080" if where == "port" else "https://wandb.example.com"
    path = tmp_path / "custom-netrc" if where == "NETRC" else tmp_path / "home" / ".netrc"
    netrc_at(path, "localhost:8080" if where == "port" else "wandb.example.com")
    if where == "NETRC":
        monkeypatch.setenv("NETRC", "~/../custom-netrc")  # W&B expands the ~ (HOME is <tmp_path>/home)
    if where == "readable":
        path.chmod(0o644)
    return base_url


@pytest.mark.parametrize(
    "where",
    [
        "NETRC",  # W&B reads the netrc file NETRC names
        "port",  # W&B's netrc machine is the URL's host:port
        "readable",  # Python's default netrc refuses a ~/.netrc that others can read; W&B reads it
    ],
)
def test_a_login_that_wandb_finds_is_a_credential(tmp_path, monkeypatch, where):
    base_url = a_wandb_login(tmp_path, monkeypatch, where)
    assert _wandb_credentials(base_url) is True


def test_the_wandb_server_is_wandb_base_url_first(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", "https://env.example.com")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    (tmp_path / "settings").write_text("[default]\nbase_url = https://saved.example.com\n")
    assert _wandb_base_url() == "https://env.example.com"


@pytest.mark.parametrize("config_dir", ["WANDB_CONFIG_DIR", "HOME"])
def test_the_wandb_server_is_else_the_one_wandb_login_saved(tmp_path, monkeypatch, config_dir):
    monkeypatch.setenv("WANDB_BASE_URL", "")
    folder = tmp_path / "config" if config_dir == "WANDB_CONFIG_DIR" else tmp_path / "home" / ".config" / "wandb"
    folder.mkdir(parents=True)
    (folder / "settings").write_text("[default]\nbase_url = https://saved.example.com\n")
    if config_dir == "WANDB_CONFIG_DIR":
        monkeypatch.setenv("WANDB_CONFIG_DIR", str(folder))
    assert _wandb_base_url() == "https://saved.example.com"


@pytest.mark.parametrize(
    "settings",
    [
        b"base_url = https://saved.example.com\n",
        b"[default]\nbase_url = \xff\xfe\n",
        b"[default]\nbase_url =\n",
        b"[other]\nx = 1\n",
    ],
    ids=["no section", "not utf-8", "empty base_url", "no base_url"],
)
def test_the_wandb_server_is_else_wandbs_default(tmp_path, monkeypatch, settings):
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    (tmp_path / "settings").write_bytes(settings)
    assert _wandb_base_url() == wandb.Settings().base_url  # W&B's default: https://api.forge.coreweave.com in W&B 0.31


@pytest.fixture
def server_answering():
    """A local HTTP server answering every GET with the status its ``status`` attribute holds; its URL."""
    state = SimpleNamespace(status=200)

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(state.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [200, 404, 500])
def test_a_server_that_answers_is_reachable_whatever_its_status(server_answering, status):
    server_answering.status = status
    assert _unreachable(server_answering.url) is None


def test_a_server_url_with_credentials_is_reachable(server_answering):
    assert _unreachable(server_answering.url.replace("http://", "http://me:pw@")) is None


def test_a_closed_port_is_unreachable_with_the_os_reason():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    assert _unreachable(f"http://127.0.0.1:{port}") == "Connection refused"


def test_an_invalid_url_is_unreachable_with_the_reason():
    assert _unreachable("not a url") == "unknown url type: 'not a url'"
    assert _unreachable("http://") == "<urlopen error no host given>"


def test_the_reachability_probe_waits_the_probe_timeout(monkeypatch):
    asked = []

    class Answer:
        def __enter__(self):
            return self

        def __exit__(self, *args):
            return False

    def urlopen(url, timeout=None):
        asked.append((url, timeout))
        return Answer()

    monkeypatch.setattr(loggers.urllib.request, "urlopen", urlopen)
    assert _unreachable("https://wandb.example.com") is None
    assert asked == [("https://wandb.example.com", PROBE_TIMEOUT_S)]


# log_run_artifacts and the uploads: which files each tracker gets, and a failure is a warning.


def tracker_logger(kind: str, **attributes) -> object:
    """A logger of class ``kind`` (log_run_artifacts tells the trackers apart by their class name)."""
    logger = type(kind, (), {})()
    logger.__dict__.update(attributes)
    return logger


@pytest.fixture
def uploads(monkeypatch) -> SimpleNamespace:
    """The uploads log_run_artifacts asks for, as ``(tracker, logger, path, is_checkpoint)``; those of a name in ``failing`` raise."""
    record = SimpleNamespace(calls=[], failing=set())

    def upload(tracker):
        def call(logger, path, is_checkpoint):
            record.calls.append((tracker, logger, path, is_checkpoint))
            if path.name in record.failing:
                raise OSError(28, "No space left on device")

        return call

    monkeypatch.setattr(loggers, "_mlflow_upload", upload("mlflow"))
    monkeypatch.setattr(loggers, "_wandb_upload", upload("wandb"))
    return record


def run_files(run_dir: Path, *names: str) -> list[Path]:
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        (run_dir / name).write_text(name)
    return [run_dir / name for name in names]


def test_each_tracker_gets_the_run_files_in_order(tmp_path, uploads):
    config, metrics, curves = run_files(tmp_path, "config.yaml", "metrics.json", "curves.png")
    (tmp_path / "other.txt").write_text("not a run file")
    mlflow, csv, wandb_ = tracker_logger("MLFlowLogger"), tracker_logger("CSVLogger"), tracker_logger("WandbLogger")
    log_run_artifacts([mlflow, csv, wandb_], tmp_path, None)
    assert uploads.calls == [
        ("mlflow", mlflow, config, False),
        ("mlflow", mlflow, metrics, False),
        ("mlflow", mlflow, curves, False),
        ("wandb", wandb_, config, False),
        ("wandb", wandb_, metrics, False),
        ("wandb", wandb_, curves, False),
    ]


def test_only_the_run_files_that_exist_are_given(tmp_path, uploads):
    (curves,) = run_files(tmp_path, "curves.png")
    (tmp_path / "metrics.json").mkdir()  # not a file
    logger = tracker_logger("MLFlowLogger")
    log_run_artifacts([logger], tmp_path, None)
    assert uploads.calls == [("mlflow", logger, curves, False)]


@pytest.mark.parametrize(("flag", "given"), [(True, True), (False, False), (None, False)], ids=["true", "false", "unset"])
def test_the_checkpoint_follows_the_run_files_only_with_log_final_checkpoint(tmp_path, uploads, caplog, flag, given):
    (config,) = run_files(tmp_path, "config.yaml")
    (checkpoint,) = run_files(tmp_path / "checkpoints", "last.ckpt")
    logger = tracker_logger("WandbLogger", **({} if flag is None else {"log_final_checkpoint": flag}))
    with caplog.at_level(logging.WARNING, logger="zoo"):
        log_run_artifacts([logger], tmp_path, str(checkpoint))
    assert uploads.calls == [("wandb", logger, config, False), *([("wandb", logger, checkpoint, True)] if given else [])]
    assert caplog.messages == []


@pytest.mark.parametrize("kind", ["MLFlowLogger", "WandbLogger"])
@pytest.mark.parametrize("checkpoint", [None, "", "missing.ckpt", "checkpoints"], ids=["none", "empty", "missing", "a folder"])
def test_a_checkpoint_that_is_not_there_is_one_warning_naming_the_tracker(tmp_path, uploads, caplog, kind, checkpoint):
    (config,) = run_files(tmp_path, "config.yaml")
    (tmp_path / "checkpoints").mkdir()
    path = tmp_path / checkpoint if checkpoint else None
    logger = tracker_logger(kind, log_final_checkpoint=True)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        log_run_artifacts([logger], tmp_path, path if checkpoint else checkpoint)
    tracker = "mlflow" if kind == "MLFlowLogger" else "wandb"
    assert caplog.messages == [f"logger={tracker}: log_model=true, but the run has no checkpoint to log ({path})"]
    assert uploads.calls == [(tracker, logger, config, False)]


def test_a_file_that_cannot_be_uploaded_is_one_warning_and_the_others_are_uploaded(tmp_path, uploads, caplog):
    run_files(tmp_path, "config.yaml", "metrics.json")
    (checkpoint,) = run_files(tmp_path / "checkpoints", "last.ckpt")
    uploads.failing = {"config.yaml", "last.ckpt"}
    wandb_, mlflow = tracker_logger("WandbLogger", log_final_checkpoint=True), tracker_logger("MLFlowLogger")
    with caplog.at_level(logging.WARNING, logger="zoo"):
        log_run_artifacts([wandb_, mlflow], tmp_path, checkpoint)
    assert caplog.messages == [
        f"logger=wandb: could not log config.yaml (No space left on device); it stays in {tmp_path}",
        f"logger=wandb: could not log last.ckpt (No space left on device); it stays in {tmp_path / 'checkpoints'}",
        f"logger=mlflow: could not log config.yaml (No space left on device); it stays in {tmp_path}",
    ]
    assert [(tracker, path.name) for tracker, _, path, _ in uploads.calls] == [
        ("wandb", "config.yaml"),
        ("wandb", "metrics.json"),
        ("wandb", "last.ckpt"),
        ("mlflow", "config.yaml"),
        ("mlflow", "metrics.json"),
    ]


def test_loggers_that_are_not_trackers_get_nothing_and_no_warning(tmp_path, uploads, caplog):
    run_files(tmp_path, "config.yaml")
    others = [tracker_logger(kind, log_final_checkpoint=True) for kind in ("CSVLogger", "TensorBoardLogger", "MLFlowLoggerX")]
    with caplog.at_level(logging.WARNING, logger="zoo"):
        log_run_artifacts(others, tmp_path, None)
    assert uploads.calls == [] and caplog.messages == []


@pytest.mark.parametrize(("is_checkpoint", "folder"), [(True, "checkpoints"), (False, None)])
def test_mlflow_puts_the_checkpoint_under_checkpoints_and_run_files_at_the_root(tmp_path, is_checkpoint, folder):
    logged = []
    experiment_ = SimpleNamespace(log_artifact=lambda *args: logged.append(args))
    _mlflow_upload(SimpleNamespace(run_id="run-1", experiment=experiment_), tmp_path / "last.ckpt", is_checkpoint)
    assert logged == [("run-1", str(tmp_path / "last.ckpt"), folder)]


def wandb_run(tmp_path: Path) -> SimpleNamespace:
    """A stand-in for a W&B run: its folder ``dir``, and what ``save`` and ``log_artifact`` were given."""
    run = SimpleNamespace(id="abc123", dir=str(tmp_path / "wandb-run" / "files"), saved=[], artifacts=[])
    Path(run.dir).mkdir(parents=True)
    run.save = lambda *args, **kwargs: run.saved.append((args, kwargs))
    run.log_artifact = lambda artifact, aliases: run.artifacts.append((artifact, aliases))
    return run


def test_wandb_gets_a_copy_of_each_run_file_under_zoo(tmp_path):
    run = wandb_run(tmp_path)
    config, metrics = run_files(tmp_path / "run", "config.yaml", "metrics.json")
    for path in (config, metrics):
        _wandb_upload(SimpleNamespace(experiment=run), path, False)
    copies = [Path(run.dir) / "zoo" / name for name in ("config.yaml", "metrics.json")]
    assert [copy.read_text() for copy in copies] == ["config.yaml", "metrics.json"]
    assert not any(copy.is_symlink() for copy in copies) and run.artifacts == []
    assert run.saved == [((str(copy),), {"base_path": run.dir, "policy": "now"}) for copy in copies]


def test_wandb_gets_the_checkpoint_as_the_runs_model_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb-data"))  # where W&B stages the artifact's files
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    run = wandb_run(tmp_path)
    checkpoint = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(bytes(range(256)))
    _wandb_upload(SimpleNamespace(experiment=run), checkpoint, True)
    ((artifact, aliases),) = run.artifacts
    assert (artifact.name, artifact.type, artifact.metadata, aliases) == (
        "model-abc123",
        "model",
        {"original_filename": "last.ckpt"},
        ["latest"],
    )
    (entry,) = artifact.manifest.entries.values()
    assert entry.path == "model.ckpt" and Path(entry.local_path).read_bytes() == bytes(range(256))
    assert run.saved == [] and not (Path(run.dir) / "zoo").exists()


def test_finish_trackers_ends_only_a_started_wandb_run():
    def run() -> SimpleNamespace:
        state = SimpleNamespace(finished=0)
        state.finish = lambda: setattr(state, "finished", state.finished + 1)
        return state

    started, unstarted, mlflows = run(), run(), run()
    loggers_ = [
        tracker_logger("WandbLogger", _experiment=started, experiment=started),
        tracker_logger("WandbLogger", _experiment=None, experiment=unstarted),  # asking for it would start a run
        tracker_logger("WandbLogger", experiment=unstarted),
        tracker_logger("MLFlowLogger", _experiment=mlflows, experiment=mlflows),
    ]
    finish_trackers(loggers_)
    assert (started.finished, unstarted.finished, mlflows.finished) == (1, 0, 0)
