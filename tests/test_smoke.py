"""``bnpo-trl train --config RECIPE --smoke`` for every shipped recipe (offline, CPU), ``--dry-run``, and the
errors a GPU recipe and a bad recipe give on a machine without a GPU."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bnpo_trl.cli import main as cli_main
from bnpo_trl.cli import shipped_configs
from bnpo_trl.data import DATASETS, load_dataset_by_name
from bnpo_trl.data.loading import load_schema_source
from bnpo_trl.smoke import SMOKE_STEPS, apply_smoke, architecture_family, fixture_rows, smoke_batch_size
from bnpo_trl.train import (
    NEEDS_GPU,
    RecipeNeedsGPUError,
    gpu_settings_missing,
    main,
    parse_args,
    recipe_device_settings,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "bnpo_trl" / "configs"
# every training recipe shipped in the package (not the accelerate launcher configs)
RECIPES = [name for name in shipped_configs() if not name.startswith("accelerate/")]
GPU_RECIPE = CONFIGS / "recipes" / "qwen2.5-math-1.5b" / "bnpo.yaml"
QUICKSTART = CONFIGS / "quickstart.yaml"
_TIMES: dict[str, float] = {}


def _no_cuda() -> bool:
    import torch

    return not torch.cuda.is_available()


needs_cpu_only = pytest.mark.skipif(not _no_cuda(), reason="checks the behaviour on a machine without CUDA")


@pytest.fixture(scope="module", autouse=True)
def _report_smoke_time():
    yield
    if _TIMES:
        total = sum(_TIMES.values())
        lines = [f"  {name}: {seconds:.1f} s" for name, seconds in _TIMES.items()]
        print(f"\n--smoke total {total:.1f} s for {len(_TIMES)} recipes (budget 180 s):\n" + "\n".join(lines))


def test_every_recipe_is_covered():
    assert "quickstart.yaml" in RECIPES and len([r for r in RECIPES if r.startswith("recipes/")]) >= 6


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES)
def test_smoke_runs_the_recipe_checkpoints_and_resumes(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNPO_TRL_SMOKE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    cli_main(["train", "--config", recipe, "--smoke"])  # the shipped name, as a user types it
    _TIMES[recipe] = time.perf_counter() - started
    out = capsys.readouterr().out
    assert "bnpo-trl --smoke passed" in out, out[-3000:]
    (folder,) = tmp_path.glob("bnpo-smoke-*")
    output = folder / "output"
    checkpoint = output / f"checkpoint-{SMOKE_STEPS}"
    assert (checkpoint / "trainer_state.json").is_file() and (checkpoint / "optimizer.pt").is_file()
    assert json.loads((checkpoint / "trainer_state.json").read_text())["global_step"] == SMOKE_STEPS
    summary = json.loads((output / "run_summary.json").read_text())  # written by the resumed run
    assert summary["steps"] == SMOKE_STEPS + 1
    steps_logged = {e["step"] for e in summary["log_history"] if "loss" in e}
    assert steps_logged == {1, 2, 3}, summary["log_history"]
    recipe_yaml = yaml.safe_load((CONFIGS / recipe).read_text())
    assert summary["normalizer"] == recipe_yaml["advantage_normalizer"]
    # the recipe's own normalizer ran (its metrics are logged), not a default
    assert any(k.startswith("normalizer/") for e in summary["log_history"] for k in e)
    if recipe.startswith("recipes/"):  # a GPU recipe: the report names what it substituted
        assert "use_vllm: true" in out and "bfloat16 -> float32" in out and "-> tiny:" in out
        assert "generated rows in its Hub schema" in out and f"-> {output}" in out
        # evaluated during RL, on generated rows in each benchmark's schema
        if "benchmark_eval" in recipe_yaml:
            for name in recipe_yaml["benchmark_eval"]["benchmarks"]:
                assert f"benchmark {name!r}: Hub -> generated rows" in out
                assert [e["step"] for e in summary["benchmark_eval"]] == [3]  # every step of the resumed run
                assert 0.0 <= summary["benchmark_eval"][0][f"eval/{name}/pass@1"] <= 1.0
    else:
        assert "kept (already the offline tiny model)" in out
        # the first run warmed up and measured before RL; the resumed one starts from the checkpoint
        assert "| supervised warm-up" in out and "| before RL" in out
        assert summary["resumed_from"] == str(checkpoint) and "warmup" not in summary
        assert 0.0 <= summary["accuracy_after"] <= 1.0


def test_smoke_substitutions_keep_the_recipe_and_num_generations_divisibility(tmp_path):
    argv = ["--config", str(CONFIGS / "recipes" / "qwen2.5-math-7b" / "bnpo.yaml")]
    from bnpo_trl.recipe import CPU_FLAGS, parse_recipe

    script_args, training_args, model_args = parse_recipe([*argv, *CPU_FLAGS])
    new_script, new_args, new_model, lines = apply_smoke(
        script_args, training_args, model_args, requested=recipe_device_settings(argv), root=tmp_path
    )
    assert (new_args.bf16, new_args.use_cpu, new_args.use_vllm, new_model.dtype) == (
        False,
        True,
        False,
        "float32",
    )
    assert new_args.num_generations == 16 and new_args.gradient_accumulation_steps == 4
    assert new_args.generation_batch_size % new_args.num_generations == 0
    assert new_args.generation_batch_size // new_args.num_generations >= 2
    assert new_args.normalizer_kwargs == {"reward_range": [0, 1]} and new_args.epsilon_high == 0.28
    assert new_args.max_steps == SMOKE_STEPS and new_args.save_steps == SMOKE_STEPS
    assert new_args.output_dir.startswith(str(tmp_path)) and not new_args.push_to_hub
    assert new_script.rewards.reward_funcs == script_args.rewards.reward_funcs
    assert Path(new_script.data.dataset_path).is_file() and new_script.data.dataset_limit <= 32
    assert any("bf16 true" in line for line in lines)


@pytest.mark.parametrize(
    ("g", "spg", "expected"), [(8, 2, 8), (16, 4, 8), (4, 1, 8), (6, 4, 3), (2, 1, 4), (16, 1, 32)]
)
def test_smoke_batch_size_holds_whole_groups(g, spg, expected):
    size = smoke_batch_size(g, spg)
    assert size == expected and (size * spg) % g == 0 and size * spg >= 2 * g


@pytest.mark.parametrize("name", sorted(n for n, s in DATASETS.items() if s.load is load_schema_source))
def test_fixture_rows_load_through_the_real_schema_loader(name, tmp_path):
    path = tmp_path / f"{name}.jsonl"
    rows = fixture_rows(name, 12)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dataset = load_dataset_by_name(name, path=str(path))
    assert len(dataset) == 12 and all(row["answer"] for row in dataset)
    assert dataset[0]["prompt"][-1]["role"] == "user"


def test_architecture_family_from_config_or_id(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    assert architecture_family(str(tmp_path))[0] == "llama"
    assert architecture_family("Qwen/Qwen2.5-Math-7B")[0] == "qwen2"
    assert architecture_family("someone/unknown-model")[0] is None


def test_smoke_builds_a_tiny_model_of_another_family(tmp_path):
    from trl import ModelConfig

    from bnpo_trl.models import load_model_and_tokenizer
    from bnpo_trl.smoke import _substitute_model

    model_args, lines = _substitute_model(
        ModelConfig(model_name_or_path="meta-llama/Llama-3.2-1B", dtype="bfloat16"), tmp_path
    )
    assert "llama" in lines[0]

    class Args:
        model_init_kwargs = None

    model, tokenizer = load_model_and_tokenizer(model_args, Args())
    assert model.config.model_type == "llama" and model.config.hidden_size == 64
    assert tokenizer.eos_token == "<|im_end|>"


def test_dry_run_prints_the_resolved_config_and_exits_0():
    cmd = [sys.executable, "-m", "bnpo_trl.train", "--config", str(GPU_RECIPE), "--dry-run"]
    cmd += ["--learning_rate", "3e-6"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = yaml.safe_load(proc.stdout)
    assert set(config) == {"data", "rewards", "warmup", "heldout", "budget", "grpo", "model"}
    assert config["data"]["dataset_name"] == "math" and config["data"]["eval_dataset_name"] == "math500"
    assert config["grpo"]["learning_rate"] == 3e-6  # the command line overrides the recipe
    assert config["grpo"]["bf16"] is True and config["grpo"]["use_vllm"] is True  # the recipe's, not CPU's
    assert config["grpo"]["normalizer_kwargs"] == {"reward_range": [0, 1]}
    assert config["model"]["model_name_or_path"] == "Qwen/Qwen2.5-Math-1.5B"
    assert "Loading" not in proc.stdout and "model.safetensors" not in proc.stdout
    if _no_cuda():
        assert NEEDS_GPU in proc.stdout


def test_dry_run_with_smoke_prints_the_substituted_config(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BNPO_TRL_SMOKE_DIR", str(tmp_path))
    result = main(["--config", str(GPU_RECIPE), "--smoke", "--dry-run"])
    out = capsys.readouterr().out
    assert result["dry_run"] and not (Path(result["output_dir"]) / "run_summary.json").exists()
    config = yaml.safe_load(out[out.index("# bnpo-trl --dry-run") :])
    assert config["grpo"]["max_steps"] == SMOKE_STEPS and config["model"]["model_name_or_path"].startswith(
        "tiny:"
    )
    assert "use_vllm" not in config["grpo"]  # back to the default: false


@needs_cpu_only
def test_gpu_recipe_without_smoke_on_cpu_says_it_needs_a_gpu(tmp_path):
    with pytest.raises(RecipeNeedsGPUError, match=re.escape(NEEDS_GPU)) as info:
        main(["--config", str(GPU_RECIPE), "--output_dir", str(tmp_path)])
    assert "Invalid recipe" not in str(info.value) and "bf16: true" in str(info.value)
    # vLLM alone (bf16 off) is also a GPU requirement, caught before any model is loaded
    with pytest.raises(RecipeNeedsGPUError, match="use_vllm: true"):
        parse_args(["--config", str(GPU_RECIPE), "--bf16", "false", "--output_dir", str(tmp_path)])


@needs_cpu_only
def test_the_shell_command_prints_the_gpu_message_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "bnpo_trl.train", "--config", str(GPU_RECIPE), "--output_dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and NEEDS_GPU in proc.stderr and "Traceback" not in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text(QUICKSTART.read_text() + "\nadvantage_normaliser: ebpo\n")
    with pytest.raises(SystemExit, match=r"^bnpo-trl train: Invalid recipe.*advantage_normaliser"):
        cli_main(["train", "--config", str(bad)])


@needs_cpu_only
def test_gpu_recipe_with_cpu_overrides_still_parses(tmp_path):
    argv = ["--config", str(GPU_RECIPE), "--output_dir", str(tmp_path)]
    _, args, _ = parse_args([*argv, "--bf16", "false", "--use_vllm", "false", "--use_cpu", "true"])
    assert not args.bf16 and not args.use_vllm


@pytest.mark.parametrize("recipe", [GPU_RECIPE, QUICKSTART], ids=["gpu-recipe", "quickstart"])
def test_typo_in_a_recipe_key_is_still_an_invalid_recipe(recipe, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(recipe.read_text() + "\nadvantage_normaliser: ebpo\n")
    with pytest.raises(ValueError, match=r"Invalid recipe.*advantage_normaliser") as info:
        parse_args(["--config", str(bad), "--output_dir", str(tmp_path)])
    assert not isinstance(info.value, RecipeNeedsGPUError)
    with pytest.raises(ValueError, match=r"Invalid recipe.*advantage_normaliser"):  # --smoke does not hide it
        main(["--config", str(bad), "--smoke"])


def test_bad_value_in_a_gpu_recipe_is_an_invalid_recipe(tmp_path):
    with pytest.raises(ValueError, match=r"Invalid recipe.*curriculum") as info:
        parse_args(["--config", str(GPU_RECIPE), "--curriculum", "hardest_first"])
    assert not isinstance(info.value, RecipeNeedsGPUError)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([], {"bf16": True, "fp16": False, "use_vllm": True, "use_cpu": False}),
        (["--bf16", "false", "--use_vllm=false"], {"bf16": False, "use_vllm": False}),
        (["--use_cpu", "--fp16", "true", "--bf16", "false"], {"use_cpu": True, "fp16": True}),
    ],
)
def test_recipe_device_settings_read_yaml_then_command_line(extra, expected):
    settings = recipe_device_settings(["--config", str(GPU_RECIPE), *extra])
    assert {k: settings[k] for k in expected} == expected
    quick = recipe_device_settings(["--config", str(QUICKSTART)])
    assert quick == {"bf16": False, "fp16": False, "use_vllm": False, "use_cpu": True}
    assert gpu_settings_missing(quick) == []
