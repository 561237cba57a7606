"""The training entry point: recipes validate through the real parser, the quickstart recipe runs end
to end (in-process and as two CPU ranks under accelerate), and bad recipes fail with clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnpo_trl.data import available_datasets
from bnpo_trl.normalizers import resolve_normalizer
from bnpo_trl.rewards import get_reward_funcs
from bnpo_trl.train import load_datasets, load_warmup_check_set, main, parse_args

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "recipes").rglob("*.yaml"))
QUICKSTART = ROOT / "configs" / "quickstart.yaml"
CPU_OVERRIDES = [
    "--use_vllm",
    "false",
    "--bf16",
    "false",
    "--use_cpu",
    "true",
    "--gradient_checkpointing",
    "false",
]
# A seconds-long version of the quickstart: tiny data, a 2-step warm-up budget, 2 RL steps.
FAST = [
    "--max_steps", "2", "--dataset_limit", "64", "--eval_dataset_limit", "16", "--per_device_train_batch_size", "16",
    "--sft_warmup_max_seconds", "2", "--sft_warmup_eval_steps", "1", "--sft_warmup_eval_limit", "8",
    "--heldout_eval_steps", "1", "--logging_steps", "1", "--disable_tqdm", "true",
]  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(ROOT / "configs" / "recipes")))
def test_recipe_validates(recipe, tmp_path):
    script_args, training_args, model_args = parse_args(
        ["--config", str(recipe), "--output_dir", str(tmp_path), *CPU_OVERRIDES]
    )
    resolve_normalizer(training_args.advantage_normalizer)
    assert len(get_reward_funcs(script_args.rewards.reward_funcs)) >= 1
    names = (
        [script_args.data.dataset_name]
        if script_args.data.dataset_name
        else [d["name"] for d in script_args.data.dataset_mixture]
    )
    assert set(names) <= set(available_datasets())
    assert model_args.model_name_or_path.startswith("Qwen/Qwen2.5-Math-")
    generation_batch = training_args.per_device_train_batch_size * 8 * training_args.steps_per_generation
    assert generation_batch % training_args.num_generations == 0  # valid on 8 GPUs
    assert training_args.beta == 0.0 and training_args.epsilon_high == 0.28
    assert training_args.hub_strategy == "every_save" and training_args.push_to_hub is False
    if training_args.advantage_normalizer == "median":
        assert len({d["name"] for d in script_args.data.dataset_mixture}) > 1  # needs several data sources


def test_bnpo_paper_recipe_matches_reference_settings(tmp_path):
    recipe = ROOT / "configs" / "recipes" / "qwen2.5-math-7b" / "bnpo.yaml"
    script_args, args, _ = parse_args(
        ["--config", str(recipe), "--output_dir", str(tmp_path), *CPU_OVERRIDES]
    )
    prompts_per_step = (
        args.per_device_train_batch_size * 8 * args.gradient_accumulation_steps // args.num_generations
    )
    assert (prompts_per_step, args.num_generations) == (32, 16)
    assert (script_args.data.max_prompt_length, args.max_completion_length) == (1024, 3072)
    assert (args.learning_rate, args.warmup_steps, args.weight_decay, args.max_grad_norm) == (
        1e-6,
        10,
        0.0,
        1.0,
    )
    assert (args.epsilon, args.epsilon_high, args.beta, args.temperature, args.num_train_epochs) == (
        0.2,
        0.28,
        0,
        1,
        5,
    )
    assert script_args.data.dataset_name == "math" and args.vllm_mode == "colocate"


def test_unknown_recipe_key_names_it(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(QUICKSTART.read_text() + "\nadvantage_normaliser: ebpo\n")
    with pytest.raises(ValueError, match="advantage_normaliser"):
        parse_args(["--config", str(recipe)])


@pytest.mark.parametrize(
    ("override", "match"),
    [
        (["--reward_funcs", "acuracy"], "acuracy"),
        (["--advantage_normalizer", "bnpoo"], "bnpoo"),
        (["--dataset_name", "no_such_dataset"], "no_such_dataset"),
    ],
)
def test_bad_recipe_values_fail_clearly(override, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST, *override])


def test_negative_time_budget_decay_fails_clearly(tmp_path):
    with pytest.raises(ValueError, match="time_budget_decay_seconds must be >= 0"):
        parse_args(
            ["--config", str(QUICKSTART), "--output_dir", str(tmp_path), "--time_budget_decay_seconds", "-1"]
        )


def test_time_budget_decay_without_a_budget_fails_clearly(tmp_path):
    recipe = tmp_path / "no_budget.yaml"
    lines = QUICKSTART.read_text().splitlines()
    recipe.write_text("\n".join(line for line in lines if not line.startswith("time_budget")))
    with pytest.raises(ValueError, match="needs time_budget_seconds"):
        parse_args(
            ["--config", str(recipe), "--output_dir", str(tmp_path), "--time_budget_decay_seconds", "30"]
        )


@pytest.mark.parametrize("split", ["", "dev"])
def test_warmup_check_set_is_a_separate_split_when_asked(split, tmp_path):
    argv = ["--config", str(QUICKSTART), "--output_dir", str(tmp_path), "--sft_warmup_eval_limit", "50"]
    script_args, _, _ = parse_args([*argv, "--sft_warmup_eval_split", split])
    _, heldout = load_datasets(script_args.data, seed=0)
    check = load_warmup_check_set(script_args.data, script_args.warmup, heldout)
    questions = {row["prompt"][-1]["content"] for row in check}
    assert len(check) == 50
    test_questions = {row["prompt"][-1]["content"] for row in heldout}
    # the quickstart's test and dev pairs never overlap; without a split the check is the test set's head
    assert (questions <= test_questions) if not split else not (questions & test_questions)


@pytest.mark.slow
def test_quickstart_recipe_runs_end_to_end(tmp_path, capsys):
    summary = main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST])
    out = capsys.readouterr().out
    assert "Held-out accuracy:" in out and "before RL" in out
    saved = json.loads((tmp_path / "run_summary.json").read_text())
    assert saved["steps"] == summary["steps"] == 2
    assert {"accuracy_before", "accuracy_after", "warmup", "heldout_curve"} <= set(saved)
    assert 0.0 <= saved["accuracy_after"] <= 1.0
    assert (tmp_path / "training_curve.png").stat().st_size > 1000
    assert (tmp_path / "model.safetensors").exists()
    card = (tmp_path / "README.md").read_text()
    assert "bnpo-trl" in card and "`bnpo` normalizer" in card
    assert any("normalizer/bnpo/alpha" in entry for entry in saved["log_history"])


def test_a_resumed_run_skips_the_warm_up_and_continues(tmp_path, capsys):
    save = ["--save_strategy", "steps", "--save_steps", "2"]
    main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST, *save])
    capsys.readouterr()
    steps = ["--max_steps", "3", "--resume_from_checkpoint", "true"]
    summary = main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST, *save, *steps])
    out = capsys.readouterr().out
    assert summary["resumed_from"] == str(tmp_path / "checkpoint-2") and summary["steps"] == 3
    assert "warmup" not in summary and "accuracy_before" not in summary
    assert "resumed from" in out and 0.0 <= summary["accuracy_after"] <= 1.0


@pytest.mark.slow
def test_time_budget_stops_rl_early_and_says_so(tmp_path, capsys):
    # the budget counts from the start of the run, so 1 s is spent before RL begins: RL stops after step 1
    budget = ["--max_steps", "20", "--time_budget_seconds", "1"]
    summary = main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST, *budget])
    assert summary["steps"] == 1 and summary["stopped_by_time_budget"] is True
    assert "time budget reached" in capsys.readouterr().out


@pytest.mark.slow
def test_time_budget_decay_lowers_the_logged_learning_rate(tmp_path):
    # a 1000 s budget decayed over all of it: steps some seconds in run at a rate a little below the
    # scheduler's constant one; this checks that the Trainer hands the callback its optimizer and scheduler
    steps = [
        "--max_steps",
        "3",
        "--warmup_steps",
        "0",
        "--learning_rate",
        "1e-4",
        "--lr_scheduler_type",
        "constant",
    ]
    budget = ["--time_budget_seconds", "1000", "--time_budget_decay_seconds", "1000"]
    summary = main(["--config", str(QUICKSTART), "--output_dir", str(tmp_path), *FAST, *steps, *budget])
    rates = [entry["learning_rate"] for entry in summary["log_history"] if "learning_rate" in entry]
    # each entry is the rate its update used: step 1's came before any scale, steps 2 and 3 are scaled
    assert len(rates) == 3 and rates[0] == pytest.approx(1e-4), rates
    assert all(0.5e-4 < rate < 1e-4 * (1 - 1e-7) for rate in rates[1:]), rates
    assert rates == sorted(rates, reverse=True) and summary["stopped_by_time_budget"] is False


@pytest.mark.slow
def test_quickstart_under_accelerate_cpu_config_runs_two_ranks(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        "configs/accelerate/cpu/ddp.yaml",
    ]
    cmd += ["--main_process_port", "0", "-m", "bnpo_trl.train", "--config", "configs/quickstart.yaml"]
    # a 1 s time budget: rank 0's clock decides for both ranks, so both stop after RL step 1 (no hang)
    cmd += ["--output_dir", str(tmp_path), *FAST, "--max_steps", "20", "--time_budget_seconds", "1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "terminate called" not in proc.stderr
    summary = json.loads((tmp_path / "run_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 1 and summary["stopped_by_time_budget"]
