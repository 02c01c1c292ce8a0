"""Preemption plumbing in one process: a stop signal or the STOP file becomes an agreed stop, status.json says
what happened, and handlers are put back. (Real signals to real multi-rank runs: test_faults.py, test_slurm.py.)"""

from __future__ import annotations

import json
import os
import signal

from gpt2dist.run.layout import STATUS_FILE, STOP_FILE
from gpt2dist.run.signals import StopRequest, write_status


def test_a_stop_signal_is_caught_and_reported_once(capfd):
    before = signal.getsignal(signal.SIGUSR1)
    stop = StopRequest()
    try:
        assert not stop.should_stop()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.should_stop() and stop.signal_name == "SIGUSR1"
        os.kill(os.getpid(), signal.SIGUSR1)  # a second USR1 changes nothing
        assert stop.signal_name == "SIGUSR1"
    finally:
        stop.restore()
    assert signal.getsignal(signal.SIGUSR1) is before
    assert capfd.readouterr().err.count("SIGUSR1 received") == 1


def test_the_stop_file_stops_and_is_acknowledged(tmp_path):
    stop = StopRequest(tmp_path / STOP_FILE)
    try:
        assert not stop.should_stop()
        (tmp_path / STOP_FILE).touch()
        assert stop.should_stop() and stop.signal_name == f"{STOP_FILE} file"
        stop.acknowledge()
        assert not (tmp_path / STOP_FILE).exists()
    finally:
        stop.restore()


def test_status_is_written_whole(tmp_path):
    write_status(tmp_path, "preempted", step=12, signal="SIGTERM")
    status = json.loads((tmp_path / STATUS_FILE).read_text())
    assert status["state"] == "preempted" and status["step"] == 12 and status["signal"] == "SIGTERM"
    assert [p.name for p in tmp_path.iterdir()] == [STATUS_FILE]  # no temporary left behind
