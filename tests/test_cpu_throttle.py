"""scripts/cpu_throttle.py: the duty cycle, the signals a Throttle sends, and a real child under one.

No assertion on how much slower a throttled child runs: timings belong in the benchmark scripts
(``scripts/quickstart_seeds.py --slowdown`` prints the measured slowdown with its table)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.script_utils import load_script

ct = load_script("cpu_throttle")


@pytest.mark.parametrize(
    ("slowdown", "period", "run", "stop"),
    [
        (1.0, 0.05, 0.05, 0.0),
        (2.0, 0.05, 0.025, 0.025),
        (1.4, 0.05, 0.05 / 1.4, 0.05 - 0.05 / 1.4),
        (4.0, 1.0, 0.25, 0.75),
    ],
)
def test_duty_cycle(slowdown, period, run, stop):
    got = ct.duty_cycle(slowdown, period)
    assert got == pytest.approx((run, stop))
    assert sum(got) == pytest.approx(period)


@pytest.mark.parametrize("slowdown", [0.5, 0.0, -1.0, float("nan"), float("inf")])
def test_duty_cycle_rejects_faster_or_odd_factors(slowdown):
    with pytest.raises(ValueError):
        ct.duty_cycle(slowdown)
    with pytest.raises(ValueError):
        ct.Throttle(1, slowdown)


def test_duty_cycle_rejects_a_non_positive_period():
    with pytest.raises(ValueError):
        ct.duty_cycle(2.0, 0.0)


@pytest.fixture
def sleeper():
    """A child that leads its own process group and uses no CPU; killed afterwards."""
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def sent(monkeypatch):
    """Record ``os.killpg`` calls instead of sending them."""
    calls = []
    monkeypatch.setattr(ct.os, "killpg", lambda group, sig: calls.append((group, sig)))
    return calls


def test_slowdown_one_sends_no_signals(sent):
    with ct.Throttle(12345, 1.0) as throttle:  # not even checked to lead its group: nothing is done
        time.sleep(0.05)
    assert throttle._thread is None
    assert sent == []


def test_signals_alternate_and_end_with_sigcont_even_on_exception(sleeper, sent):
    with pytest.raises(RuntimeError, match="boom"), ct.Throttle(sleeper.pid, 2.0, period=0.01):
        time.sleep(0.1)
        raise RuntimeError("boom")
    assert {group for group, _ in sent} == {sleeper.pid}
    sigs = [sig for _, sig in sent]
    assert len(sigs) >= 4
    *cycle, last = sigs
    assert cycle == [(signal.SIGCONT, signal.SIGSTOP)[i % 2] for i in range(len(cycle))]
    assert last == signal.SIGCONT


def test_stops_by_itself_when_the_child_is_gone(sleeper, monkeypatch):
    calls = []

    def killpg(group, sig):
        calls.append(sig)
        if len(calls) > 3:
            raise ProcessLookupError

    monkeypatch.setattr(ct.os, "killpg", killpg)
    with ct.Throttle(sleeper.pid, 2.0, period=0.01) as throttle:
        throttle._thread.join(timeout=5)
        assert not throttle._thread.is_alive()
        assert throttle.groups == set()
    assert calls[:3] == [signal.SIGCONT, signal.SIGSTOP, signal.SIGCONT]


def test_refuses_a_child_that_does_not_lead_its_group():
    proc = subprocess.Popen(["sleep", "30"])  # in our group
    try:
        with pytest.raises(ValueError, match="start_new_session"), ct.Throttle(proc.pid, 2.0):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_descendants_in_sessions_of_their_own_are_found():
    # a child that starts a grandchild in a new session (as the reward verifier pool does)
    code = "import subprocess, sys; p = subprocess.Popen(['sleep', '30'], start_new_session=True); print(p.pid, flush=True); sys.stdin.read(); p.kill()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        grandchild = int(proc.stdout.readline())
        groups = ct.descendant_groups(proc.pid)
        assert grandchild in groups and proc.pid not in groups
    finally:
        proc.communicate("")
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "cmd",
    [
        ["sleep", "0.3"],
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass",
        ],
    ],
    ids=["sleep", "busy"],
)
def test_a_real_child_finishes_and_is_not_left_stopped(cmd):
    proc = subprocess.Popen(cmd, start_new_session=True)
    with ct.Throttle(proc.pid, 2.0) as throttle:
        assert proc.wait(timeout=30) == 0
        throttle._thread.join(timeout=5)  # ends by itself once the child is reaped
        assert not throttle._thread.is_alive()
    assert proc.returncode == 0


def _state(pid: int) -> str:
    """The process's state letter in /proc ("T": stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_child_stopped_when_the_throttle_closes_is_continued():
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        with ct.Throttle(proc.pid, 100.0, period=0.2):  # stopped 99% of the time
            deadline = time.monotonic() + 5
            while _state(proc.pid) != "T" and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _state(proc.pid) == "T"  # the SIGSTOP reached it
        assert _state(proc.pid) != "T"  # and the closing SIGCONT too
    finally:
        proc.kill()
        proc.wait()


def test_measure_slowdown_returns_a_ratio():
    assert ct.measure_slowdown(2.0, seconds=0.1) > 0  # no bound on it: a shared machine's timings vary
    with pytest.raises(ValueError):
        ct.measure_slowdown(0.5)
