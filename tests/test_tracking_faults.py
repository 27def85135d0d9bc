"""MLflow tells the truth after a fault: real `mlflow server` processes on 127.0.0.1 that are
frozen, killed and restarted; a real training process killed with SIGKILL."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from t2i import tracking

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real `mlflow server` on a fixed port and store, so it can be killed and started again."""

    def __init__(self, root: Path) -> None:
        self.root, self.port = root, _free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
               "--artifacts-destination", str(self.root / "artifacts")]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        # Own process group: a signal to the group reaches the uvicorn worker too.
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.root, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    pytest.fail("mlflow server did not start")
                time.sleep(0.3)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, sig)
        if sig == signal.SIGKILL:
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", srv.uri)
    try:
        yield srv
    finally:
        srv.stop()


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    from mlflow import MlflowClient

    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_frozen_then_killed_server_costs_no_waits_and_loses_no_step(server: Server) -> None:
    run = tracking.start_run("t2i-faults", None, {"a": 1}, {})
    run.log_metrics({"loss": 1.0}, step=1)
    assert run.flush(30)

    server.signal(signal.SIGSTOP)  # frozen: connections hang instead of failing
    started = time.monotonic()
    for step in range(2, 12):
        run.log_metrics({"loss": 1.0 / step}, step=step)
    run.log_image(Image.new("RGB", (4, 4), (9, 9, 9)), key="samples", step=11)
    assert time.monotonic() - started < 2.0  # the old code waited 10 s on the first call alone
    server.signal(signal.SIGCONT)
    assert run.flush(60)
    assert _steps(server.uri, run.run_id, "loss") == list(range(1, 12))

    server.signal(signal.SIGKILL)  # gone: connections are refused
    started = time.monotonic()
    with pytest.warns(tracking.TrackingWarning, match="unreachable"):
        for step in range(12, 30):
            run.log_metrics({"loss": 1.0 / step}, step=step)
        assert not run.flush(3)  # nothing can be sent now
    assert time.monotonic() - started < 6.0
    server.start()  # same port, same store
    run.end()
    assert run.missing == ""
    assert _steps(server.uri, run.run_id, "loss") == list(range(1, 30))  # each step once, in order
    from mlflow import MlflowClient

    assert MlflowClient(server.uri).get_run(run.run_id).info.status == "FINISHED"


def test_end_during_outage_says_what_is_missing(server: Server, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(tracking.FLUSH_ENV, "1")
    run = tracking.start_run("t2i-faults", None, {}, {})
    assert run.flush(30)
    server.signal(signal.SIGKILL)
    with pytest.warns(tracking.TrackingWarning):
        for step in range(5, 9):
            run.log_metrics({"loss": 0.5}, step=step)
        run.end()
    assert "log_metrics: 4 calls (steps 5-8, server unreachable until the run ended)" in run.missing
    assert run.run_id in capsys.readouterr().err


KILLED_TRAINER = """
import os, signal, sys
from PIL import Image
from t2i import tracking
run = tracking.start_run("t2i-faults", None, {"steps": 8}, {})
for step in range(1, 6):
    run.log_metrics({"loss_d": float(step)}, step=step)
    if step % 2 == 0:
        run.log_image(Image.new("RGB", (4, 4)), key="samples", step=step)
assert run.flush(60)
print(__import__("json").dumps(run.to_json()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_killed_run_is_marked_killed_and_resumed_without_duplicate_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLED_TRAINER], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    client = MlflowClient(uri)
    assert client.get_run(info["run_id"]).info.status == "RUNNING"  # the lie the next start corrects

    other = tracking.start_run("t2i-faults", None, {}, {})  # any later start on this host
    dead = client.get_run(info["run_id"])
    assert dead.info.status == "KILLED"
    assert "ended without closing the run" in dead.data.tags["t2i.end_reason"]
    assert client.get_run(other.run_id).info.status == "RUNNING"  # our own live run is left alone
    other.end()

    # The resumed trainer redoes steps 4-5 (after its step-3 checkpoint), then goes on to 8.
    run = tracking.resume_run(info)
    for step in range(4, 9):
        run.log_metrics({"loss_d": float(step)}, step=step)
        if step % 2 == 0:
            run.log_image(Image.new("RGB", (4, 4)), key="samples", step=step)
    run.end()
    assert _steps(uri, info["run_id"], "loss_d") == list(range(1, 9))
    images = [f.path for f in client.list_artifacts(info["run_id"], "images") if f.path.endswith(".png")]
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in images) == [2, 4, 6, 8]
    assert client.get_run(info["run_id"]).info.status == "FINISHED"


def test_run_names_read_as_a_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.chdir(REPO)  # a git checkout: the name carries its short commit
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    plain = tracking.start_run("t2i-names", None, {}, {})
    monkeypatch.setenv("DVC_EXP_NAME", "lean-steps-50")
    exp = tracking.start_run("t2i-names", None, {}, {})
    for r in (plain, exp):
        r.end()
    client = MlflowClient(uri)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d-\d{6}-[0-9a-f]{4,}", client.get_run(plain.run_id).info.run_name)
    assert client.get_run(exp.run_id).info.run_name == "lean-steps-50"


def test_reevaluating_a_finished_run_updates_its_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = tracking.start_run("t2i-faults", None, {}, {})
    run.log_metrics({"loss_d": 1.0}, step=10)
    run.end()
    for value in (0.5, 0.7):  # evaluate twice on the same model (e.g. new eval params)
        again = tracking.resume_run(run.to_json())
        again.log_metrics({"eval/acc": value}, step=10)
        again.end()
    history = MlflowClient(tracking.tracking_uri()).get_metric_history(run.run_id, "eval/acc")
    assert [m.value for m in history] == [0.5, 0.7]



def test_sender_bounds_its_queue_and_counts_what_it_dropped() -> None:
    from t2i.tracking_queue import Sender, summarize

    up = {"ok": False}
    sent: list[int] = []

    def call(i: int) -> None:
        if not up["ok"]:
            raise ConnectionError("refused")
        sent.append(i)

    events: list[str] = []
    sender = Sender(lambda e: isinstance(e, ConnectionError), lambda w, e: events.append("down"),
                    lambda left: events.append("back"), lambda w, e: events.append("error"), max_pending=3)
    for i in range(5):
        sender.submit("log_metrics", lambda i=i: call(i), step=i)
    assert not sender.flush(0.3)
    up["ok"] = True
    assert sender.flush(30)
    assert sent == [2, 3, 4] and events == ["down", "back"]
    assert summarize(sender.close(1)) == "log_metrics: 2 calls (steps 0-1, dropped: too many calls queued during the outage)"
