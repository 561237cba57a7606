"""Multi-process runs (gloo on CPU, NCCL on GPU): checks at start-up, and a clean teardown.

At start-up (:func:`check_launch`, from the config): a launcher that started several processes each of
which trains alone is an error, and ``ddp_timeout`` also bounds the gloo group that transformers creates
for ``use_cpu`` without passing the timeout on, so that a hung or stopped rank ends the job.

Teardown:

Why this exists: two-rank gloo runs used to die at exit now and then (``terminate called without an
active exception``, SIGABRT) or hang. Seen here with py-spy: the DDP ``Reducer`` inside the trainer's
wrapped model holds a reference to the ``ProcessGroupGloo``. When the trainer is garbage-collected after
``destroy_process_group`` (or at interpreter exit), the Reducer drops the *last* reference, so
``~ProcessGroupGloo`` runs inside pybind11's deallocation with the GIL held and joins gloo's worker
threads, while a worker is still destroying a finished ``AsyncAllgatherWork`` whose tensors need the GIL
to be released: a deadlock, or, during interpreter finalization, an abort.

The fix: drop every DDP wrapper while the process group is still registered (so that reference is never
the last), then destroy the group through ``torch.distributed`` (whose Python binding releases the GIL
in the destructor), while the interpreter is fully alive and after a barrier.
"""

from __future__ import annotations

import gc
import os
from datetime import timedelta
from typing import Any

import torch.distributed as dist


def release_wrapped_model(trainer: Any) -> None:
    """Drop the trainer's and accelerator's references to the distributed wrapper of the model."""
    accelerator = getattr(trainer, "accelerator", None)
    if accelerator is not None:
        accelerator.free_memory()  # clears accelerator._models / _optimizers / _schedulers / _dataloaders
    if getattr(trainer, "model_wrapped", None) is not None:
        trainer.model_wrapped = trainer.model
    gc.collect()


def shutdown_distributed(*trainers: Any) -> None:
    """Release the trainers' distributed wrappers, then destroy the process group (no-op if none)."""
    for trainer in trainers:
        release_wrapped_model(trainer)
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def check_launch(args: Any) -> None:
    """Fail when the launcher started ``WORLD_SIZE`` > 1 processes but this one trains alone (world size 1:
    each would train its own copy and write the same ``output_dir``); apply ``ddp_timeout`` to a CPU group."""
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and args.world_size == 1:
        raise ValueError(
            f"The launcher started {launched} processes (WORLD_SIZE={launched}) but this one trains alone "
            "(world size 1), so each process would train its own copy and write the same output_dir. On a "
            "machine without a GPU set use_cpu: true (the ranks then form a gloo group); on GPUs check that "
            "each process sees a GPU."
        )
    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "gloo":
        # transformers passes ddp_timeout to the process group except with use_cpu (then torch's 30 min)
        dist.distributed_c10d._set_pg_timeout(timedelta(seconds=args.ddp_timeout))
