"""Two-rank CPU run used by tests/test_distributed.py (launched with torchrun, gloo backend).

Each rank trains a tiny NormalizedGRPOTrainer for 2 steps per run and writes what it saw to
``OUT/rank<R>.json``: world size, backend, the gathered rewards and data sources, its local advantages and
completion lengths, the normalizer state and the shadow normalizers' states. A plain name is a run with that
``advantage_normalizer``; :data:`RUNS` names runs with more options (shadows, the reward log, a checkpoint).
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

#: Runs with options beyond the normalizer's name (test_distributed.py recomputes them in one process).
RUNS = {
    "lab": dict(
        advantage_normalizer="ebpo",
        normalizer_kwargs={"per_source": True},
        shadow_normalizers=["ebpo", "group", {"name": "bnpo", "per_source": True}],
        save_rewards=True,
        save_strategy="steps",
        save_steps=2,
    ),
}


class LengthRecordingTrainer(RecordingTrainer):
    """Also records this rank's completion lengths (the loss mask's token counts) per generation."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.record[-1]["lengths"] = out["completion_mask"].sum(dim=1).tolist()
        return out


def main(out_dir: Path, names: list[str]) -> None:
    model_path = tiny_model_path()
    tokenizer = load_plain_tokenizer(model_path)
    report = {}
    for name in names:
        options = RUNS.get(name, {"advantage_normalizer": name})
        config = tiny_config(out_dir / name, **options, per_device_train_batch_size=4)
        trainer = LengthRecordingTrainer(
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
            "shadow_states": trainer.shadows.state_dict(),
            "steps": [
                {
                    "rewards": step["rewards"].tolist(),
                    "data_sources": step["data_sources"],
                    "advantages": step["advantages"].tolist(),
                    "lengths": step["lengths"],
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
