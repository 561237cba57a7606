"""Clean teardown of multi-process runs (gloo on CPU, NCCL on GPU).

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
