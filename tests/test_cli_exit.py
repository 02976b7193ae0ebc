"""The quick exit after a successful command (``dnastream.cli.exit``): taken only when nothing
can be lost, and the exit status is kept either way."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import h5py
import pytest

from dnastream.cli.exit import fast_exit_safe


def test_fast_exit_only_when_safe(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("DNASTREAM_SLOW_EXIT", raising=False)
    assert fast_exit_safe(0)
    assert not fast_exit_safe(1)
    assert not fast_exit_safe(2)
    monkeypatch.setenv("DNASTREAM_SLOW_EXIT", "1")
    assert not fast_exit_safe(0)
    monkeypatch.delenv("DNASTREAM_SLOW_EXIT")
    # an open HDF5 file (a writer that did not close its output) forces the normal exit
    f = h5py.File(tmp_path / "open.h5", "w")
    try:
        assert not fast_exit_safe(0)
    finally:
        f.close()
    assert fast_exit_safe(0)
    # an in-memory scratch file (no backing store) holds nothing to lose; with one it does
    mem = h5py.File("scratch.h5", "w", driver="core", backing_store=False)
    try:
        assert fast_exit_safe(0)
    finally:
        mem.close()
    backed = h5py.File(tmp_path / "backed.h5", "w", driver="core", backing_store=True)
    try:
        assert not fast_exit_safe(0)
    finally:
        backed.close()
    # so does another non-daemon thread still running
    stop = threading.Event()
    t = threading.Thread(target=stop.wait)
    t.start()
    try:
        assert not fast_exit_safe(0)
    finally:
        stop.set()
        t.join()
    assert fast_exit_safe(0)


@pytest.mark.parametrize(
    ("code", "status", "stderr"),
    [("0", 0, ""), ("3", 3, ""), ("None", 0, ""), ("'bad input'", 1, "bad input")],
)
def test_exit_now_keeps_the_status_and_flushes(tmp_path, code, status, stderr) -> None:
    """Output printed before the exit reaches the parent, the atexit handlers run, and a
    non-daemon thread's work is waited for (the normal exit is taken)."""
    marker = tmp_path / "atexit.txt"
    script = textwrap.dedent(f"""
        import atexit, sys
        from dnastream.cli.exit import exit_now
        atexit.register(lambda: open({str(marker)!r}, "w").write("ran"))
        print("partial line without newline", end="")
        exit_now({code})
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == status
    assert proc.stdout == "partial line without newline"
    assert stderr in proc.stderr
    assert marker.read_text() == "ran"


def test_exit_now_waits_for_a_running_thread(tmp_path) -> None:
    done = tmp_path / "thread.txt"
    script = textwrap.dedent(f"""
        import threading, time
        from dnastream.cli.exit import exit_now
        def work():
            time.sleep(0.5)
            open({str(done)!r}, "w").write("finished")
        threading.Thread(target=work).start()
        exit_now(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert done.read_text() == "finished"


def test_cli_status_through_the_entry_point(tmp_path) -> None:
    """`python -m dnastream` keeps typer's exit statuses: 0 for --version, 2 for a usage error."""
    ok = subprocess.run([sys.executable, "-m", "dnastream", "--version"], capture_output=True,
                        text=True)  # fmt: skip
    assert ok.returncode == 0 and ok.stdout.startswith("dnastream ")
    bad = subprocess.run([sys.executable, "-m", "dnastream", "embed", "--no-such-option"],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2
    assert "--no-such-option" in bad.stderr
