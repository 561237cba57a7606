"""The rewards plugged into TRL's GRPOTrainer by name: a 2-step run of a tiny offline model on CPU."""

from __future__ import annotations

import pytest

from bnpo_trl.rewards import accuracy, get_reward_funcs
from tests.trainer_utils import tiny_grpo_kwargs


async def async_accuracy(completions, **kwargs):
    """An `async def` reward: TRL 1.16 runs it on a daemon thread, where math-verify's SIGALRM would fail."""
    return accuracy(completions, timeout=3.0, **kwargs)


@pytest.mark.slow
def test_two_step_grpo_run_with_rewards_by_name(tmp_path) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    from bnpo_trl.models import load_plain_tokenizer
    from bnpo_trl.tiny_model import tiny_model_path

    path = tiny_model_path()
    rows = [
        {
            "prompt": [{"role": "user", "content": f"What is {a} + {a + 1}? Put the answer in \\boxed{{}}."}],
            "answer": str(2 * a + 1),
            "data_source": "gsm8k" if a % 2 else "math",
        }
        for a in range(10, 18)
    ]
    spec = [
        "accuracy",
        "boxed_format",
        {"name": "overlong", "max_length": 8, "cache_length": 4},
        {"name": "per_source", "mapping": {"gsm8k*": "gsm8k", "*": {"name": "accuracy", "timeout": 3.0}}},
    ]
    reward_funcs = [*get_reward_funcs(spec), async_accuracy]
    config = GRPOConfig(**tiny_grpo_kwargs(tmp_path, max_completion_length=8))
    trainer = GRPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        processing_class=load_plain_tokenizer(path),
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=Dataset.from_list(rows),
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    assert len(logs) == 2
    for entry in logs:
        for name in ["accuracy", "boxed_format", "overlong", "per_source", "async_accuracy"]:
            assert f"rewards/{name}/mean" in entry, sorted(entry)
        assert entry["rewards/accuracy/timeouts"] == 0
        assert entry["rewards/accuracy/unparsed_gold"] == 0
        # an untrained model's 8 tokens hold no complete box: every completion is counted as "no answer"
        assert 0 <= entry["rewards/accuracy/no_answer"] <= 8
        assert "rewards/per_source/unmatched" in entry
        # the same verdicts from the async reward, which TRL ran on its event-loop thread
        assert entry["rewards/async_accuracy/mean"] == entry["rewards/accuracy/mean"]
