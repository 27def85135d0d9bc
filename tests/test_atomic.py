"""t2i.atomic: a killed writer's temp files are removed by the next writer of the same output,
never a live writer's; a writer killed mid-swap gets its previous result back. Real processes,
killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from t2i.atomic import atomic_dir, atomic_path, atomic_write, sweep_leftovers

REPO = Path(__file__).resolve().parents[1]
WRITER = """
import sys, time
from pathlib import Path
from t2i.atomic import atomic_dir, atomic_write
out = Path(sys.argv[1])
with atomic_dir(out) as tmp:
    (tmp / "big.bin").write_bytes(b"x" * 1000)
    print("writing", flush=True)
    time.sleep(120)
"""


def _writer(out: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    return proc


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_killed_writers_temp_dir_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("1")
    proc = _writer(out)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    left = _hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(f".prepared.tmp-{proc.pid}-")
    with atomic_dir(out) as tmp:
        (tmp / "v").write_text("2")
    assert _hidden(tmp_path) == [] and (out / "v").read_text() == "2"


def test_live_writers_temp_dir_is_left_alone(tmp_path: Path) -> None:
    out = tmp_path / "embeddings"
    proc = _writer(out)
    try:
        theirs = _hidden(tmp_path)
        with atomic_dir(out) as tmp:
            (tmp / "v").write_text("mine")
        assert _hidden(tmp_path) == theirs  # still there: that process is running
    finally:
        proc.kill()
        proc.wait()


def test_only_the_outputs_own_leftovers_go(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    mine = tmp_path / f".a.json.tmp-{pid}-abc12345"
    other_output = tmp_path / f".b.json.tmp-{pid}-abc12345"
    user_file = tmp_path / ".a.json.tmp-notes"  # not our naming: never touched
    for p in (mine, other_output, user_file):
        p.write_text("partial")
    atomic_write(tmp_path / "a.json", b"{}")
    assert not mine.exists() and other_output.exists() and user_file.exists()
    with atomic_path(tmp_path / "b.json") as tmp:
        tmp.write_text("{}")
    assert not other_output.exists() and (tmp_path / "b.json").read_text() == "{}"


def test_writer_killed_mid_swap_gets_previous_result_back(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    # The state a kill between atomic_dir's two renames leaves: no output, its old copy, the new temp.
    old = tmp_path / f".models.old-{pid}-abc12345"
    old.mkdir()
    (old / "v").write_text("previous")
    (tmp_path / f".models.tmp-{pid}-abc12345").mkdir()
    sweep_leftovers(tmp_path / "models")
    assert (tmp_path / "models" / "v").read_text() == "previous"
    assert _hidden(tmp_path) == []
