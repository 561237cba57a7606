"""A pool of math-verify worker processes with a hard per-request wall-clock timeout.

Why processes, and why these: sympy work is CPU-bound (threads would share one core through the GIL), and
math-verify's own timeout uses ``signal.alarm``, which fails off the main thread and cannot stop every
hang. Each worker is a fresh interpreter started with ``subprocess`` running ``_worker.py`` as a script:

- it works from any thread (no signals in the parent) and inside a multi-threaded trainer (no ``fork`` of
  the trainer: ``subprocess`` execs a clean interpreter at once);
- it never re-imports the training script's ``__main__`` (``multiprocessing``'s spawn and forkserver do
  that, and crash on scripts without an ``if __name__ == "__main__"`` guard), nor torch;
- a replacement worker is ready in under a second (imports, then a warm-up on common answer forms).

The parent sends each worker a batch of requests at a time (up to ``max_batch``, fewer as the queues run
low, so that the last requests still spread over the workers); the worker answers them in order, one reply
line each as soon as it has it. Every request has its own ``timeout``: counted from the moment the worker
starts it (the previous reply, or the batch's arrival), so a batch is never given more time per request
than a single request. A worker that misses that deadline is killed and replaced: the request it was on
gets ``{"status": "timeout", "killed": True}`` and the requests of its batch it had not reached go back to
the queue and are answered by another (or the replacement) worker, as if nothing happened. Inside the
worker a CPU-time budget (default ``timeout / 3``) ends ordinary hangs without killing it. See
:mod:`bnpo_trl.rewards._worker` for the worker side.

Pools are created lazily (the first :meth:`VerifierPool.run` starts the workers), reused across calls,
shared per :class:`PoolSettings` (:func:`get_pool`), closed at interpreter exit, and forgotten (not killed) in a
child created by ``os.fork``, which starts its own workers if it needs some.

Example:
    >>> from bnpo_trl.rewards.pool import VerifierPool
    >>> pool = VerifierPool(workers=1, timeout=5.0)
    >>> pool.run([{"op": "item", "gold": "\\\\frac{1}{2}", "pred": "\\\\boxed{0.5}"}])
    [{'status': 'correct'}]
    >>> pool.close()
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import json
import os
import select
import subprocess
import sys
import threading
import time
import weakref
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["PoolSettings", "PoolStats", "VerifierPool", "default_workers", "get_pool"]

_WORKER_SCRIPT = str(Path(__file__).with_name("_worker.py"))
#: How long a fresh worker may take to import math-verify before the pool gives up with an error.
STARTUP_TIMEOUT = 120.0
#: Most requests sent to a worker in one message: enough that the worker never waits for the parent
#: between requests; small enough that a killed batch re-runs little and queues balance at the end.
MAX_BATCH = 16


def default_workers() -> int:
    """``min(2, usable CPUs)``: verification is one of several CPU consumers in a training process."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(2, cpus))


@dataclass(frozen=True)
class PoolSettings:
    """The settings of a verifier pool, validated, with defaults filled in; the key that pools (and the
    verifiers built on them) are shared by.

    Args:
        workers: Number of worker processes (default :func:`default_workers`).
        timeout: Wall-clock seconds a worker has to answer one request; then it is killed and replaced,
            and the request gets ``{"status": "timeout"}``.
        cpu_timeout: CPU seconds per request inside the worker (default ``timeout / 3``: a budget hit
            this way does not cost a worker restart; under CPU contention CPU time runs slower than wall
            time, hence the margin).
        memory_mb: Address-space cap of each worker in MiB (``None``: no cap).

    Example:
        >>> PoolSettings(workers=1, timeout=3)
        PoolSettings(workers=1, timeout=3.0, cpu_timeout=1.0, memory_mb=4096)
    """

    workers: int | None = None
    timeout: float = 5.0
    cpu_timeout: float | None = None
    memory_mb: int | None = 4096

    def __post_init__(self) -> None:
        workers = default_workers() if self.workers is None else self.workers
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        timeout = self.timeout
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {timeout!r}")
        cpu_timeout = timeout / 3 if self.cpu_timeout is None else self.cpu_timeout
        if not isinstance(cpu_timeout, int | float) or not 0 < cpu_timeout <= timeout:
            raise ValueError(f"cpu_timeout must be in (0, timeout={timeout}] seconds, got {cpu_timeout!r}")
        memory_mb = self.memory_mb
        if memory_mb is not None and (not isinstance(memory_mb, int) or memory_mb < 256):
            raise ValueError(
                f"memory_mb must be an integer >= 256 (sympy alone needs ~150 MiB) or None, got {memory_mb!r}"
            )
        object.__setattr__(self, "workers", workers)
        object.__setattr__(self, "timeout", float(timeout))
        object.__setattr__(self, "cpu_timeout", float(cpu_timeout))


@dataclass
class PoolStats:
    """Counters since the pool was created: requests answered, batches sent, killed (wall-clock timeout or
    worker death), requests re-queued because their batch's worker was killed or recycled before reaching
    them, CPU-budget timeouts reported by workers, workers started (including replacements), and the
    longest wall-clock time one request took (from its start, the previous reply of its batch or the
    batch's sending, to its reply or its worker's kill)."""

    requests: int = 0
    batches: int = 0
    killed: int = 0
    requeued: int = 0
    cpu_timeouts: int = 0
    workers_started: int = 0
    max_request_seconds: float = 0.0


class _Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-P", _WORKER_SCRIPT, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,  # Ctrl-C in the terminal goes to the trainer, which closes the pool
        )
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.ready = False
        self.started = time.monotonic()
        self.tasks: collections.deque[int] = collections.deque()  # the batch in flight, the current first
        self.since = 0.0  # when the current request started: the batch's sending or the last reply

    def send(self, messages: list[dict[str, Any]]) -> None:
        self.proc.stdin.write(json.dumps(messages).encode() + b"\n")

    def read(self) -> list[dict[str, Any]] | None:
        """The complete messages available now; ``None`` at end of file (the worker exited)."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            return None
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._close_pipes()

    def close(self, grace: float = 1.0) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.close()  # end of input: an idle worker exits by itself
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for pipe in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                pipe.close()


class VerifierPool:
    """Worker processes that answer verification requests, with a hard wall-clock timeout per request.

    Args:
        settings: The :class:`PoolSettings`; or give its fields (``workers``, ``timeout``,
            ``cpu_timeout``, ``memory_mb``) as keyword arguments instead.
        recycle_rss_mb: A worker whose resident memory exceeds this after a request is replaced.
        max_batch: Most requests sent to a worker in one message (1: one request at a time).
    """

    def __init__(
        self,
        settings: PoolSettings | None = None,
        *,
        recycle_rss_mb: int | None = 1024,
        max_batch: int = MAX_BATCH,
        **fields: Any,
    ) -> None:
        if settings is not None and fields:
            raise TypeError(
                f"pass either settings or its fields, not both (got settings and {sorted(fields)})"
            )
        if settings is not None and not isinstance(settings, PoolSettings):
            raise TypeError(f"settings must be a PoolSettings, got {type(settings).__name__}")
        if not isinstance(max_batch, int) or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {max_batch!r}")
        self.settings = settings if settings is not None else PoolSettings(**fields)
        self.max_batch = max_batch
        self.workers = self.settings.workers
        self.timeout = self.settings.timeout
        self.cpu_timeout = self.settings.cpu_timeout
        self.memory_mb = self.settings.memory_mb
        self._config = {
            "cpu_seconds": self.cpu_timeout,
            "backstop_cpu_seconds": self.timeout + 2.0,
            "memory_mb": self.memory_mb,
            "recycle_rss_mb": recycle_rss_mb,
        }
        self.stats = PoolStats()
        self._workers: list[_Worker] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        _LIVE_POOLS.add(self)

    # ------------------------------------------------------------------ lifecycle
    def _start_worker(self) -> _Worker:
        worker = _Worker(self._config)
        self.stats.workers_started += 1
        return worker

    def _replace(self, worker: _Worker) -> None:
        self._workers[self._workers.index(worker)] = self._start_worker()

    def close(self) -> None:
        """Stop the workers (the pool starts new ones if it is used again)."""
        # At interpreter exit a daemon thread may still hold the lock in `run`: do not wait for it forever.
        locked = self._lock.acquire(timeout=2.0)
        try:
            self._stop_all(graceful=True)
        finally:
            if locked:
                self._lock.release()

    def _stop_all(self, graceful: bool) -> None:
        workers, self._workers = self._workers, []
        if os.getpid() == self._pid:
            for worker in workers:
                if graceful and not worker.tasks:
                    worker.close()
                else:
                    worker.kill()

    def _forget_after_fork(self) -> None:
        # In a forked child the workers belong to the parent: drop them without killing them.
        self._workers = []
        self._pid = os.getpid()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ work
    def run(self, requests: list[dict[str, Any]], keys: list[str] | None = None) -> list[dict[str, Any]]:
        """Answer every request (replies in request order); safe to call from any thread (calls are serialized).

        ``keys`` (one per request) route requests with the same key to the same worker while it has work
        (an idle worker takes over others' requests), so that a worker's gold cache is reused.
        """
        if not requests:
            return []
        if keys is not None and len(keys) != len(requests):
            raise ValueError(f"got {len(keys)} keys for {len(requests)} requests")
        with self._working():
            return self._run(requests, keys)

    def start(self) -> None:
        """Start the workers now and wait until every one is ready (else the first :meth:`run` does it, and
        its first requests wait for the workers' start-up)."""
        with self._working():
            while waiting := [w for w in self._workers if not w.ready]:
                deadline = min(w.started for w in waiting) + STARTUP_TIMEOUT
                readable, _, _ = select.select(
                    [w.fd for w in waiting], [], [], max(0.0, deadline - time.monotonic())
                )
                for worker in waiting:
                    if worker.fd in readable and self._read_ready(worker) is None:
                        self._fail_startup(worker, "exited during start-up")
                    elif time.monotonic() >= worker.started + STARTUP_TIMEOUT:
                        self._fail_startup(worker, f"was not ready after {STARTUP_TIMEOUT:.0f} s")

    @contextlib.contextmanager
    def _working(self) -> Iterator[None]:
        """Hold the lock with a full set of workers (this process's own after a fork). On any error (start-up
        failure, a worker error or Ctrl-C) no worker survives: replies still in flight would be credited to
        the next call's requests."""
        with self._lock:
            if os.getpid() != self._pid:
                self._forget_after_fork()
            while len(self._workers) < self.workers:
                self._workers.append(self._start_worker())
            try:
                yield
            except BaseException:
                self._stop_all(graceful=False)
                raise

    @staticmethod
    def _read_ready(worker: _Worker) -> bool | None:
        """Read a starting worker's output: ``None`` at end of file, else whether it said it is ready."""
        messages = worker.read()
        if messages is None:
            return None
        for message in messages:
            if "ready" not in message:
                raise RuntimeError(f"math-verify worker sent an unexpected message: {message}")
            worker.ready = True
        return worker.ready

    def _fail_startup(self, worker: _Worker, reason: str) -> None:
        worker.kill()
        raise RuntimeError(
            f"a math-verify worker {reason} (exit code {worker.proc.returncode}); its error, if any, is "
            f"printed above. Check that `{sys.executable} -c 'import math_verify'` works."
        )

    def _run(self, requests: list[dict[str, Any]], keys: list[str] | None) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(requests)
        queues: list[collections.deque[int]] = [collections.deque() for _ in self._workers]
        for index in range(len(requests)):
            home = index if keys is None else zlib.crc32(keys[index].encode("utf-8", "surrogatepass"))
            queues[home % len(queues)].append(index)

        def finish(worker: _Worker, reply: dict[str, Any]) -> None:
            now = time.monotonic()
            results[worker.tasks.popleft()] = reply
            self.stats.requests += 1
            self.stats.max_request_seconds = max(self.stats.max_request_seconds, now - worker.since)
            worker.since = now

        def give_back(worker: _Worker) -> None:
            """Requeue the requests of a killed or exiting worker's batch that it had not reached."""
            slot = self._workers.index(worker)
            self.stats.requeued += len(worker.tasks)
            queues[slot].extendleft(reversed(worker.tasks))
            worker.tasks.clear()

        def retire(worker: _Worker, *, killed: bool) -> None:
            if killed:  # the request it was on is the culprit; the rest of its batch is innocent
                self.stats.killed += 1
                finish(worker, {"status": "timeout", "killed": True})
            give_back(worker)
            worker.kill() if killed else worker.close()
            self._replace(worker)

        while True:
            now = time.monotonic()
            for slot, worker in enumerate(self._workers):
                if worker.ready and not worker.tasks and any(queues):
                    batch = _next_batch(queues, slot, keys, self.max_batch)
                    worker.tasks.extend(batch)
                    try:
                        worker.send([requests[index] for index in batch])
                    except OSError:  # it exited while idle (memory recycling): replace it, retry the batch
                        retire(worker, killed=False)
                        continue
                    worker.since = now
                    self.stats.batches += 1
            if not any(queues) and all(not w.tasks for w in self._workers):
                break
            waiting = [w for w in self._workers if not w.ready or w.tasks]
            deadlines = [w.since + self.timeout if w.ready else w.started + STARTUP_TIMEOUT for w in waiting]
            wait = max(0.0, min(deadlines) - now)
            readable, _, _ = select.select([w.fd for w in waiting], [], [], wait)
            for worker in [w for w in waiting if w.fd in readable]:
                messages = worker.read()
                if messages is None:  # the worker exited
                    if not worker.ready:
                        self._fail_startup(worker, "exited during start-up")
                    # died on a request (SIGXCPU, OOM killer, crash): that request is the culprit
                    retire(worker, killed=bool(worker.tasks))
                    continue
                self._take_replies(worker, messages, finish, retire)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.tasks and now >= worker.since + self.timeout:
                    retire(worker, killed=True)
                elif not worker.ready and now >= worker.started + STARTUP_TIMEOUT:
                    self._fail_startup(worker, f"was not ready after {STARTUP_TIMEOUT:.0f} s")
        return results  # type: ignore[return-value]

    def _take_replies(self, worker: _Worker, messages: list[dict[str, Any]], finish, retire) -> None:
        for message in messages:
            if "ready" in message:
                worker.ready = True
                continue
            if not worker.tasks:
                raise RuntimeError(f"math-verify worker sent an unexpected message: {message}")
            if message.get("status") == "error":
                raise RuntimeError(f"math-verify worker failed on a request: {message.get('error')}")
            if message.get("status") == "timeout":
                self.stats.cpu_timeouts += 1
            recycle = message.pop("recycle", False)
            finish(worker, message)
            if recycle:  # it exits after this reply: its successor takes the rest of the batch
                retire(worker, killed=False)
                return


def _next_batch(
    queues: list[collections.deque[int]], slot: int, keys: list[str] | None, max_batch: int
) -> list[int]:
    """The next batch for the worker in ``slot``. From its own queue: half of what is left (at most
    ``max_batch``), so that the end of the work still spreads. An idle worker takes over the end of the longest
    queue: with keys, the requests of its last key (so that no two workers parse the same gold), else as many
    as a batch from its own queue."""
    queue = queues[slot]
    if queue:
        return [queue.popleft() for _ in range(min(max_batch, max(1, len(queue) // 2)))]
    queue = max(queues, key=len)
    stolen = [queue.pop()]
    while queue and len(stolen) < max_batch:
        if keys is None and len(stolen) >= max(1, len(queue) // 2):
            break
        if keys is not None and keys[queue[-1]] != keys[stolen[-1]]:
            break
        stolen.append(queue.pop())
    return stolen[::-1]


# ---------------------------------------------------------------------- shared pools
_LIVE_POOLS: weakref.WeakSet[VerifierPool] = weakref.WeakSet()
_SHARED: dict[PoolSettings, VerifierPool] = {}
_SHARED_LOCK = threading.Lock()


def get_pool(settings: PoolSettings | None = None) -> VerifierPool:
    """The process-wide pool for these settings (default ``PoolSettings()``; created on first use, its
    workers start lazily)."""
    settings = PoolSettings() if settings is None else settings
    with _SHARED_LOCK:
        pool = _SHARED.get(settings)
        if pool is None:
            pool = _SHARED[settings] = VerifierPool(settings)
        return pool


def _close_all() -> None:
    for pool in list(_LIVE_POOLS):
        pool.close()


def _after_fork_in_child() -> None:
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()
    for pool in list(_LIVE_POOLS):
        pool._forget_after_fork()


atexit.register(_close_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
