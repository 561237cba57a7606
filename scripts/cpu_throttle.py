"""Simulate a slower machine for a child process, the way ``cpulimit`` does (not installed on a fresh machine).

:class:`Throttle` is a thread that alternates SIGCONT (run for ``period / slowdown`` seconds) and SIGSTOP
(stop for the rest of each ``period``) on the child's process group, so a child started with
``start_new_session=True`` gets ``1 / slowdown`` of the wall clock: its wall-clock budgets and timings see a
machine ``slowdown`` times slower. Descendants that start a session of their own (the reward verifier pool's
workers do, ``bnpo_trl/rewards/pool.py``, so ``os.killpg`` on the child's group alone misses them) are looked
up in ``/proc`` every ``rescan`` seconds and their groups are throttled in step. On exit every throttled group
gets SIGCONT, so nothing is left stopped. What it does not slow down: CPU-time limits (a stopped process
uses no CPU time), so a CPU-time budget inside the child sees this machine's speed.

    python scripts/cpu_throttle.py 1.4    # how much slower a CPU-bound probe runs under a 1.4x throttle
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

PERIOD = 0.05  # seconds per SIGCONT + SIGSTOP cycle
RESCAN = 0.5  # seconds between looks for descendants in sessions of their own


def duty_cycle(slowdown: float, period: float = PERIOD) -> tuple[float, float]:
    """-> (run_seconds, stop_seconds) of each ``period`` for a machine ``slowdown`` times slower.

    >>> duty_cycle(2.0, 0.1)
    (0.05, 0.05)
    """
    if not slowdown >= 1.0 or math.isinf(slowdown):  # `not >=` also rejects NaN
        raise ValueError(f"slowdown must be a finite factor >= 1 (a slower machine), got {slowdown}")
    if not period > 0:
        raise ValueError(f"period must be > 0 seconds, got {period}")
    run = period / slowdown
    return run, period - run


def descendant_groups(pid: int) -> set[int]:
    """The process groups of ``pid``'s descendants, from ``/proc`` (Linux; an empty set elsewhere)."""
    children, groups = defaultdict(list), {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:  # exited meanwhile
                continue
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp ...
            children[int(fields[1])].append(int(name))
            groups[int(name)] = int(fields[2])
    found, todo = set(), list(children[pid])
    while todo:
        child = todo.pop()
        found.add(groups[child])
        todo += children[child]
    return found


class Throttle:
    """Run the process group ``pid`` (and its descendants' groups) ``1 / slowdown`` of the time, while open.

    ``pid`` must lead its group (start it with ``start_new_session=True``). ``slowdown == 1`` does nothing.
    The thread ends by itself once the child's group is gone (``ProcessLookupError``).
    """

    def __init__(self, pid: int, slowdown: float, period: float = PERIOD, rescan: float = RESCAN) -> None:
        self.run_seconds, self.stop_seconds = duty_cycle(slowdown, period)
        self.pid, self.slowdown, self.rescan = pid, slowdown, rescan
        self.groups = {pid}
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Throttle:
        if self.slowdown > 1.0:
            if os.getpgid(self.pid) != self.pid:
                raise ValueError(
                    f"process {self.pid} does not lead its group: start it with start_new_session=True"
                )
            self._thread = threading.Thread(target=self._loop, name=f"throttle-{self.pid}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and send SIGCONT to every throttled group (always, even if the thread failed)."""
        if self._thread is None:
            return
        self._done.set()
        self._thread.join()
        self._thread = None
        self._signal(signal.SIGCONT)

    def _signal(self, sig: int) -> bool:
        """Send ``sig`` to each throttled group, forgetting those that are gone; -> whether the child's is left."""
        for group in sorted(self.groups):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                self.groups.discard(group)
        return self.pid in self.groups

    def _loop(self) -> None:
        next_scan = 0.0
        while True:
            if time.monotonic() >= next_scan:
                self.groups |= descendant_groups(self.pid)
                next_scan = time.monotonic() + self.rescan
            if not self._signal(signal.SIGCONT) or self._done.wait(self.run_seconds):
                return
            if not self._signal(signal.SIGSTOP) or self._done.wait(self.stop_seconds):
                return


# A fixed CPU-bound pure-Python loop; it prints its own wall time (so Python's start-up is not counted).
PROBE = """import sys, time
n, x, t = int(sys.argv[1]), 0, time.perf_counter()
for i in range(n):
    x = (x + i * i) % 1000003
print(time.perf_counter() - t)
"""


def _probe(iterations: int, slowdown: float, period: float) -> float:
    """Wall seconds of the probe's loop in a fresh process (its own session) under ``Throttle(slowdown)``."""
    cmd = [sys.executable, "-c", PROBE, str(iterations)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
    with Throttle(proc.pid, slowdown, period):
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the CPU probe failed (exit {proc.returncode})")
    return float(out)


def measure_slowdown(slowdown: float, seconds: float = 2.0, period: float = PERIOD) -> float:
    """-> wall_throttled / wall_unthrottled of the same probe (an iteration count that takes about
    ``seconds`` here, fixed from a short calibration run), run once unthrottled, then once throttled."""
    duty_cycle(slowdown, period)  # reject a bad factor before spending any time
    calibration = 200_000
    iterations = max(calibration, int(calibration * seconds / _probe(calibration, 1.0, period)))
    unthrottled = _probe(iterations, 1.0, period)
    return _probe(iterations, slowdown, period) / unthrottled


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("slowdown", type=float, help="e.g. 1.4: a machine 40%% slower")
    parser.add_argument("--seconds", type=float, default=2.0, help="the probe's unthrottled wall time")
    parser.add_argument("--period", type=float, default=PERIOD, help="seconds per SIGCONT + SIGSTOP cycle")
    args = parser.parse_args(argv)
    run, stop = duty_cycle(args.slowdown, args.period)
    measured = measure_slowdown(args.slowdown, args.seconds, args.period)
    print(
        f"throttle {args.slowdown:g}x: run {run * 1000:.1f} ms, stop {stop * 1000:.1f} ms; probe measured {measured:.2f}x"
    )
    return measured


if __name__ == "__main__":
    main()
