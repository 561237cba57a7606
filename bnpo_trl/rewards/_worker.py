"""The math-verify worker process behind :class:`bnpo_trl.rewards.pool.VerifierPool`.

The pool runs this file as a script (``python -P _worker.py CONFIG_JSON``), never as part of the package:
it imports only the standard library and math-verify, so a worker imports in about half a second, does not
import torch or the training script, and is safe to start from any thread of a multi-threaded trainer.

Protocol: one batch per line on stdin (a JSON list of requests; a lone request object is a batch of one),
one reply per request and line on the protocol pipe (the original stdout; file descriptor 1 is pointed at
stderr so that a stray ``print`` cannot corrupt it), written as soon as the request is answered, so that the
parent can time each request of a batch on its own.

- start-up: the worker writes ``{"ready": <pid>}`` once math-verify is imported and warmed up on
  :data:`WARM_UP` (sympy and math-verify build parsers and caches on first use: a fresh worker would
  otherwise spend ~0.5 s of CPU on its first few dozen answers).
- ``{"op": "gold", "gold": G}`` parses the gold answer ``G`` (raw LaTeX, no ``$`` and no ``\\boxed``):
  ``{"status": "ok" | "unparsed_gold" | "timeout"}``.
- ``{"op": "item", "gold": G, "pred": P}`` parses the prediction text ``P`` (``\\boxed{answer}`` or the
  whole completion) and calls ``verify(gold, pred)`` in that order:
  ``{"status": "correct" | "wrong" | "no_answer" | "unparsed_gold" | "timeout"}``.
- ``{"op": "sleep", "seconds": S}`` sleeps without using CPU and replies ``{"status": "ok"}``: a hang that
  no CPU budget catches, used to test the parent's wall-clock kill.

Limits, all set from CONFIG_JSON (``cpu_seconds``, ``backstop_cpu_seconds``, ``memory_mb``,
``recycle_rss_mb``):

- a CPU-time budget per request (``setitimer(ITIMER_PROF)``), which raises a ``BaseException`` subclass
  that math-verify's ``except Exception`` cannot swallow; math-verify's own ``signal.alarm`` timeouts are
  turned off (their ``alarm(0)`` clean-up would cancel any outer alarm);
- ``RLIMIT_CPU`` a few seconds above that budget for every request: the kernel kills a worker stuck in C
  code (or orphaned by a dead parent) even when no Python signal handler can run;
- ``RLIMIT_AS`` (address space) when ``memory_mb`` is set, so a ``2^{10^{10}}`` fails with ``MemoryError``
  instead of swapping the machine; a worker whose resident memory grows past ``recycle_rss_mb`` exits
  after replying (the rest of its batch unanswered: the parent re-queues it) and the pool starts a fresh one.

The parent enforces the wall-clock deadline itself (it kills and replaces a worker that does not answer).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import resource
import signal
import sys
import time
from typing import Any

#: (gold, prediction) pairs answered before ``ready``: one of each common answer form, so that their
#: first-use costs are paid at start-up rather than by the first requests.
WARM_UP = [
    ("1", r"\boxed{1}"),
    (r"\frac{3}{4}", r"\boxed{0.75}"),
    (r"2\sqrt{3}", r"\boxed{\sqrt{12}}"),
    ("[2, 5)", r"\boxed{(2,5]}"),
    ("-1, 3", r"\boxed{\{3, -1\}}"),
    ("x^2+2x+1", r"\boxed{(x+1)^2}"),
    (r"\text{(B)}", r"\boxed{B}"),
    (r"45^\circ", r"\boxed{45}"),
    (r"12\%", r"\boxed{0.12}"),
    ("y = 2x - 4", "The final answer is $y=2x-4$."),
    (r"\pi", r"\boxed{3.14}"),
    (r"\begin{pmatrix} 1 \\ 2 \end{pmatrix}", r"\boxed{\begin{pmatrix} 1 \\ 2 \end{pmatrix}}"),
    (r"x \in (0, \infty)", r"\boxed{x>0}"),
    (r"\log_2 8", r"\boxed{3}"),
]


class CpuBudgetExceeded(BaseException):
    """Raised by the SIGPROF handler; a ``BaseException`` so that math-verify does not catch it."""


_armed = False


def _on_sigprof(signum: int, frame: Any) -> None:
    global _armed
    if _armed:  # a signal that arrives after the request finished is ignored
        _armed = False
        raise CpuBudgetExceeded


def _start_budget(cpu_seconds: float, backstop_cpu_seconds: float) -> None:
    global _armed
    usage = resource.getrusage(resource.RUSAGE_SELF)
    used = usage.ru_utime + usage.ru_stime
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    limit = math.ceil(used + backstop_cpu_seconds)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (limit, hard))
    _armed = True
    signal.setitimer(signal.ITIMER_PROF, cpu_seconds)


def _stop_budget() -> None:
    global _armed
    _armed = False
    signal.setitimer(signal.ITIMER_PROF, 0)


def _set_limit(which: int, soft: int) -> None:
    """Lower a soft limit if the platform allows it (macOS, for one, rejects some address-space caps)."""
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(which, (soft, hard))


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def main() -> None:
    config = json.loads(sys.argv[1])
    cpu_seconds = float(config["cpu_seconds"])
    backstop = float(config["backstop_cpu_seconds"])
    recycle_rss_mb = config.get("recycle_rss_mb")
    cache_size = int(config.get("gold_cache_size", 4096))

    # The protocol pipe is a private copy of stdout; fd 1 then goes to stderr.
    out = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    _set_limit(resource.RLIMIT_CORE, 0)  # SIGXCPU must not leave core files behind
    if config.get("memory_mb"):
        _set_limit(resource.RLIMIT_AS, int(config["memory_mb"]) * 2**20)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    signal.signal(signal.SIGPROF, _on_sigprof)

    logging.disable(logging.CRITICAL)  # math-verify logs every failed parse at WARNING
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    # Boxed first, then answers introduced by "final answer is" / "answer:"; no unanchored guessing.
    # Default LaTeX normalization (basic LaTeX, units, malformed operators such as \dfrac12, nits).
    extraction = [
        LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False),
        ExprExtractionConfig(try_extract_without_anchor=False),
    ]

    def parse_answer(text: str) -> list[Any]:
        return parse(text, extraction_config=extraction, extraction_mode="first_match", parsing_timeout=None)

    @functools.lru_cache(maxsize=cache_size)  # a parse that runs out of budget raises: it is not cached
    def parse_gold(gold: str) -> list[Any]:
        # A dataset's gold is the answer itself: parse it as the content of a box, so that `2\sqrt{3}`,
        # `[2, 5)` or `y = 2x - 4` keep their meaning (math-verify's default `parse` reads them as 2, 5, 4).
        return parse_answer("\\boxed{" + gold + "}")

    def handle(request: dict[str, Any]) -> dict[str, Any]:
        if request["op"] == "sleep":
            time.sleep(float(request["seconds"]))
            return {"status": "ok"}
        gold = parse_gold(request["gold"])
        if not gold:
            return {"status": "unparsed_gold"}
        if request["op"] == "gold":
            return {"status": "ok"}
        pred = parse_answer(request["pred"])
        if not pred:
            return {"status": "no_answer"}
        return {"status": "correct" if verify(gold, pred, timeout_seconds=None) else "wrong"}

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        try:
            try:
                _start_budget(cpu_seconds, backstop)
                return handle(request)
            finally:
                _stop_budget()
        except CpuBudgetExceeded:
            return {"status": "timeout"}
        except MemoryError:
            return {"status": "timeout", "memory": True}
        except Exception as error:  # a bug on this side (math-verify swallows its own errors)
            return {"status": "error", "error": f"{type(error).__name__}: {error}"}

    for gold, pred in WARM_UP:
        answer({"op": "item", "gold": gold, "pred": pred})
    out.write(json.dumps({"ready": os.getpid()}).encode() + b"\n")

    for line in sys.stdin.buffer:
        batch = json.loads(line)
        for request in batch if isinstance(batch, list) else [batch]:
            reply = answer(request)
            recycle = bool(recycle_rss_mb) and _rss_mb() > recycle_rss_mb
            if recycle:
                reply["recycle"] = True
            out.write(json.dumps(reply).encode() + b"\n")
            if recycle:
                return


if __name__ == "__main__":
    main()
