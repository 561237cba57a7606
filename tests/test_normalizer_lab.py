"""The normalizer lab through the trainer on a tiny offline model (CPU): shadow normalizers, the reward log
and its replay, the zero-signal filter's loss, per-source and composed normalizers, and opo's lengths.

Every expected value is recomputed here from what the trainer recorded (gathered rewards, completion
masks), with fresh normalizers or plain tensor arithmetic, not read back from the code under test.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from bnpo_trl import cli
from bnpo_trl.normalizers import get_normalizer
from bnpo_trl.replay import replay
from bnpo_trl.reward_log import REWARD_LOG_FILE, read_reward_log
from bnpo_trl.trainer import NORMALIZER_STATE_FILE
from tests.trainer_utils import RecordingTrainer, digit_reward, parity_reward, tiny_config, tiny_dataset

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

GROUP = 4  # tiny_config's num_generations
EPS = 1e-4  # the normalizers' default eps
LOO_BATCH_STD = {"center": "loo", "scale": "batch_std"}
SHADOWS = ["group", "ebpo", LOO_BATCH_STD]
SHADOW_LABELS = ["group", "ebpo", "center=loo,scale=batch_std"]


class LabTrainer(RecordingTrainer):
    """Also records each generation's completion mask and TRL's ``num_items_in_batch`` (after our override)."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.record[-1]["completion_mask"] = out["completion_mask"].detach().clone()
        self.record[-1]["num_items_in_batch"] = int(out["num_items_in_batch"])
        return out


def make(tiny_path, tokenizer, config, reward_funcs=parity_reward, dataset=None, cls=LabTrainer):
    return cls(
        AutoModelForCausalLM.from_pretrained(tiny_path),
        reward_funcs,
        config,
        tiny_dataset() if dataset is None else dataset,
        processing_class=tokenizer,
    )


def train_entries(trainer) -> list[dict]:
    """The per-step training log entries (logging_steps=1: one per generation here)."""
    return [e for e in trainer.state.log_history if "normalizer/advantage_abs_mean" in e]


def fed(spec, record, **kwargs):
    """A fresh normalizer fed the recorded gathered rewards in order, as training feeds it."""
    norm = get_normalizer(spec, **kwargs)
    for step in record:
        extra = {"lengths": step["lengths"]} if "lengths" in step else {}
        norm(step["rewards"], GROUP, step["data_sources"], update=True, **extra)
    return norm


def as_json(value):
    return json.loads(json.dumps(value))


def pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    return ((x * y).sum() / (x.square().sum() * y.square().sum()).sqrt()).item()


def constant_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(N, 1) rewards -> (P,) True where every reward of the group is equal (no spread: group's A = 0)."""
    grouped = rewards[:, 0].view(-1, GROUP)
    return (grouped == grouped[:, :1]).all(dim=1)


# -- 1. shadows end to end ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def group_runs(tiny_path, tokenizer, tmp_path_factory):
    """The same seeded 2-step ``group`` run with and without the three shadows (checkpoint at step 2)."""
    root = tmp_path_factory.mktemp("shadows")
    common = dict(advantage_normalizer="group", save_strategy="steps", save_steps=2)
    shadowed = make(
        tiny_path, tokenizer, tiny_config(root / "shadowed", **common, shadow_normalizers=SHADOWS)
    )
    shadowed.train()
    plain = make(tiny_path, tokenizer, tiny_config(root / "plain", **common))
    plain.train()
    return shadowed, plain, root


def test_shadow_metrics_are_logged_for_each_label_and_match_a_recomputation(group_runs):
    shadowed, _, _ = group_runs
    assert list(shadowed.shadows.normalizers) == SHADOW_LABELS
    entries = train_entries(shadowed)
    assert len(entries) == len(shadowed.record) == 2
    for entry, step in zip(entries, shadowed.record, strict=True):
        for label in SHADOW_LABELS:
            for metric in ("pearson", "sign_agreement", "signal_fraction", "advantage_abs_mean"):
                assert f"shadow/{label}/{metric}" in entry, (label, metric)
        assert entry["shadow/seconds"] >= 0
        assert "shadow/ebpo/ebpo/shrinkage" in entry  # the shadow's own last_stats
        # the group shadow computes what the training normalizer computes
        assert entry["shadow/group/pearson"] == pytest.approx(1.0, abs=1e-9)
        assert entry["shadow/group/sign_agreement"] == 1.0
        # center=loo,scale=batch_std, recomputed: r_i - mean of the other G-1, over the batch's n-1 std
        r = step["rewards"][:, 0].double()
        others = (r.view(-1, GROUP).sum(dim=1, keepdim=True) - r.view(-1, GROUP)) / (GROUP - 1)
        loo = (r - others.view(-1)) / (r.std() + EPS)
        train = step["advantages"].double()
        label = "center=loo,scale=batch_std"
        assert entry[f"shadow/{label}/pearson"] == pytest.approx(pearson(loo, train), rel=1e-5)
        agree = (loo.sign() == train.sign()).double().mean().item()
        assert entry[f"shadow/{label}/sign_agreement"] == pytest.approx(agree)
        assert entry[f"shadow/{label}/signal_fraction"] == pytest.approx((loo != 0).double().mean().item())
        assert entry[f"shadow/{label}/advantage_abs_mean"] == pytest.approx(loo.abs().mean().item(), rel=1e-5)
    # parity_reward gives mixed groups here: the comparison above is not between two all-zero vectors
    assert all(step["advantages"].abs().max() > 0 for step in shadowed.record)


def test_shadow_states_in_the_checkpoint_equal_an_independent_recomputation(group_runs):
    shadowed, _, root = group_runs
    saved = json.loads((root / "shadowed" / "checkpoint-2" / NORMALIZER_STATE_FILE).read_text())
    assert set(saved["shadow_states"]) == set(SHADOW_LABELS)
    assert saved["shadow_states"]["ebpo"] == as_json(fed("ebpo", shadowed.record).state_dict())
    assert saved["shadow_states"]["ebpo"]["rewards"]["count"] == 2 * 8
    assert saved["shadow_states"] == as_json(shadowed.shadows.state_dict())
    assert saved["state"] == as_json(shadowed.normalizer.state_dict())


def test_shadows_do_not_change_training(group_runs):
    shadowed, plain, _ = group_runs
    assert len(shadowed.record) == len(plain.record) == 2
    for mine, theirs in zip(shadowed.record, plain.record, strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])
        assert torch.equal(mine["advantages"], theirs["advantages"])
    for mine, theirs in zip(shadowed.loss_advantages, plain.loss_advantages, strict=True):
        assert torch.equal(mine, theirs)
    assert not any(k.startswith("shadow/") for e in plain.state.log_history for k in e)


# -- 2. shadow state resume -----------------------------------------------------------------------------
def test_shadow_states_resume_as_an_uninterrupted_run(tiny_path, tokenizer, tmp_path):
    common = dict(
        advantage_normalizer="group",
        shadow_normalizers=["ebpo", {"name": "bnpo", "ema": 0.5}],
        save_strategy="steps",
        save_steps=2,
        max_steps=4,
    )
    straight = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight", **common))
    straight.train()
    assert list(straight.shadows.normalizers) == ["ebpo", "bnpo(ema=0.5)"]
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    at_two = json.loads((checkpoint / NORMALIZER_STATE_FILE).read_text())["shadow_states"]
    assert at_two["ebpo"] == as_json(fed("ebpo", straight.record[:2]).state_dict())
    assert at_two["bnpo(ema=0.5)"]["ema_moments"]  # bnpo with ema keeps smoothed moments

    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "resumed", **common))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.record) == 2
    for mine, theirs in zip(resumed.record, straight.record[2:], strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])  # the resumed run regenerates the same steps
    assert resumed.shadows.state_dict() == straight.shadows.state_dict()
    assert straight.shadows.state_dict()["ebpo"] == fed("ebpo", straight.record).state_dict()
    final = json.loads((tmp_path / "resumed" / "checkpoint-4" / NORMALIZER_STATE_FILE).read_text())
    assert final["shadow_states"] == as_json(straight.shadows.state_dict())


# -- 3. save_rewards and replay -------------------------------------------------------------------------
class LengthTrainer(LabTrainer):
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.record[-1]["lengths"] = out["completion_mask"].sum(dim=1).float()
        return out


def test_save_rewards_logs_the_gathered_rewards_and_replay_reproduces_training(
    tiny_path, tokenizer, tmp_path
):
    config = tiny_config(tmp_path / "run", advantage_normalizer="group", save_rewards=True, max_steps=3)
    trainer = make(tiny_path, tokenizer, config, [parity_reward, digit_reward], cls=LengthTrainer)
    trainer.train()
    path = tmp_path / "run" / REWARD_LOG_FILE
    records = read_reward_log(path)
    assert len(records) == len(trainer.record) == 3
    assert [r["step"] for r in records] == [0, 1, 2]
    for record, step in zip(records, trainer.record, strict=True):
        assert record["rewards"].shape == (8, 2)
        torch.testing.assert_close(record["rewards"], step["rewards"].float(), rtol=0, atol=0, equal_nan=True)
        assert record["group_size"] == GROUP
        assert record["data_sources"] == step["data_sources"] and set(record["data_sources"]) <= {
            "math",
            "gsm8k",
        }
        assert all(type(x) is int for x in record["lengths"])
        assert record["lengths"] == [int(x) for x in step["lengths"].tolist()]
        assert record["reward_names"] == ["parity_reward", "digit_reward"]
        assert record["reward_weights"] == [1.0, 1.0]

    out = tmp_path / "replay"
    cli.main(["replay", str(path), "--normalizers", "group,bnpo,ebpo", "--output_dir", str(out)])
    table = (out / "replay.md").read_text()
    rows = [
        line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| normalizer")
    ]
    assert [row.split("|")[1].strip() for row in rows] == ["group", "bnpo", "ebpo"]
    payload = json.loads((out / "replay.json").read_text())
    assert payload["normalizers"] == ["group", "bnpo", "ebpo"] and payload["steps"] == [0, 1, 2]
    assert (out / "replay.png").stat().st_size > 0
    assert (out / "replay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # replaying the training normalizer gives exactly the advantages training used
    trained = torch.cat([step["advantages"] for step in trainer.record])
    assert torch.equal(replay(records, ["group"]).advantages["group"], trained)
    for entry, step in zip(payload["per_step"]["group"], trainer.record, strict=True):
        assert entry["signal_fraction"] == pytest.approx((step["advantages"] != 0).float().mean().item())
        assert entry["pearson_vs_first"] == pytest.approx(1.0)
    # and an independent ebpo fed the log in order ends where the replayed one does
    ebpo = replay(records, ["ebpo"]).advantages["ebpo"]
    fresh = get_normalizer("ebpo")
    expected = torch.cat([fresh(r["rewards"], GROUP, r["data_sources"], torch.ones(2)) for r in records])
    torch.testing.assert_close(ebpo, expected, rtol=0, atol=1e-6)


# -- 4. filter_zero_signal: the loss counts the kept completions only --------------------------------------
def half_constant_reward(completions, data_source, **kwargs) -> list[float]:
    """gsm8k prompts: always 1.0 (constant groups, no signal); math prompts: parity (mixed outcomes)."""
    parity = parity_reward(completions)
    return [1.0 if s == "gsm8k" else p for s, p in zip(data_source, parity, strict=True)]


class LossCheckTrainer(LabTrainer):
    """At every loss call, also computes TRL's loss on a batch of the kept rows alone (num_items_in_batch = their
    token count) and both losses' gradients, at the same parameters."""

    def __init__(self, *args, **kwargs):
        self.checks: list[dict] = []
        super().__init__(*args, **kwargs)

    def _compute_loss(self, model, inputs):
        loss = super()._compute_loss(model, inputs)
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, retain_graph=True)
        mask = inputs["completion_mask"]
        kept = mask.sum(dim=1) > 0
        rows = mask.shape[0]
        kept_inputs = {
            k: v[kept] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == rows else v
            for k, v in inputs.items()
        }
        kept_inputs["num_items_in_batch"] = mask[kept].sum()
        if kept.any():
            kept_loss = super()._compute_loss(model, kept_inputs)
            kept_grads = torch.autograd.grad(kept_loss, params)
        else:  # every group filtered: an empty batch has no loss (TRL cannot even run it)
            kept_loss, kept_grads = torch.zeros(()), [torch.zeros_like(p) for p in params]
        self.checks.append(
            {
                "loss": loss.detach(),
                "kept_loss": kept_loss.detach(),
                "grads": [g.detach() for g in grads],
                "kept_grads": [g.detach() for g in kept_grads],
                "advantages": inputs["advantages"].detach().clone(),
                "mask": mask.detach().clone(),
                "num_items_in_batch": int(inputs["num_items_in_batch"]),
            }
        )
        return loss


def test_zero_signal_filter_gives_the_loss_of_the_kept_rows_alone(tiny_path, tokenizer, tmp_path):
    common = dict(advantage_normalizer="group", max_steps=3, num_iterations=1, beta=0.0)
    config = tiny_config(tmp_path / "filtered", **common, filter_zero_signal=True)
    assert config.loss_type == "dapo"
    trainer = make(tiny_path, tokenizer, config, half_constant_reward, cls=LossCheckTrainer)
    trainer.train()
    assert len(trainer.checks) == len(trainer.record) == 3  # one generation = one micro-batch per step

    fractions = [e["normalizer/filtered_fraction"] for e in train_entries(trainer)]
    expected_fractions = [constant_groups(s["rewards"]).float().mean().item() for s in trainer.record]
    assert fractions == pytest.approx(expected_fractions)
    assert any(0 < f < 1 for f in expected_fractions)  # a generation with groups both filtered and kept

    for step in trainer.record:  # before TRL shuffles the rows: whole groups masked out, the count recounted
        dropped = constant_groups(step["rewards"]).repeat_interleave(GROUP)
        assert torch.equal(step["advantages"][dropped], torch.zeros(int(dropped.sum())))
        row_tokens = step["completion_mask"].sum(dim=1)
        assert (row_tokens[dropped] == 0).all() and (row_tokens[~dropped] > 0).all()
        assert step["num_items_in_batch"] == int(row_tokens.sum())

    filtered_somewhere = False
    for check in trainer.checks:
        kept = check["mask"].sum(dim=1) > 0
        assert torch.equal(kept, check["advantages"] != 0)  # the masked rows are the zero-advantage ones
        kept_tokens = int(check["mask"].sum())
        assert check["num_items_in_batch"] == kept_tokens
        filtered_somewhere |= bool((~kept).any())
        # at num_iterations=1, beta=0 the ratio is 1 at value: per-token loss -A, divided by the kept tokens
        a, tokens = check["advantages"].double(), check["mask"].sum(dim=1).double()
        by_hand = -(a * tokens).sum().item() / max(kept_tokens, 1)  # TRL clamps the count to >= 1
        assert check["loss"].item() == pytest.approx(by_hand, abs=1e-6)
        torch.testing.assert_close(check["loss"], check["kept_loss"], rtol=0, atol=1e-6)
        assert any(g.abs().max() > 0 for g in check["grads"]) == bool(kept.any())
        for g, kept_g in zip(check["grads"], check["kept_grads"], strict=True):
            torch.testing.assert_close(g, kept_g, rtol=1e-5, atol=1e-7)
    assert filtered_somewhere

    # the same seeded run without the filter: the same rewards, every row keeps its mask and counts
    plain = make(tiny_path, tokenizer, tiny_config(tmp_path / "plain", **common), half_constant_reward)
    plain.train()
    for mine, theirs in zip(plain.record, trainer.record, strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])
        assert (mine["completion_mask"].sum(dim=1) > 0).all()
        assert mine["num_items_in_batch"] == int(mine["completion_mask"].sum())
    assert not any("normalizer/filtered_fraction" in e for e in plain.state.log_history)


def test_zero_signal_filter_refuses_a_sequence_mean_loss(tmp_path):
    with pytest.raises(ValueError, match="dapo"):
        tiny_config(tmp_path, filter_zero_signal=True, loss_type="grpo")
    with pytest.raises(ValueError, match="dapo"):
        tiny_config(
            tmp_path,
            advantage_normalizer={
                "center": "group_mean",
                "scale": "group_std",
                "post": ["filter_zero_signal"],
            },
            loss_type="grpo",
        )


# -- 5. per-source statistics through the trainer -------------------------------------------------------
def test_per_source_ebpo_keeps_a_state_per_source_and_resumes_identically(tiny_path, tokenizer, tmp_path):
    common = dict(
        advantage_normalizer="ebpo",
        normalizer_kwargs={"per_source": True},
        save_strategy="steps",
        save_steps=2,
        max_steps=4,
    )
    straight = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight", **common))
    straight.train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    saved = json.loads((checkpoint / NORMALIZER_STATE_FILE).read_text())
    assert set(saved["state"]["by_source"]) == {"math", "gsm8k"}
    assert saved["state"] == as_json(fed("ebpo", straight.record[:2], per_source=True).state_dict())
    seen = {s: 0 for s in ("math", "gsm8k")}
    for step in straight.record[:2]:
        for source in step["data_sources"]:
            seen[source] += 1
    assert {s: v["rewards"]["count"] for s, v in saved["state"]["by_source"].items()} == seen

    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "resumed", **common))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.record) == 2
    assert resumed.normalizer.state_dict() == straight.normalizer.state_dict()
    for mine, theirs in zip(resumed.record, straight.record[2:], strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])
        torch.testing.assert_close(mine["advantages"], theirs["advantages"], rtol=0, atol=1e-6)


def test_per_source_without_the_data_source_column_is_a_clear_error(tiny_path, tokenizer, tmp_path):
    config = tiny_config(tmp_path, advantage_normalizer="ebpo", normalizer_kwargs={"per_source": True})
    trainer = make(tiny_path, tokenizer, config, dataset=tiny_dataset(with_source=False))
    with pytest.raises(ValueError, match="data_source_column"):
        trainer.train()


# -- 6. composed normalizers ----------------------------------------------------------------------------
def test_composed_normalizer_trains_saves_and_resumes_with_identical_state(tiny_path, tokenizer, tmp_path):
    spec = {"center": "ebpo", "scale": "bnpo"}
    common = dict(advantage_normalizer=spec, save_strategy="steps", save_steps=2, max_steps=4)
    straight = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight", **common))
    straight.train()
    checkpoint = tmp_path / "straight" / "checkpoint-2"
    saved = json.loads((checkpoint / NORMALIZER_STATE_FILE).read_text())
    assert saved["normalizer"] == spec
    # the trainer hands bnpo's scale the reward's range: parity_reward declares none (running min-max)
    independent = fed(spec, straight.record[:2], reward_range=[None])
    assert saved["state"] == as_json(independent.state_dict())
    assert saved["state"]["combined"]["center"]["rewards"]["count"] == 2 * 8

    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "resumed", **common))
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert len(resumed.record) == 2
    assert resumed.normalizer.state_dict() == straight.normalizer.state_dict()
    for mine, theirs in zip(resumed.record, straight.record[2:], strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])
        torch.testing.assert_close(mine["advantages"], theirs["advantages"], rtol=0, atol=1e-6)


def test_composed_group_mean_over_group_std_trains_as_group(group_runs, tiny_path, tokenizer, tmp_path):
    _, plain, _ = group_runs  # the seeded 2-step advantage_normalizer="group" run
    spec = {"center": "group_mean", "scale": "group_std"}
    config = tiny_config(tmp_path, advantage_normalizer=spec, save_strategy="steps", save_steps=2)
    composed = make(tiny_path, tokenizer, config)
    composed.train()
    assert len(composed.record) == len(plain.record) == 2
    for mine, theirs in zip(composed.record, plain.record, strict=True):
        assert torch.equal(mine["rewards"], theirs["rewards"])
        torch.testing.assert_close(mine["advantages"], theirs["advantages"], rtol=0, atol=1e-6)
    for mine, theirs in zip(composed.loss_advantages, plain.loss_advantages, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-6)


# -- 7. opo gets the completion lengths -----------------------------------------------------------------
def test_opo_receives_the_completion_lengths(tiny_path, tokenizer, tmp_path):
    trainer = make(tiny_path, tokenizer, tiny_config(tmp_path, advantage_normalizer="opo"), cls=LengthTrainer)
    trainer.train()
    entries = train_entries(trainer)
    assert len(entries) == 2 and all(e["normalizer/opo/no_lengths"] == 0 for e in entries)
    for step in trainer.record:
        r, lengths = step["rewards"][:, 0].double().view(-1, GROUP), step["lengths"].double().view(-1, GROUP)
        baseline = (lengths * r).sum(dim=1, keepdim=True) / lengths.sum(dim=1, keepdim=True)
        expected = (r - baseline).view(-1)
        torch.testing.assert_close(step["advantages"].double(), expected, rtol=0, atol=1e-6)
        assert not math.isnan(step["advantages"].sum().item())
