"""The cluster path inside one process: a drop-in constructor, declared reward ranges, checkpoints that are
complete or skipped, resume strings, auto-resume, unaligned saves, corrupt state, Hub copies, TRL options."""

from __future__ import annotations

import concurrent.futures
import inspect
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer
from transformers import trainer as hf_trainer_module
from trl import GRPOTrainer

from bnpo_trl import NormalizedGRPOTrainer
from bnpo_trl.checkpoints import NORMALIZER_STATE_FILE, complete_checkpoints, resolve_resume
from bnpo_trl.rewards import get_reward_funcs
from bnpo_trl.trainer import model_card_section
from tests.trainer_utils import RecordingTrainer, parity_reward, tiny_config, tiny_dataset

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")


def make(tiny_path, tokenizer, config, reward_funcs=parity_reward, cls=RecordingTrainer):
    return cls(
        AutoModelForCausalLM.from_pretrained(tiny_path),
        reward_funcs,
        config,
        tiny_dataset(),
        processing_class=tokenizer,
    )


def test_constructor_takes_exactly_trl_parameters():
    ours = inspect.signature(NormalizedGRPOTrainer.__init__).parameters
    theirs = inspect.signature(GRPOTrainer.__init__).parameters
    assert list(ours) == list(theirs)
    assert [p.default for p in ours.values()] == [p.default for p in theirs.values()]


def length_reward(completions, **kwargs) -> list[float]:
    """Unbounded, like a reward model or a length reward: 12.0 per character minus 40."""
    return [12.0 * len(c[0]["content"] if isinstance(c, list) else c) - 40.0 for c in completions]


def test_default_config_trains_with_unbounded_and_negative_rewards(tiny_path, tokenizer, tmp_path, caplog):
    repetition = get_reward_funcs([{"name": "repetition", "ngram_size": 1}])[0]
    with caplog.at_level(logging.WARNING, logger="bnpo_trl.trainer"):
        trainer = make(
            tiny_path, tokenizer, tiny_config(tmp_path), [length_reward, parity_reward, repetition]
        )
    assert trainer.normalizer_name == "bnpo"
    assert trainer.normalizer.ranges == [None, None, (-1.0, 0.0)]  # repetition declares (max_penalty, 0)
    assert (
        "length_reward" in caplog.text and "parity_reward" in caplog.text and "repetition" not in caplog.text
    )
    trainer.train()
    assert all(torch.isfinite(r["advantages"]).all() for r in trainer.record)
    logged = [e for e in trainer.state.log_history if "normalizer/bnpo/auto_range_columns" in e]
    assert logged and logged[0]["normalizer/bnpo/auto_range_columns"] == 2
    lo, hi = trainer.normalizer.state_dict()["seen_range"]["col0"]
    seen = torch.cat([r["rewards"][:, 0] for r in trainer.record])
    assert (lo, hi) == (min(0.0, seen.min().item()), max(1.0, seen.max().item())) and hi > 1


def test_declared_ranges_are_handed_to_bnpo_and_explicit_ones_win(tiny_path, tokenizer, tmp_path):
    funcs = get_reward_funcs(["boxed_format", {"name": "overlong", "max_length": 6}])
    trainer = make(tiny_path, tokenizer, tiny_config(tmp_path), funcs)
    assert trainer.normalizer.ranges == [(0.0, 1.0), (-1.0, 0.0)]
    explicit = tiny_config(tmp_path, normalizer_kwargs={"reward_range": [[0, 1], [-2, 0]]})
    assert make(tiny_path, tokenizer, explicit, funcs).normalizer.ranges == [(0.0, 1.0), (-2.0, 0.0)]


def test_bad_normalizer_kwargs_fail_when_the_config_is_built(tmp_path):
    with pytest.raises(ValueError, match="does not accept"):
        tiny_config(tmp_path, advantage_normalizer="ebpo", normalizer_kwargs={"windw": 3})


@pytest.mark.parametrize(
    "option, value, normalizer",
    [("scale_rewards", "batch", "bnpo"), ("multi_objective_aggregation", "normalize_then_sum", "group")],
)
def test_ignored_trl_options_warn_with_the_replacement(
    option, value, normalizer, tiny_path, tokenizer, tmp_path, caplog
):
    config = tiny_config(tmp_path, advantage_normalizer=normalizer, **{option: value})
    with caplog.at_level(logging.WARNING, logger="bnpo_trl.trainer"):
        make(tiny_path, tokenizer, config)
    assert f"{option}={value!r} is ignored" in caplog.text and "advantage_normalizer:" in caplog.text


def test_normalize_then_sum_maps_onto_gdpo_and_is_not_ignored(tiny_path, tokenizer, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        config = tiny_config(tmp_path, multi_objective_aggregation="normalize_then_sum")
        trainer = make(tiny_path, tokenizer, config)
    assert config.advantage_normalizer == "gdpo" and trainer.normalizer.name == "gdpo"
    assert "maps onto advantage_normalizer='gdpo'" in caplog.text and "is ignored" not in caplog.text


def test_zero_signal_fraction_counts_groups_without_advantage(tiny_path, tokenizer, tmp_path):
    def by_source(completions, data_source, **kwargs):  # constant inside each group: no spread anywhere
        return [float(s == "math") for s in data_source]

    for name in ("group", "ebpo"):
        config = tiny_config(tmp_path / name, advantage_normalizer=name, max_steps=3)
        trainer = make(tiny_path, tokenizer, config, by_source)
        trainer.train()
        logged = [e for e in trainer.state.log_history if "normalizer/zero_signal_fraction" in e]
        assert [e["frac_reward_zero_std"] for e in logged] == [1.0] * 3  # TRL's metric: 'no signal' always
        fractions = [e["normalizer/zero_signal_fraction"] for e in logged]
        if name == "group":
            assert fractions == [1.0] * 3
        else:  # EBPO's shrunk baseline gives groups a signal once the prior differs from their mean
            assert min(fractions) < 1.0


# -- checkpoints ---------------------------------------------------------------------------------------
SAVE = dict(advantage_normalizer="ebpo", save_strategy="steps", save_steps=1)


def counts(trainer) -> int:
    return trainer.normalizer.state_dict()["rewards"]["count"]


class Injected(Exception):
    pass


#: The points of transformers' checkpoint sequence (``Trainer._save_checkpoint``), in order.
SAVE_SEQUENCE = [
    ("bnpo_trl.trainer.write_normalizer_state", "module"),
    ("_save_optimizer_and_scheduler", "method"),
    ("_save_rng_state", "method"),
    ("transformers.trainer_callback.TrainerState.save_to_json", "module"),
    ("_push_from_checkpoint", "method"),
    ("transformers.trainer.rotate_checkpoints", "module"),
]


@pytest.mark.parametrize("point", range(len(SAVE_SEQUENCE)), ids=[p for p, _ in SAVE_SEQUENCE])
def test_a_crash_anywhere_in_the_save_leaves_a_complete_checkpoint_with_state(
    point, tiny_path, tokenizer, tmp_path, monkeypatch
):
    config = tiny_config(tmp_path, **SAVE, save_total_limit=1, max_steps=2)
    trainer = make(tiny_path, tokenizer, config)
    target, kind = SAVE_SEQUENCE[point]

    def crash_at_step_2(original):
        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if trainer.state.global_step == 2:
                raise Injected(target)  # after this file was written: the process dies here
            return result

        return wrapper

    if kind == "method":
        if target == "_push_from_checkpoint":
            config.push_to_hub = True  # reached only with a push; stub it (no network)
            monkeypatch.setattr(trainer, "hub_model_id", "me/x", raising=False)
            monkeypatch.setattr(trainer, "push_in_progress", None, raising=False)
            monkeypatch.setattr(Trainer, "_push_from_checkpoint", lambda self, folder: None)
        monkeypatch.setattr(trainer, target, crash_at_step_2(getattr(trainer, target)))
    else:
        module, _, name = target.rpartition(".")
        owner = (
            hf_trainer_module.TrainerState
            if module.endswith("TrainerState")
            else __import__(module, fromlist=[name])
        )
        monkeypatch.setattr(owner, name, crash_at_step_2(getattr(owner, name)))
    with pytest.raises(Injected):
        trainer.train()
    newest = complete_checkpoints(tmp_path, needs_state=True)[0]
    assert (newest / NORMALIZER_STATE_FILE).exists()
    saved = json.loads((newest / NORMALIZER_STATE_FILE).read_text())
    # trainer_state.json marks a checkpoint complete: a crash after it leaves step 2, before it step 1
    expected_step = 2 if point >= 3 else 1
    assert newest.name == f"checkpoint-{expected_step}" and saved["global_step"] == expected_step
    assert resolve_resume("true", tmp_path, needs_state=True) == str(newest)


def test_incomplete_newest_checkpoint_is_skipped_with_a_warning(tiny_path, tokenizer, tmp_path, caplog):
    make(tiny_path, tokenizer, tiny_config(tmp_path, **SAVE, max_steps=2)).train()
    (tmp_path / "checkpoint-2" / "trainer_state.json").write_text('{"trunc')
    with caplog.at_level(logging.WARNING, logger="bnpo_trl.checkpoints"):
        assert resolve_resume("last", tmp_path, needs_state=True) == str(tmp_path / "checkpoint-1")
    assert "checkpoint-2" in caplog.text
    with pytest.raises(ValueError, match=r"checkpoint-2.*trainer_state.json"):
        resolve_resume(str(tmp_path / "checkpoint-2"), tmp_path, needs_state=True)


@pytest.mark.parametrize("value", ["true", True, "last"])
def test_resume_true_from_the_command_line_or_yaml_resumes_the_last_checkpoint(
    value, tiny_path, tokenizer, tmp_path
):
    straight = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight", **SAVE, max_steps=3))
    straight.train()
    make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **SAVE, max_steps=2)).train()
    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **SAVE, max_steps=3))
    resumed.train(resume_from_checkpoint=value)
    assert len(resumed.record) == 1 and resumed.normalizer.state_dict() == straight.normalizer.state_dict()


def test_auto_resume_continues_a_run_and_refuses_a_foreign_output_dir(tiny_path, tokenizer, tmp_path):
    make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **SAVE, max_steps=2)).train()
    again = make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **SAVE, max_steps=3, auto_resume=True))
    again.train()
    assert len(again.record) == 1 and counts(again) == 3 * 8
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model.safetensors").write_text("x")
    other = make(tiny_path, tokenizer, tiny_config(foreign, **SAVE, auto_resume=True))
    with pytest.raises(ValueError, match=r"not empty.*new output_dir.*auto_resume: false"):
        other.train()
    fresh = make(tiny_path, tokenizer, tiny_config(tmp_path / "new", **SAVE, max_steps=1, auto_resume=True))
    fresh.train()
    assert counts(fresh) == 8


def test_resuming_a_finished_run_trains_no_extra_step(tiny_path, tokenizer, tmp_path):
    # a job preempted at its last step and requeued: transformers alone would train step max_steps + 1
    done = make(tiny_path, tokenizer, tiny_config(tmp_path, **SAVE, max_steps=2))
    done.train()
    again = make(tiny_path, tokenizer, tiny_config(tmp_path, **SAVE, max_steps=2, auto_resume=True))
    again.train()
    assert again.record == [] and again.state.global_step == 2
    assert again.normalizer.state_dict() == done.normalizer.state_dict()
    for mine, theirs in zip(again.model.parameters(), done.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_unaligned_save_does_not_count_a_batch_twice(tiny_path, tokenizer, tmp_path):
    # one generation every 2 steps; a checkpoint at step 3 falls inside the generation made at step 2
    common = dict(**SAVE, steps_per_generation=2, per_device_train_batch_size=4)
    straight = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight", **common, max_steps=4))
    straight.train()
    assert len(straight.record) == 2
    make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **common, max_steps=3)).train()
    saved = json.loads((tmp_path / "run" / "checkpoint-3" / NORMALIZER_STATE_FILE).read_text())
    assert saved["before_last_generation"] and saved["state"]["rewards"]["count"] == 8
    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **common, max_steps=5))
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    # regenerated at step 3 (replacing step 2's batch), then at step 4 as in an uninterrupted run
    assert len(resumed.record) == 2
    straight5 = make(tiny_path, tokenizer, tiny_config(tmp_path / "straight5", **common, max_steps=5))
    straight5.train()
    assert counts(resumed) == counts(straight5) == 3 * 8


@pytest.mark.parametrize(
    "content, match",
    [
        ('{"normalizer": "ebpo", "sta', "not valid JSON.*truncated"),
        ("[1, 2]", "not a bnpo-trl normalizer state"),
        ('{"normalizer": "ebpo", "state": {"rewards": {"count": -1}}}', "invalid state"),
    ],
)
def test_truncated_or_foreign_state_is_a_clear_error(content, match, tiny_path, tokenizer, tmp_path):
    make(tiny_path, tokenizer, tiny_config(tmp_path, **SAVE, max_steps=1)).train()
    (tmp_path / "checkpoint-1" / NORMALIZER_STATE_FILE).write_text(content)
    trainer = make(tiny_path, tokenizer, tiny_config(tmp_path, **SAVE, max_steps=2))
    with pytest.raises(ValueError, match=match):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


# -- Hub ------------------------------------------------------------------------------------------------
class FakeHub:
    """The huggingface_hub API boundary: records every upload and keeps a copy of the uploaded files."""

    def __init__(self, root: Path) -> None:
        self.root, self.uploads = root, []

    def create_repo(self, repo_id, **kwargs):
        return type("RepoUrl", (), {"repo_id": f"me/{Path(repo_id).name}"})()

    def upload_folder(self, *, folder_path, path_in_repo=None, ignore_patterns=None, **kwargs):
        files = sorted(p.name for p in Path(folder_path).iterdir() if p.is_file())
        self.uploads.append({"path_in_repo": path_in_repo, "files": files})
        if path_in_repo:
            shutil.copytree(folder_path, self.root / path_in_repo, dirs_exist_ok=True)
        done = concurrent.futures.Future()
        done.set_result(None)
        return done


def test_hub_checkpoint_copies_carry_the_state_and_resume_from_a_download(
    tiny_path, tokenizer, tmp_path, monkeypatch
):
    import huggingface_hub

    hub = FakeHub(tmp_path / "hub")
    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(
            huggingface_hub.HfApi, name, lambda self, *a, _n=name, **k: getattr(hub, _n)(*a, **k)
        )
    push = dict(push_to_hub=True, hub_model_id="me/run", hub_strategy="checkpoint")
    trainer = make(tiny_path, tokenizer, tiny_config(tmp_path / "run", **SAVE, **push, max_steps=2))
    trainer.train()
    checkpoint_uploads = [u for u in hub.uploads if u["path_in_repo"] == "last-checkpoint"]
    assert len(checkpoint_uploads) == 2
    assert all({NORMALIZER_STATE_FILE, "trainer_state.json"} <= set(u["files"]) for u in checkpoint_uploads)
    downloaded = tmp_path / "hub" / "last-checkpoint"
    resumed = make(tiny_path, tokenizer, tiny_config(tmp_path / "elsewhere", **SAVE, max_steps=3))
    resumed.train(resume_from_checkpoint=str(downloaded))
    assert counts(resumed) == 3 * 8


def test_model_card_cites_the_method_and_links_no_placeholder():
    card = model_card_section("beta", {})
    assert "arXiv:2506.02864" in card and "github.com/bnpo-trl" not in card
    assert "2602.05165" in model_card_section("ebpo", {}) and "@article" not in model_card_section(
        "group", {}
    )
