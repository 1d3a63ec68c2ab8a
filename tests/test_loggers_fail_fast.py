"""Trackers that fail fast: an MLflow server that does not answer, an ``mlflow.db`` that is
not MLflow's, and a W&B server out of reach, each triggered for real (a closed port on
127.0.0.1, files written here; no network), each answered in one line within seconds
where MLflow alone retries for ~260 s and W&B waits 108 s. MLflow refuses; W&B falls back
to offline with a warning, or refuses when the run asked to be online."""

from __future__ import annotations

import http.server
import logging
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import QUIET, run_main
from zoo.errors import ConfigError
from zoo.loggers import _check_sqlite_store, mlflow_logger, wandb_logger

FAST = 15  # seconds: the bound every failure must come within


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight there, even where a proxy is configured."""
    for name in ("no_proxy", "NO_PROXY"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")


@pytest.fixture
def closed_url() -> str:
    """The URL of a port on 127.0.0.1 that was just bound and closed: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def not_found_url():
    """A local HTTP server that answers every request with 404: there, but not a tracker."""

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        do_POST = do_GET

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFound)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_mlflow_env(monkeypatch):
    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)


def timed_error(build, *args, **kwargs) -> str:
    """The ``ConfigError`` message of ``build(*args, **kwargs)``, checked to be one line and fast."""
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        build(*args, **kwargs)
    assert time.monotonic() - start < FAST
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# MLflow: refuse in one line naming the URI or the file.


def test_an_mlflow_server_that_refuses_is_one_line_naming_the_uri(tmp_path, closed_url, no_mlflow_env, monkeypatch):
    # MLflow's default 7 retries take ~260 s on a refused connection: start-up tries once. The
    # user's own setting (here the timeout) is kept; the bounds set for start-up are removed.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    uri = closed_url.replace("http://", "http://me:s3cret@")
    message = timed_error(mlflow_logger, tmp_path / "run", tmp_path / "outputs", resume=False, tracking_uri=uri)
    shown = closed_url.replace("http://", "http://me:***@")
    assert message == (
        f"logger=mlflow: cannot reach the tracking server {shown} (Connection refused); start it or fix "
        "logger.mlflow.tracking_uri (null: the local store <paths.output_dir>/mlflow.db)"
    )
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "3" and "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in os.environ


def test_an_http_server_that_is_not_mlflow_is_one_line_naming_the_uri(tmp_path, not_found_url, no_mlflow_env):
    message = timed_error(mlflow_logger, tmp_path / "run", tmp_path / "outputs", resume=True, tracking_uri=not_found_url)
    assert message.startswith(f"logger=mlflow: tracking store {not_found_url}: API request to endpoint ")
    assert "404" in message


def test_an_mlflow_uri_of_an_unknown_scheme_is_one_line(tmp_path):
    message = timed_error(mlflow_logger, tmp_path / "run", tmp_path / "outputs", resume=False, tracking_uri="foo://bar")
    assert message.startswith("logger=mlflow: tracking store foo://bar: ") and "unsupported URI 'foo://bar'" in message


def random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(4096))


def another_sqlite_database(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    db.close()


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (random_bytes, "logger=mlflow: cannot read {path} as an MLflow store (file is not a database); "),
        (another_sqlite_database, "logger=mlflow: {path} is an SQLite database but not an MLflow store (its tables: notes); "),
    ],
)
def test_an_mlflow_db_that_is_not_mlflows_is_one_line_naming_it_and_left_unchanged(tmp_path, write, expected, resume):
    store = tmp_path / "outputs"
    store.mkdir()
    path = store / "mlflow.db"
    write(path)
    before = path.read_bytes()
    message = timed_error(mlflow_logger, tmp_path / "run", store, resume=resume)
    assert message == expected.format(path=path.resolve()) + (
        "it is left as it is: move it away, or set paths.output_dir or logger.mlflow.tracking_uri"
    )
    assert path.read_bytes() == before
    assert sorted(p.name for p in store.iterdir()) == ["mlflow.db"]  # no journal or second file beside it


@pytest.mark.parametrize("tables", [[], ["experiments", "alembic_version", "runs"]])
def test_an_empty_sqlite_file_or_one_with_mlflows_tables_passes_the_check(tmp_path, tables):
    """The boundary of the check above: an empty file (``touch mlflow.db``) is what SQLite
    calls an empty database, which MLflow sets its store up in; one with MLflow's tables is
    left to MLflow (the real store of a real run: tests/test_loggers_trackers.py)."""
    path = tmp_path / "mlflow.db"
    path.touch()
    with sqlite3.connect(path) as db:
        for table in tables:
            db.execute(f"CREATE TABLE {table} (x)")
    db.close()
    _check_sqlite_store(f"sqlite:///{path}")


def test_a_deleted_mlflow_experiment_is_one_line_saying_how_to_restore_it(tmp_path, monkeypatch):
    """MLflow's UI deletes an experiment into its trash: a run could neither log to it nor
    create another of the same name (a traceback at the first epoch, before). The check is
    the same for every store; MLflow's file store (allowed for the test) makes one in
    milliseconds, its SQLite store in seconds."""
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("zoo")
    client.delete_experiment(experiment_id)
    message = timed_error(mlflow_logger, tmp_path / "run", tmp_path / "outputs", resume=False, tracking_uri=uri)
    assert message == (
        f"logger=mlflow: the experiment 'zoo' of {uri} is deleted: restore it "
        f"(mlflow experiments restore --experiment-id {experiment_id}) or set logger.mlflow.experiment_name"
    )


def test_zoo_train_with_an_unreachable_mlflow_server_ends_in_one_error_line(tmp_path, closed_url, no_mlflow_env):
    start = time.monotonic()
    result = run_main("zoo-train", "model=mlp", "trainer.max_epochs=1", *QUIET, "logger=[csv,mlflow]",
                      f"logger.mlflow.tracking_uri={closed_url}", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    assert time.monotonic() - start < 4 * FAST  # the whole command on a busy machine; MLflow alone: ~260 s
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert line.startswith(f"Error: logger=mlflow: cannot reach the tracking server {closed_url} (Connection refused)")


# W&B: with a key but no server, offline with a warning; refuse where online was asked for.


@pytest.fixture
def wandb_key_no_server(monkeypatch, tmp_path, closed_url) -> str:
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)  # a key: W&B would try to go online
    monkeypatch.setenv("WANDB_BASE_URL", closed_url)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    return closed_url


def test_wandb_with_a_key_and_no_server_falls_back_to_offline_saying_how_to_sync(tmp_path, wandb_key_no_server, caplog):
    run_dir = tmp_path / "run"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="zoo"):
        logger = wandb_logger(run_dir)
    assert time.monotonic() - start < FAST
    assert logger._offline is True
    assert caplog.messages == [
        f"logger=wandb: cannot reach the W&B server {wandb_key_no_server} (Connection refused): logging offline; "
        f"upload later with: wandb sync {run_dir / 'wandb' / 'offline-run-*'}"
    ]


def test_wandb_with_a_key_and_a_server_that_answers_stays_online(
    tmp_path, wandb_key_no_server, not_found_url, monkeypatch, caplog
):
    """Any HTTP answer, a 404 too, means the server is there: only W&B can tell whether it is W&B's."""
    monkeypatch.setenv("WANDB_BASE_URL", not_found_url)
    with caplog.at_level(logging.WARNING, logger="zoo"):
        logger = wandb_logger(tmp_path / "run")
    assert logger._offline is False and caplog.messages == []


@pytest.mark.parametrize("asked", ["offline=false", "WANDB_MODE=online"])
def test_wandb_asked_to_be_online_without_a_server_is_one_line(tmp_path, wandb_key_no_server, monkeypatch, asked):
    options = {"offline": False} if asked == "offline=false" else {}
    if asked == "WANDB_MODE=online":
        monkeypatch.setenv("WANDB_MODE", "online")
    message = timed_error(wandb_logger, tmp_path / "run", **options)
    assert message == (
        f"logger=wandb: cannot reach the W&B server {wandb_key_no_server} (Connection refused); "
        "log offline with logger.wandb.offline=true and upload later with wandb sync"
    )


def test_wandb_log_model_without_a_server_is_one_line(tmp_path, wandb_key_no_server):
    message = timed_error(wandb_logger, tmp_path / "run", log_model="all")
    assert message == (
        f"logger=wandb: cannot reach the W&B server {wandb_key_no_server} (Connection refused), "
        "and log_model=all needs it: checkpoints cannot be uploaded offline"
    )


def test_wandb_log_model_offline_is_one_line_not_lightnings_traceback(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no wandb login
    message = timed_error(wandb_logger, tmp_path / "run", log_model="all")
    assert message == (
        "logger=wandb: log_model=all uploads checkpoints, which an offline run cannot "
        "(no WANDB_API_KEY or wandb login, or offline=true): log in, or set logger.wandb.log_model=false"
    )
