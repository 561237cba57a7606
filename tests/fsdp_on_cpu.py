"""Test-only: run ``bnpo_trl.train`` with accelerate's FSDP2 on CPU ranks (gloo).

accelerate 1.16 turns an FSDP launch into ``DistributedType.FSDP`` only from GPU-type modes (the
``MULTI_GPU``/``MULTI_XPU``/... branch of ``AcceleratorState.__init__``); on ``MULTI_CPU`` the
``fsdp_plugin`` it built from the config is dropped and the run is DDP. torch's ``fully_shard`` itself works
on CPU with gloo, so this applies accelerate's own switch on ``MULTI_CPU`` too, then runs the train CLI:

    accelerate launch --config_file bnpo_trl/configs/accelerate/cpu/fsdp2.yaml tests/fsdp_on_cpu.py --config R

Not a supported product path: without this file the same launch is an ``EngineMismatchError``.
"""

from __future__ import annotations

import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_accelerate_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _accelerate_init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = DistributedType.FSDP


if __name__ == "__main__":
    AcceleratorState.__init__ = _init_with_fsdp_on_cpu
    sys.argv[0] = "bnpo_trl.train"
    runpy.run_module("bnpo_trl.train", run_name="__main__", alter_sys=True)
