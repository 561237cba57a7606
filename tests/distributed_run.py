"""Two-rank CPU run used by tests/test_distributed.py (launched with torchrun, gloo backend).

Each rank trains a tiny NormalizedGRPOTrainer for 2 steps per normalizer and writes what it saw to
``OUT/rank<R>.json``: world size, backend, the gathered rewards and data sources, its local advantages
and the normalizer state.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings
from pathlib import Path

import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModelForCausalLM

from bnpo_trl.distributed import release_wrapped_model, shutdown_distributed
from bnpo_trl.models import load_plain_tokenizer
from bnpo_trl.tiny_model import tiny_model_path
from tests.trainer_utils import RecordingTrainer, parity_reward, tiny_config, tiny_dataset

warnings.filterwarnings("ignore")


def main(out_dir: Path, names: list[str]) -> None:
    model_path = tiny_model_path()
    tokenizer = load_plain_tokenizer(model_path)
    report = {}
    for name in names:
        config = tiny_config(out_dir / name, advantage_normalizer=name, per_device_train_batch_size=4)
        trainer = RecordingTrainer(
            model=AutoModelForCausalLM.from_pretrained(model_path),
            reward_funcs=parity_reward,
            args=config,
            train_dataset=tiny_dataset(),
            processing_class=tokenizer,
        )
        trainer.train()
        report[name] = {
            "world_size": dist.get_world_size(),
            "backend": dist.get_backend(),
            "process_index": trainer.accelerator.process_index,
            "state": trainer.normalizer.state_dict(),
            "steps": [
                {
                    "rewards": step["rewards"].tolist(),
                    "data_sources": step["data_sources"],
                    "advantages": step["advantages"].tolist(),
                }
                for step in trainer.record
            ],
        }
    release_wrapped_model(trainer)
    report["ddp_wrappers_left"] = sum(isinstance(o, DistributedDataParallel) for o in gc.get_objects())
    rank = dist.get_rank()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(report))
    shutdown_distributed(trainer)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2].split(","))
