"""Test-only launcher of ``bnpo_trl.train`` that records, per rank, how GRPO generated its rollouts.

It wraps ``unwrap_model_for_generation`` as ``trl.trainer.grpo_trainer`` imported it and writes
``$BNPO_PROBE_DIR/rank<R>.json``: the number of times TRL entered it and, for each time, the parameter
values the model held inside it (ZeRO-3 gathers the full model there) and outside it. ``--fsdp-on-cpu``
(first argument) also applies tests/fsdp_on_cpu.py's switch.
"""

from __future__ import annotations

import contextlib
import json
import os
import runpy
import sys
from pathlib import Path

import trl.trainer.grpo_trainer as grpo

_unwrap = grpo.unwrap_model_for_generation
_calls: list[dict[str, int]] = []


def _values(model) -> int:
    return sum(p.numel() for p in model.parameters())


@contextlib.contextmanager
def _recording_unwrap(model, accelerator, *args, **kwargs):
    outside = _values(accelerator.unwrap_model(model))
    with _unwrap(model, accelerator, *args, **kwargs) as unwrapped:
        _calls.append({"inside": _values(unwrapped), "outside": outside})
        yield unwrapped
    folder = Path(os.environ["BNPO_PROBE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"rank{accelerator.process_index}.json").write_text(json.dumps(_calls))


if __name__ == "__main__":
    grpo.unwrap_model_for_generation = _recording_unwrap
    if sys.argv[1:2] == ["--fsdp-on-cpu"]:
        from accelerate.state import AcceleratorState

        from tests.fsdp_on_cpu import _init_with_fsdp_on_cpu

        AcceleratorState.__init__ = _init_with_fsdp_on_cpu
        del sys.argv[1]
    sys.argv[0] = "bnpo_trl.train"
    runpy.run_module("bnpo_trl.train", run_name="__main__", alter_sys=True)
