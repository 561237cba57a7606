"""The worker pool: hard wall-clock kills, dead workers, start-up errors, reuse, fork, clean-up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from bnpo_trl.rewards import pool as pool_module
from bnpo_trl.rewards.pool import PoolSettings, VerifierPool, get_pool

ITEM = {"op": "item", "gold": r"\frac{1}{2}", "pred": r"\boxed{0.5}"}


@pytest.fixture
def pool():
    pool = VerifierPool(workers=1, timeout=1.0)
    yield pool
    pool.close()


def test_wall_clock_timeout_kills_and_replaces_a_worker(pool) -> None:
    assert pool.run([ITEM]) == [{"status": "correct"}]
    old_pid = pool._workers[0].proc.pid
    start = time.monotonic()
    # A hang that no CPU budget sees (the worker sleeps): only the parent's deadline can end it.
    replies = pool.run([{"op": "sleep", "seconds": 60}, ITEM])
    elapsed = time.monotonic() - start
    assert replies == [{"status": "timeout", "killed": True}, {"status": "correct"}]
    assert elapsed < 10, elapsed  # one timeout, plus a replacement's start-up for the second request
    assert pool.stats.killed == 1
    assert pool.stats.workers_started == 2
    assert pool._workers[0].proc.pid != old_pid
    with pytest.raises(ProcessLookupError):
        os.kill(old_pid, 0)  # the hung worker is gone (killed and reaped)


def test_cpu_budget_timeout_keeps_the_worker(pool) -> None:
    replies = pool.run([{"op": "item", "gold": "5", "pred": r"\boxed{9^{9^{9^{9}}}}"}, ITEM])
    assert replies == [{"status": "timeout"}, {"status": "correct"}]
    assert pool.stats.cpu_timeouts == 1
    assert pool.stats.killed == 0
    assert pool.stats.workers_started == 1


def test_a_worker_that_dies_mid_request_is_a_timeout_and_is_replaced() -> None:
    pool = VerifierPool(workers=1, timeout=30.0)
    try:
        pool.run([ITEM])
        pid = pool._workers[0].proc.pid
        killer = threading.Timer(0.5, os.kill, (pid, signal.SIGKILL))
        killer.start()
        start = time.monotonic()
        replies = pool.run([{"op": "sleep", "seconds": 60}])
        assert time.monotonic() - start < 10  # far below the 30 s deadline: the death is noticed at once
        assert replies == [{"status": "timeout", "killed": True}]
        assert pool.run([ITEM]) == [{"status": "correct"}]
    finally:
        pool.close()


def _item(answer: int) -> dict:
    return {"op": "item", "gold": "3/7", "pred": rf"\boxed{{{answer}/7}}"}


def test_a_killed_batch_reruns_its_innocent_items(pool) -> None:
    # 8 requests for one worker: its first batch is the first half, [0, sleep, 2, 3]. The sleep is killed at
    # its own deadline; 0 was answered before it; 2 and 3 (never started) are re-run by the replacement.
    requests = [_item(3), {"op": "sleep", "seconds": 60}, *(_item(k) for k in range(2, 8))]
    start = time.monotonic()
    replies = pool.run(requests)
    assert time.monotonic() - start < 10
    expected = ["correct", "timeout", *("correct" if k == 3 else "wrong" for k in range(2, 8))]
    assert [reply["status"] for reply in replies] == expected
    assert replies[1] == {"status": "timeout", "killed": True}
    assert pool.stats.killed == 1 and pool.stats.requeued == 2 and pool.stats.workers_started == 2
    assert pool.stats.batches >= 3  # [0, sleep, 2, 3], then the re-queued [2, 3] and the rest
    assert pool.stats.requests == 8


def test_a_worker_killed_mid_batch_reruns_the_rest_elsewhere() -> None:
    pool = VerifierPool(workers=2, timeout=30.0)
    try:
        pool.run([ITEM, ITEM])
        pids = {w.proc.pid for w in pool._workers}
        # one key: all eight requests are one worker's queue; the sleep is second in its first batch
        requests = [_item(1), {"op": "sleep", "seconds": 60}, *(_item(k) for k in (2, 3, 4, 5, 6, 3))]

        def kill_the_sleeper() -> None:  # the worker whose current request is the sleep (index 1)
            for worker in list(pool._workers):
                if worker.tasks and worker.tasks[0] == 1 and worker.proc.pid in pids:
                    os.kill(worker.proc.pid, signal.SIGKILL)

        victim = threading.Timer(1.0, kill_the_sleeper)
        victim.start()
        replies = pool.run(requests, keys=["same"] * len(requests))
        victim.join()
        assert replies[1] == {"status": "timeout", "killed": True}
        assert [r["status"] for r in replies[2:]] == [
            "wrong",
            "correct",
            "wrong",
            "wrong",
            "wrong",
            "correct",
        ]
        assert replies[0] == {"status": "wrong"} and pool.stats.killed == 1 and pool.stats.requeued >= 2
    finally:
        pool.close()


def test_each_request_of_a_batch_has_its_own_deadline(pool) -> None:
    # four 0.6 s requests in batches: 1.2 s or more per batch, past the 1 s timeout, yet no request is late
    replies = pool.run([{"op": "sleep", "seconds": 0.6}] * 4 + [ITEM] * 4)
    assert replies == [{"status": "ok"}] * 4 + [{"status": "correct"}] * 4
    assert pool.stats.killed == 0 and pool.stats.batches < 8
    assert 0.55 < pool.stats.max_request_seconds < 1.0


def test_a_recycled_worker_leaves_the_rest_of_its_batch_to_its_successor() -> None:
    pool = VerifierPool(workers=1, timeout=10.0, recycle_rss_mb=1)  # every worker exits after one reply
    try:
        replies = pool.run([_item(k) for k in range(6)])
        assert [r["status"] for r in replies] == ["correct" if k == 3 else "wrong" for k in range(6)]
        assert pool.stats.workers_started == 7 and pool.stats.killed == 0 and pool.stats.requeued > 0
    finally:
        pool.close()


def test_one_request_at_a_time_gives_the_same_replies() -> None:
    requests = [_item(k % 5) for k in range(20)]
    single, batched = VerifierPool(workers=2, max_batch=1), VerifierPool(workers=2)
    try:
        assert single.run(requests) == batched.run(requests)
        assert single.stats.batches == 20 and batched.stats.batches < 20
    finally:
        single.close(), batched.close()
    with pytest.raises(ValueError, match="max_batch must be a positive integer"):
        VerifierPool(workers=1, max_batch=0)


def test_start_waits_until_every_worker_is_ready() -> None:
    pool = VerifierPool(workers=2, timeout=5.0)
    try:
        pool.start()
        assert len(pool._workers) == 2 and all(w.ready for w in pool._workers)
        pool.start()  # already started: nothing more
        assert pool.stats.workers_started == 2 and pool.run([ITEM]) == [{"status": "correct"}]
    finally:
        pool.close()


def test_requests_are_spread_over_workers_and_answered_in_order() -> None:
    pool = VerifierPool(workers=2, timeout=5.0)
    try:
        requests = [{"op": "item", "gold": str(i % 7), "pred": rf"\boxed{{{i % 5}}}"} for i in range(40)]
        replies = pool.run(requests)
        expected = ["correct" if i % 7 == i % 5 else "wrong" for i in range(40)]
        assert [r["status"] for r in replies] == expected
        assert pool.stats.workers_started == 2
        assert pool.run([]) == []
    finally:
        pool.close()


def test_keyed_requests_keep_their_order() -> None:
    pool = VerifierPool(workers=2, timeout=5.0)
    try:
        golds = [str(i % 3) for i in range(30)]
        requests = [{"op": "item", "gold": g, "pred": rf"\boxed{{{i % 4}}}"} for i, g in enumerate(golds)]
        replies = pool.run(requests, keys=golds)
        assert [r["status"] for r in replies] == ["correct" if i % 3 == i % 4 else "wrong" for i in range(30)]
        with pytest.raises(ValueError, match="keys for"):
            pool.run(requests, keys=golds[:3])
    finally:
        pool.close()


def test_start_up_failure_is_a_clear_error(monkeypatch, tmp_path) -> None:
    script = tmp_path / "broken_worker.py"
    script.write_text("import sys\nsys.exit(3)\n")
    monkeypatch.setattr(pool_module, "_WORKER_SCRIPT", str(script))
    broken = VerifierPool(workers=1, timeout=1.0)
    with pytest.raises(RuntimeError, match=r"exited during start-up \(exit code 3\).*import math_verify"):
        broken.run([ITEM])
    assert broken._workers == []


def test_close_stops_workers_and_the_pool_restarts_lazily(pool) -> None:
    pool.run([ITEM])
    proc = pool._workers[0].proc
    pool.close()
    assert proc.returncode is not None
    assert pool._workers == []
    assert pool.run([ITEM]) == [{"status": "correct"}]


def test_get_pool_shares_one_pool_per_configuration() -> None:
    settings = PoolSettings(workers=1, timeout=3.0)
    assert get_pool(settings) is get_pool(PoolSettings(workers=1, timeout=3, cpu_timeout=1.0))
    assert get_pool(settings) is not get_pool(PoolSettings(workers=1, timeout=4.0))
    assert get_pool(settings).settings == settings and get_pool(settings).timeout == 3.0


def test_pool_settings_fill_defaults_and_are_one_key() -> None:
    settings = PoolSettings(workers=2, timeout=6)
    assert (settings.workers, settings.timeout, settings.cpu_timeout, settings.memory_mb) == (
        2,
        6.0,
        2.0,
        4096,
    )
    assert isinstance(settings.timeout, float) and isinstance(settings.cpu_timeout, float)
    assert settings == PoolSettings(2, 6.0, 2.0, 4096) and hash(settings) == hash(PoolSettings(2, 6.0, 2.0))
    assert PoolSettings().workers == pool_module.default_workers()
    with pytest.raises(AttributeError):
        settings.timeout = 1.0  # frozen: a pool's key cannot change under it


def test_verifier_pool_takes_settings_or_their_fields() -> None:
    settings = PoolSettings(workers=1, timeout=2.0, memory_mb=None)
    assert VerifierPool(settings).settings == VerifierPool(workers=1, timeout=2.0, memory_mb=None).settings
    with pytest.raises(TypeError, match="either settings or its fields"):
        VerifierPool(settings, timeout=3.0)
    with pytest.raises(TypeError, match="PoolSettings"):
        VerifierPool(2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "workers must be a positive integer"),
        ({"timeout": 0}, "timeout must be"),
        ({"timeout": 1.0, "cpu_timeout": 2.0}, "cpu_timeout must be in"),
        ({"memory_mb": 10}, "memory_mb must be"),
        ({"workers": True}, "workers must be a positive integer"),
        ({"timeout": "5"}, "timeout must be"),
        ({"cpu_timeout": 0}, "cpu_timeout must be in"),
        ({"memory_mb": 1024.0}, "memory_mb must be"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message) -> None:
    args = {"workers": 1, "timeout": 5.0, "cpu_timeout": None, "memory_mb": None} | kwargs
    with pytest.raises(ValueError, match=message):
        PoolSettings(**args)
    with pytest.raises(ValueError, match=message):
        VerifierPool(**args)  # the pool checks its settings the same way, before starting any worker


def test_forked_child_uses_its_own_workers_and_leaves_the_parents_alone(pool) -> None:
    pool.run([ITEM])
    parent_worker = pool._workers[0].proc.pid
    pid = os.fork()
    if pid == 0:  # child: verify with fresh workers, then run the exit handlers, as a normal exit would
        code = 1
        try:
            ok = pool.run([ITEM]) == [{"status": "correct"}] and pool._workers[0].proc.pid != parent_worker
            pool_module._close_all()
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    os.kill(parent_worker, 0)  # still alive
    assert pool.run([ITEM]) == [{"status": "correct"}]
    assert pool._workers[0].proc.pid == parent_worker


@pytest.mark.skipif(not os.path.exists("/proc/self/limits"), reason="reads /proc/<pid>/limits (Linux)")
def test_worker_resource_limits() -> None:
    pool = VerifierPool(workers=1, timeout=2.0, memory_mb=512)
    try:
        pool.run([ITEM])
        with open(f"/proc/{pool._workers[0].proc.pid}/limits") as f:
            limits = {line[:26].strip(): line[26:].split() for line in f.read().splitlines()[1:]}
        assert limits["Max address space"][0] == str(512 * 2**20)
        assert limits["Max core file size"][0] == "0"
        cpu_limit = limits["Max cpu time"][0]  # set before each request: used CPU + timeout + 2 s, rounded up
        assert cpu_limit != "unlimited" and 4 <= int(cpu_limit) <= 10
    finally:
        pool.close()


def test_a_script_without_main_guard_works_and_its_workers_end_with_it(tmp_path) -> None:
    # No `if __name__ == "__main__"` guard: a pool that re-imported `__main__` (multiprocessing's spawn or
    # forkserver) would run this script again in every worker.
    script = tmp_path / "train_like.py"
    script.write_text(
        "from bnpo_trl.rewards import accuracy\n"
        "from bnpo_trl.rewards.accuracy import get_verifier\n"
        "from bnpo_trl.rewards.pool import PoolSettings\n"
        "print(accuracy([r'\\boxed{0.5}', 'no'], answer=['1/2', '1'], timeout=3.0))\n"
        "print(*[w.proc.pid for w in get_verifier(PoolSettings(timeout=3.0)).pool._workers])\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    scores, pids = done.stdout.strip().splitlines()
    assert scores == "[1.0, 0.0]"
    for pid in map(int, pids.split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # closed by the exit handler, not left behind
