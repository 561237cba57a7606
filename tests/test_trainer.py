"""NormalizedGRPOTrainer on a tiny offline model (CPU): the override fires, trains on our advantages,
keeps its state across resume, and handles bad input."""

from __future__ import annotations

import json
import logging
import os

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl import GRPOTrainer

from bnpo_trl import NormalizedGRPOConfig, NormalizedGRPOTrainer
from bnpo_trl.normalizers import available_normalizers, get_normalizer
from bnpo_trl.trainer import NORMALIZER_STATE_FILE
from tests.trainer_utils import (
    RecordingTrainer,
    digit_reward,
    parity_reward,
    sometimes_none_reward,
    tiny_config,
    tiny_dataset,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def model_path(tiny_path):
    return tiny_path


def make_trainer(model_path, tokenizer, config, reward_funcs=parity_reward, dataset=None, **kwargs):
    return RecordingTrainer(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        reward_funcs=reward_funcs,
        args=config,
        train_dataset=dataset if dataset is not None else tiny_dataset(),
        processing_class=tokenizer,
        **kwargs,
    )


def replay(
    name: str, record: list[dict], group_size: int, reward_weights=None, **kwargs
) -> list[torch.Tensor]:
    """The advantages an independent normalizer instance gives on the captured rewards, step by step."""
    norm = get_normalizer(name, **kwargs)
    return [
        norm(r["rewards"], group_size, r["data_sources"], reward_weights, update=r["mode"] == "train")
        for r in record
    ]


@pytest.mark.parametrize("name", available_normalizers(include_aliases=False))
def test_two_step_run_trains_on_normalizer_advantages(name, model_path, tokenizer, tmp_path):
    trainer = make_trainer(model_path, tokenizer, tiny_config(tmp_path, advantage_normalizer=name))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.train()

    assert len(trainer.record) == 2
    changed = any(
        not torch.equal(a, b.detach()) for a, b in zip(before, trainer.model.parameters(), strict=True)
    )
    assert changed, "parameters did not change"
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert any(
        k.startswith(f"normalizer/{name}/") or k.startswith("normalizer/median") for k in logged
    ) or name in (
        "group",
        "batch",
        "none",
        "rloo",
        "reinforce_pp",
    )
    assert "normalizer/advantage_abs_mean" in logged
    assert {"rewards_by_source/math/mean", "rewards_by_source/gsm8k/mean"} <= logged

    expected = replay(name, trainer.record, group_size=4)
    for step, exp in zip(trainer.record, expected, strict=True):
        torch.testing.assert_close(step["advantages"], exp, rtol=0, atol=1e-6)
    # The loss saw exactly these advantages (TRL shuffles rows before the loss: compare sorted values).
    trained = torch.cat(trainer.loss_advantages).sort().values
    returned = torch.cat([r["advantages"] for r in trainer.record]).sort().values
    torch.testing.assert_close(trained, returned, rtol=0, atol=0)
    # TRL's completions table shows our advantages, not TRL's own.
    assert list(trainer._logs["advantages"]) == pytest.approx(trainer.record[-1]["advantages"].tolist())


def test_group_normalizer_matches_trl_grpo(model_path, tokenizer, tmp_path):
    """Same seed, same rewards: 'group' reproduces TRL's scale_rewards='group' advantages exactly."""
    ours = make_trainer(model_path, tokenizer, tiny_config(tmp_path / "a", advantage_normalizer="group"))
    ours.train()

    recorded = []

    class TRLRecorder(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            out = super()._generate_and_score_completions(inputs)
            recorded.append(out["advantages"].clone())
            return out

    config = tiny_config(tmp_path / "b")
    trl_trainer = TRLRecorder(
        model=AutoModelForCausalLM.from_pretrained(model_path),
        reward_funcs=parity_reward,
        args=config,
        train_dataset=tiny_dataset(),
        processing_class=tokenizer,
    )
    trl_trainer.train()
    for mine, theirs in zip(ours.record, recorded, strict=True):
        torch.testing.assert_close(mine["advantages"], theirs, rtol=0, atol=1e-6)


def test_two_reward_functions_with_weights_and_decomposition(model_path, tokenizer, tmp_path):
    config = tiny_config(tmp_path, advantage_normalizer="bnpo", reward_weights=[2.0, 1.0])
    trainer = make_trainer(model_path, tokenizer, config, reward_funcs=[parity_reward, digit_reward])
    trainer.train()
    assert trainer.record[0]["rewards"].shape == (8, 2)
    expected = replay("bnpo", trainer.record, 4, reward_weights=torch.tensor([2.0, 1.0]))
    for step, exp in zip(trainer.record, expected, strict=True):
        torch.testing.assert_close(step["advantages"], exp, rtol=0, atol=1e-6)
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"normalizer/bnpo/alpha/0", "normalizer/bnpo/alpha/1"} <= logged


@pytest.mark.parametrize("name", ["ebpo", "median"])
def test_resume_gives_identical_state_and_advantages(name, model_path, tokenizer, tmp_path):
    common = dict(advantage_normalizer=name, save_strategy="steps", save_steps=2)
    straight = make_trainer(model_path, tokenizer, tiny_config(tmp_path / "straight", **common, max_steps=4))
    straight.train()

    first = make_trainer(model_path, tokenizer, tiny_config(tmp_path / "resumed", **common, max_steps=2))
    first.train()
    checkpoint = tmp_path / "resumed" / "checkpoint-2"
    saved = json.loads((checkpoint / NORMALIZER_STATE_FILE).read_text())
    assert saved["normalizer"] == name and saved["state"] == first.normalizer.state_dict()

    resumed = make_trainer(model_path, tokenizer, tiny_config(tmp_path / "resumed", **common, max_steps=4))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.record) == 2
    assert resumed.normalizer.state_dict() == straight.normalizer.state_dict()
    for mine, theirs in zip(resumed.record, straight.record[2:], strict=True):
        torch.testing.assert_close(mine["rewards"], theirs["rewards"])
        torch.testing.assert_close(mine["advantages"], theirs["advantages"], rtol=0, atol=1e-6)


def test_resume_without_state_is_an_error_unless_fresh_state_is_allowed(
    model_path, tokenizer, tmp_path, caplog
):
    config = tiny_config(tmp_path, advantage_normalizer="ebpo", save_strategy="steps", save_steps=2)
    make_trainer(model_path, tokenizer, config).train()
    checkpoint = tmp_path / "checkpoint-2"
    os.remove(checkpoint / NORMALIZER_STATE_FILE)
    trainer = make_trainer(
        model_path, tokenizer, tiny_config(tmp_path, advantage_normalizer="ebpo", max_steps=3)
    )
    with pytest.raises(ValueError, match=r"checkpoint-2.*allow_fresh_normalizer_state"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    fresh = tiny_config(tmp_path, advantage_normalizer="ebpo", max_steps=3, allow_fresh_normalizer_state=True)
    trainer = make_trainer(model_path, tokenizer, fresh)
    with caplog.at_level(logging.WARNING, logger="bnpo_trl.trainer"):
        trainer.train(resume_from_checkpoint=str(checkpoint))
    assert NORMALIZER_STATE_FILE in caplog.text
    assert (
        trainer.normalizer.state_dict()["rewards"]["count"] == 8
    )  # one step of 8 rewards after a fresh start


def test_lora(model_path, tokenizer, tmp_path):
    from peft import LoraConfig

    peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = make_trainer(model_path, tokenizer, tiny_config(tmp_path), peft_config=peft_config)
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    assert lora_before
    assert any(not torch.equal(p, dict(trainer.model.named_parameters())[n]) for n, p in lora_before.items())
    assert len(trainer.record) == 2


def test_missing_data_source_column_with_median_fails_at_first_step(model_path, tokenizer, tmp_path):
    config = tiny_config(tmp_path, advantage_normalizer="median")
    trainer = make_trainer(model_path, tokenizer, config, dataset=tiny_dataset(with_source=False))
    with pytest.raises(ValueError, match="data_source_column"):
        trainer.train()


def test_none_rewards_get_zero_advantage(model_path, tokenizer, tmp_path):
    trainer = make_trainer(model_path, tokenizer, tiny_config(tmp_path), reward_funcs=sometimes_none_reward)
    trainer.train()
    for step in trainer.record:
        unscored = torch.isnan(step["rewards"][:, 0])
        assert unscored.any()
        assert torch.isfinite(step["advantages"]).all()
        assert (step["advantages"][unscored] == 0).all()


def test_override_fails_loudly_when_trl_stops_calling_calculate_rewards(
    model_path, tokenizer, tmp_path, monkeypatch
):
    """Simulates a TRL upgrade whose _generate_and_score_completions no longer calls _calculate_rewards."""
    trainer = make_trainer(model_path, tokenizer, tiny_config(tmp_path))
    monkeypatch.setattr(
        GRPOTrainer, "_generate_and_score_completions", lambda self, inputs: {"advantages": None}
    )
    with pytest.raises(RuntimeError, match="did not call _calculate_rewards"):
        trainer._generate_and_score_completions([])


def test_trl_still_has_the_methods_we_override():
    for name in ("_calculate_rewards", "_generate_and_score_completions", "_load_optimizer_and_scheduler"):
        assert name in vars(GRPOTrainer), (
            f"trl.GRPOTrainer no longer defines {name}: re-check bnpo_trl/trainer.py"
        )


def test_model_card_names_normalizer(model_path, tokenizer, tmp_path):
    config = tiny_config(tmp_path, advantage_normalizer="bnpo", normalizer_kwargs='{"ema": 0.5}')
    trainer = make_trainer(model_path, tokenizer, config)
    trainer.create_model_card(model_name="tiny-bnpo")
    card = (tmp_path / "README.md").read_text()
    assert "bnpo-trl" in card and "- bnpo" in card
    assert '`{"ema": 0.5}`' in card and "`bnpo` normalizer" in card
    assert {"bnpo-trl", "bnpo"} <= set(trainer.model.model_tags)


def test_config_parses_json_kwargs_and_rejects_unknown_normalizer(tmp_path, caplog):
    config = tiny_config(tmp_path, advantage_normalizer="median", normalizer_kwargs='{"window": 3}')
    assert config.normalizer_kwargs == {"window": 3}
    with pytest.raises(ValueError, match=r"Available: .*bnpo"):
        tiny_config(tmp_path, advantage_normalizer="nope")
    with caplog.at_level(logging.INFO, logger="bnpo_trl.config"):
        tiny_config(tmp_path, advantage_normalizer="group", loss_type="bnpo")
    assert "token-level loss aggregation" in caplog.text


def test_plain_grpo_config_is_accepted(model_path, tokenizer, tmp_path):
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True, report_to="none")
    trainer = NormalizedGRPOTrainer(
        model=model_path,
        reward_funcs=parity_reward,
        args=args,
        train_dataset=tiny_dataset(),
        processing_class=tokenizer,
    )
    assert trainer.normalizer_name == "bnpo"
    assert isinstance(NormalizedGRPOConfig(output_dir=str(tmp_path), bf16=False, use_cpu=True), GRPOConfig)
