"""Tests of the benchmark evaluation (bnpo_trl.evaluation), offline, on tests/fixtures/eval/.

vLLM is never run here: its path is tested for the missing-vLLM error, for the arguments it builds, and
with a stand-in ``vllm`` package (written into a temporary folder) that exercises the worker processes,
the data-parallel split and the merge, not vLLM itself.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import textwrap
from collections import defaultdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bnpo_trl import evaluation
from bnpo_trl.evaluation import (
    BENCHMARKS,
    VLLMBackend,
    benchmark_metrics,
    bootstrap_ci,
    compare,
    default_ks,
    end_of_turn_token_ids,
    evaluate,
    format_comparison,
    format_table,
    load_benchmarks,
    load_model,
    load_tokenizer_for,
    parse_benchmark_specs,
    pass_at_k,
    plan_data_parallel,
    require_vllm,
    vllm_backend,
    vllm_llm_kwargs,
    vllm_sampling_kwargs,
)
from bnpo_trl.evaluation import cli as evaluation_cli
from bnpo_trl.models import load_plain_tokenizer
from bnpo_trl.tiny_model import EOS_TOKEN, PAD_TOKEN, tiny_model_path
from tests.trainer_utils import tiny_grpo_kwargs

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
MATH500 = str(FIXTURES / "math500.jsonl")
AMC23 = str(FIXTURES / "amc23.parquet")
SPECS = f"math500={MATH500},{AMC23}"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny-model generation on a shared 2-core machine is ~50x slower with 2 threads under load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------------------- pass@k


def _brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of the k-subsets of n samples (the first c correct) holding at least one correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


def test_pass_at_k_matches_brute_force_enumeration() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(_brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_1_is_the_mean_accuracy_and_large_n_is_exact() -> None:
    assert pass_at_k(16, 5, 1) == 5 / 16
    # n = 64: enumeration is out of reach, but the closed form 1 - prod(1 - k / i) must agree.
    n, c, k = 64, 10, 8
    product = np.prod([1 - k / i for i in range(n - c + 1, n + 1)])
    assert pass_at_k(n, c, k) == pytest.approx(1 - product, rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k) -> None:
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


def test_default_ks() -> None:
    assert default_ks(1) == [1]
    assert default_ks(16) == [1, 2, 4, 8, 16]
    assert default_ks(6) == [1, 2, 4, 6]


# ----------------------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_a_seeded_percentile_interval() -> None:
    values = np.array([1.0] * 30 + [0.0] * 70)
    lo, hi = bootstrap_ci(values, n_bootstrap=2000, seed=3)
    assert (lo, hi) == bootstrap_ci(values, n_bootstrap=2000, seed=3)  # fixed seed: reproducible
    # The same computation by hand.
    idx = np.random.default_rng(3).integers(0, 100, size=(2000, 100))
    assert (lo, hi) == pytest.approx(tuple(np.quantile(values[idx].mean(axis=1), [0.025, 0.975])))
    # Close to the normal approximation 0.3 +- 1.96 * sqrt(0.3 * 0.7 / 100).
    half = 1.96 * np.sqrt(0.21 / 100)
    assert lo == pytest.approx(0.3 - half, abs=0.02)
    assert hi == pytest.approx(0.3 + half, abs=0.02)
    assert bootstrap_ci([0.4]) == (0.4, 0.4)
    assert bootstrap_ci([0.0, 1.0], n_bootstrap=0) == (0.5, 0.5)
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci([])


def test_bootstrap_ci_of_rows_shares_the_resamples() -> None:
    rows = np.array([[1.0, 0.0, 0.0, 1.0, 1.0], [0.5, 0.25, 0.0, 1.0, 0.75]])
    both = bootstrap_ci(rows, n_bootstrap=300, seed=4)
    assert both == [bootstrap_ci(row, n_bootstrap=300, seed=4) for row in rows]  # same draws per row
    assert bootstrap_ci(rows, n_bootstrap=0) == [(0.6, 0.6), (0.5, 0.5)]
    with pytest.raises(ValueError, match="non-empty"):
        bootstrap_ci(np.zeros((2, 2, 2)))
    correct = [[True, False], [False, False], [True, True], [False, True]]
    tables = ([[1, 1]] * 4, [["correct", "wrong"]] * 4, [[True, True]] * 4)
    m = benchmark_metrics(correct, *tables, n_bootstrap=200, seed=1)
    per_k = [[pass_at_k(2, sum(r), k) for r in correct] for k in (1, 2)]
    assert list(m["ci95"].values()) == [list(ci) for ci in bootstrap_ci(per_k, n_bootstrap=200, seed=1)]


def test_benchmark_metrics_by_hand() -> None:
    correct = [[True, True, False], [False, False, False], [True, False, False]]
    lengths = [[10, 20, 30], [5, 5, 5], [1, 2, 3]]
    verdicts = [
        ["correct", "correct", "wrong"],
        ["no_answer", "timeout", "wrong"],
        ["correct", "no_answer", "wrong"],
    ]
    terminated = [[True, True, False], [True, True, True], [True, True, True]]
    m = benchmark_metrics(correct, lengths, verdicts, terminated, n_bootstrap=200, seed=0)
    assert m["n_problems"] == 3 and m["n_samples"] == 3
    assert m["correct_per_problem"] == [2, 0, 1]
    assert m["pass@k"]["pass@1"] == pytest.approx(3 / 9)
    assert m["pass@k"]["pass@2"] == pytest.approx((1 + 0 + 2 / 3) / 3)
    assert m["pass@k"]["pass@3"] == pytest.approx(2 / 3)
    assert m["mean_length"] == pytest.approx(81 / 9)
    assert m["no_answer_rate"] == pytest.approx(2 / 9)
    assert m["timeout_rate"] == pytest.approx(1 / 9)
    assert m["truncated_rate"] == pytest.approx(1 / 9)
    for key, (lo, hi) in m["ci95"].items():
        assert 0 <= lo <= m["pass@k"][key] <= hi <= 1
    ks_kept = benchmark_metrics(correct, lengths, verdicts, terminated, ks=[2, 9])["pass@k"]
    assert list(ks_kept) == ["pass@1", "pass@2"]  # pass@1 always, k > n dropped
    with pytest.raises(ValueError, match="same number"):
        benchmark_metrics([[True], [True, False]], [[1], [1, 1]], [["correct"], ["a", "b"]], [[1], [1, 1]])


MAJORITY_TEXTS = [  # five samples per problem, answers as boxes; "-" is a completion without a box
    [r"\boxed{0.5}", r"\boxed{\frac{1}{2}}", r"\boxed{3}", r"\boxed{3}", r"\boxed{1/2}"],
    [r"\boxed{8}", r"\boxed{7}", r"\boxed{7}", r"\boxed{8}", "-"],
    ["-", "-", r"\boxed{}", "-", "-"],
    [r"\boxed{2\sqrt{3}}", r"\boxed{5}", r"\boxed{\sqrt{12}}", r"\boxed{5}", r"\boxed{}"],
]
MAJORITY_CORRECT = [
    [True, True, False, False, True],  # gold 1/2: three equivalent answers outvote "3" twice
    [False, True, True, False, False],  # gold 7: a 2-2 tie goes to the first vote, 8
    [False] * 5,  # nobody boxed an answer
    [True, False, True, False, False],  # gold 2*sqrt(3): a 2-2 tie won by the first vote, 2\sqrt{3}
]


def test_majority_vote_groups_answers_by_the_verifier_by_hand() -> None:
    from bnpo_trl.evaluation.voting import majority_correct
    from bnpo_trl.rewards import PoolSettings, get_verifier

    verifier = get_verifier(PoolSettings(workers=1))
    assert majority_correct(MAJORITY_TEXTS, MAJORITY_CORRECT, verifier) == [True, False, False, True]
    # By string equality "3" would win the first problem (2 votes against 1, 1, 1).
    m = benchmark_metrics(
        MAJORITY_CORRECT,
        [[1] * 5] * 4,
        [["correct"] * 5] * 4,
        [[True] * 5] * 4,
        n_bootstrap=200,
        seed=3,
        majority=[True, False, False, True],
    )
    assert m["maj@k"] == {"maj@5": 0.5}
    assert m["ci95"]["maj@5"] == list(bootstrap_ci([1.0, 0.0, 0.0, 1.0], n_bootstrap=200, seed=3))
    assert m["pass@k"]["pass@5"] == 0.75 and list(m["ci95"]) == [
        "pass@1",
        "pass@2",
        "pass@4",
        "pass@5",
        "maj@5",
    ]
    one = benchmark_metrics([[True]], [[1]], [["correct"]], [[True]], majority=[True])
    assert "maj@k" not in one and list(one["ci95"]) == ["pass@1"]  # a single sample has no vote


def test_compare_is_a_paired_difference() -> None:
    def report(counts):
        return {
            "results": {
                "b": {
                    "n_samples": 2,
                    "correct_per_problem": counts,
                    "problems_sha256": "x",
                    "pass@k": {"pass@1": sum(counts) / (2 * len(counts))},
                    "mean_length": 10.0,
                    "no_answer_rate": 0.0,
                }
            }
        }

    diff = compare(report([2, 2, 1, 0]), report([1, 2, 1, 0]), n_bootstrap=500)
    entry = diff["b"]["pass@k"]["pass@1"]
    assert entry["delta"] == pytest.approx(1 / 8)
    assert entry["ci95"][0] >= 0 and entry["ci95"][1] <= 0.5  # paired: only problem 0 differs


# --------------------------------------------------------------------------------------- benchmarks


def test_parse_benchmark_specs() -> None:
    assert parse_benchmark_specs("math500, aime_2024 ,aime25,amc23") == [
        ("math500", "math500", None),
        ("aime24", "aime24", None),
        ("aime25", "aime25", None),
        ("amc23", "amc23", None),
    ]
    assert parse_benchmark_specs([AMC23, "mine=x/ob.jsonl", "data/olympiad.parquet"]) == [
        ("amc23", "amc23", AMC23),
        ("mine", None, "x/ob.jsonl"),
        ("olympiad", None, "data/olympiad.parquet"),
    ]
    with pytest.raises(ValueError, match="Unknown benchmark 'aime23'"):
        parse_benchmark_specs("aime23")
    with pytest.raises(ValueError, match="unique"):
        parse_benchmark_specs(f"amc23,{AMC23}")
    with pytest.raises(ValueError, match="No benchmarks"):
        parse_benchmark_specs(" , ")
    assert set(BENCHMARKS) >= {"math500", "aime24", "aime25", "amc23"}


def test_load_benchmarks_reads_two_schemas_and_plain_files(tmp_path) -> None:
    plain = tmp_path / "olympiad.jsonl"
    plain.write_text(json.dumps({"problem": "What is 2 + 2?", "answer": 4}) + "\n")
    loaded = load_benchmarks(f"{SPECS},{plain}", system_prompt="SYS", limit=3)
    assert list(loaded) == ["math500", "amc23", "olympiad"]
    assert len(loaded["math500"].dataset) == 3 and len(loaded["amc23"].dataset) == 3
    assert loaded["amc23"].dataset["answer"][:2] == ["100", "8"]  # float 100.0 -> "100", from `question`
    assert loaded["amc23"].problems[0] == "What is $12 \\cdot 12 - 44$?"
    assert loaded["olympiad"].dataset[0]["prompt"] == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "What is 2 + 2?"},
    ]
    with pytest.raises(FileNotFoundError):
        load_benchmarks(str(tmp_path / "missing.jsonl"))


def test_load_benchmarks_arithmetic_is_offline_and_sized() -> None:
    assert len(load_benchmarks("arithmetic")["arithmetic"].dataset) == 200  # its test split
    loaded = load_benchmarks("arithmetic", system_prompt=None, limit=3)["arithmetic"]
    assert len(loaded.dataset) == 3 and loaded.problems[0].startswith("What is ")


# ---------------------------------------------------------------------------- tokenizers, models, stops


def test_end_of_turn_token(tokenizer) -> None:
    assert end_of_turn_token_ids(tokenizer) == [tokenizer.convert_tokens_to_ids(EOS_TOKEN)]
    other = load_plain_tokenizer(tiny_model_path())
    other.chat_template = (
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '" + PAD_TOKEN + "' }}{% endfor %}"
    )
    assert end_of_turn_token_ids(other) == [other.convert_tokens_to_ids(PAD_TOKEN)]
    other.chat_template = "{% for m in messages %}{{ m['content'] + '\\n' }}{% endfor %}"
    assert end_of_turn_token_ids(other) == []


def test_loaders_for_tiny_specs_and_folders(tiny_path) -> None:
    tok = load_tokenizer_for(tiny_path)
    assert type(tok).__name__ != "Qwen2Tokenizer"  # the saved tokenizer.json, with its own pre-tokenizer
    assert "Digits" in str(tok.backend_tokenizer.pre_tokenizer)
    assert tok.backend_tokenizer.to_str() == load_plain_tokenizer(tiny_path).backend_tokenizer.to_str()
    assert (
        load_tokenizer_for("tiny:hidden_size=64").backend_tokenizer.to_str() == tok.backend_tokenizer.to_str()
    )
    model = load_model("tiny:hidden_size=64", device="cpu")
    assert model.config.hidden_size == 64 and str(model.device) == "cpu"


@pytest.mark.slow
def test_peft_adapter_folder_is_merged(tiny_path, tmp_path) -> None:
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_path, device="cpu")
    lora = get_peft_model(load_model(tiny_path, device="cpu"), LoraConfig(r=2, target_modules=["q_proj"]))
    torch.nn.init.ones_(lora.base_model.model.model.layers[0].self_attn.q_proj.lora_B.default.weight)
    lora.save_pretrained(tmp_path / "adapter")
    merged = load_model(str(tmp_path / "adapter"), device="cpu")
    assert not hasattr(merged, "peft_config")
    q = merged.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q, base.model.layers[0].self_attn.q_proj.weight)


def test_generate_keeps_order_and_controls_sampling(tiny_path, tokenizer) -> None:
    from bnpo_trl.generation import generate

    model = load_model(tiny_path, device="cpu")
    prompts = [[{"role": "user", "content": "What is 1 + 2?" * (i % 3 + 1)}] for i in range(5)]
    plain = generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=2)
    sorted_ = generate(model, tokenizer, prompts, max_new_tokens=5, batch_size=2, sort_by_length=True)
    assert plain.texts == sorted_.texts and len(plain.texts) == 5

    seen = {}
    original = model.generate

    def spy(**kwargs):
        seen.update(kwargs)
        return original(**kwargs)

    model.generate = spy
    generate(
        model,
        tokenizer,
        prompts[:1],
        num_samples=2,
        temperature=0.7,
        top_p=0.9,
        max_new_tokens=3,
        stop_token_ids=[7],
    )
    assert seen["top_k"] == 0 and seen["repetition_penalty"] == 1.0  # not transformers' top_k=50
    assert 7 in seen["eos_token_id"]
    with pytest.raises(ValueError, match="num_samples=1"):
        generate(model, tokenizer, prompts, num_samples=2)


# -------------------------------------------------------------------------------------------- vLLM


def test_vllm_missing_gives_a_clear_error(monkeypatch, tiny_path, tokenizer) -> None:
    real_find_spec = vllm_backend.importlib.util.find_spec
    monkeypatch.setattr(
        vllm_backend.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "vllm" else real_find_spec(name, *a),
    )
    with pytest.raises(ImportError, match=r"bnpo-trl\[vllm\]"):
        require_vllm()
    with pytest.raises(ImportError, match="vllm"):
        evaluate(tiny_path, tokenizer, {"x": load_benchmarks(MATH500)["math500"]}, backend="vllm")
    with pytest.raises(SystemExit, match=r"bnpo-trl\[vllm\].*--backend transformers"):
        evaluation.main(
            ["--model", tiny_path, "--benchmarks", MATH500, "--backend", "vllm", "--output", "/nonexistent"]
        )
    assert evaluation_cli._choose_backend("auto") == "transformers"


def test_vllm_arguments() -> None:
    llm = vllm_llm_kwargs("Qwen/Qwen2.5-Math-7B", tensor_parallel_size=2, seed=3, max_model_len=4096)
    assert llm == {
        "model": "Qwen/Qwen2.5-Math-7B",
        "tokenizer": "Qwen/Qwen2.5-Math-7B",
        "tensor_parallel_size": 2,
        "dtype": "auto",
        "seed": 3,
        "gpu_memory_utilization": 0.9,
        "trust_remote_code": False,
        "enforce_eager": False,
        "max_model_len": 4096,
    }
    assert "max_model_len" not in vllm_llm_kwargs("m")
    assert vllm_llm_kwargs("m", revision="abc", tokenizer="t")["revision"] == "abc"
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        vllm_llm_kwargs("m", tensor_parallel_size=0)
    assert vllm_sampling_kwargs(1, 0.0, 0.95, 10) == {
        "n": 1,
        "temperature": 0.0,
        "top_p": 1.0,
        "max_tokens": 10,
        "stop_token_ids": [],
        "skip_special_tokens": True,
    }
    with pytest.raises(ValueError, match="n=1"):
        vllm_sampling_kwargs(4, 0.0, 1.0, 10)


def test_plan_data_parallel() -> None:
    devices = [str(i) for i in range(8)]
    plan = plan_data_parallel(10, 4, 2, devices)
    assert [p["devices"] for p in plan] == ["0,1", "2,3", "4,5", "6,7"]
    assert [(p["start"], p["stop"]) for p in plan] == [(0, 3), (3, 6), (6, 8), (8, 10)]
    assert len(plan_data_parallel(1, 4, 1, devices)) == 1  # no empty shards
    with pytest.raises(ValueError, match="needs 8 GPUs, 4 visible"):
        plan_data_parallel(10, 4, 2, devices[:4])


FAKE_VLLM = '''
"""A stand-in for vLLM used by tests/test_evaluation.py: NOT vLLM. Answers \\\\boxed{<prompt length>}."""
import json, os
__version__ = "0.0-test-double"

class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

class _Sample:
    def __init__(self, index, text, token_ids, finish_reason):
        self.index, self.text, self.token_ids, self.finish_reason = index, text, token_ids, finish_reason

class _Output:
    def __init__(self, outputs):
        self.outputs = outputs

class LLM:
    def __init__(self, **kwargs):
        self.kwargs = kwargs

    def generate(self, prompts, params, use_tqdm=True):
        record = {"llm": self.kwargs, "params": [p.kwargs for p in params],
                  "devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "n_prompts": len(prompts)}
        with open(os.environ["FAKE_VLLM_LOG"], "a") as f:
            f.write(json.dumps(record) + "\\n")
        out = []
        for prompt, p in zip(prompts, params):
            size = len(prompt["prompt_token_ids"])
            samples = [_Sample(j, "\\\\boxed{%d}" % (size + j), [1] * (j + 2), "stop" if j else "length")
                       for j in reversed(range(p.kwargs["n"]))]
            out.append(_Output(samples))
        return out
'''


@pytest.fixture
def forget_vllm():
    """Drop the stand-in from sys.modules afterwards, so that later tests (TRL) do not see a `vllm`."""
    yield
    sys.modules.pop("vllm", None)


@pytest.mark.slow
def test_vllm_backend_workers_with_a_stand_in_vllm(
    tmp_path, monkeypatch, tiny_path, tokenizer, forget_vllm
) -> None:
    fake = tmp_path / "fake"
    (fake / "vllm").mkdir(parents=True)
    (fake / "vllm" / "__init__.py").write_text(textwrap.dedent(FAKE_VLLM))
    log = tmp_path / "calls.jsonl"
    monkeypatch.syspath_prepend(str(fake))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake), *sys.path]))
    monkeypatch.setenv("FAKE_VLLM_LOG", str(log))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")
    benchmarks = load_benchmarks(SPECS, limit=3)
    backend = VLLMBackend(
        tiny_path, tensor_parallel_size=2, data_parallel_size=2, max_model_len=512, show_progress=False
    )
    report = evaluate(
        tiny_path,
        tokenizer,
        benchmarks,
        n=2,
        max_new_tokens=8,
        backend=backend,
        seed=5,
        samples_path=tmp_path / "samples.jsonl",
        progress=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(c["devices"] for c in calls) == ["4,5", "6,7"]
    assert sorted(c["n_prompts"] for c in calls) == [3, 3]
    assert {c["llm"]["tensor_parallel_size"] for c in calls} == {2}
    assert sorted(c["llm"]["seed"] for c in calls) == [5, 6]
    params = [p for c in calls for p in c["params"]]
    assert all(p["n"] == 2 and p["max_tokens"] == 8 and p["stop_token_ids"] == [2] for p in params)
    assert len({p["seed"] for p in params}) == 6  # one seed per prompt
    # The stand-in answers \boxed{prompt length + j}: check the merge kept prompts and samples in order.
    rows = [json.loads(line) for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for row in rows:
        bench = benchmarks[row["benchmark"]]
        text = tokenizer.apply_chat_template(
            list(bench.dataset[row["problem_index"]]["prompt"]), tokenize=False, add_generation_prompt=True
        )
        size = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert row["completion"] == f"\\boxed{{{size + row['sample_index']}}}"
        assert row["length"] == row["sample_index"] + 2
        assert row["terminated"] == bool(row["sample_index"])
    assert report["metadata"]["backend"] == "vllm"
    assert report["results"]["amc23"]["truncated_rate"] == 0.5


# ----------------------------------------------------------------------------------------- end to end


def _memorize(model, tokenizer, benchmarks, steps: int = 45):
    """Fine-tune the tiny model a little on made-up targets so that its samples are a mix of correct,
    wrong, missing ("No idea.") and anchored ("The final answer is $x$.") answers, some truncated."""

    def target(i: int, answer: str) -> str:
        return [
            f"\\boxed{{{answer}}}",
            f"\\boxed{{{answer}}}",
            "\\boxed{7}",
            "No idea.",
            f"The final answer is ${answer}$.",
        ][i % 5] + EOS_TOKEN

    pairs = []
    for bench in benchmarks.values():
        for i, (prompt, answer) in enumerate(
            zip(bench.dataset["prompt"], bench.dataset["answer"], strict=True)
        ):
            text = tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
            pairs.append(
                (
                    tokenizer(text, add_special_tokens=False)["input_ids"],
                    tokenizer(target(i, answer), add_special_tokens=False)["input_ids"],
                )
            )
    width = max(len(a) + len(b) for a, b in pairs)
    ids = torch.full((len(pairs), width), tokenizer.pad_token_id)
    labels = torch.full((len(pairs), width), -100)
    mask = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (a, b) in enumerate(pairs):
        ids[row, : len(a) + len(b)] = torch.tensor(a + b)
        labels[row, len(a) : len(a) + len(b)] = torch.tensor(b)
        mask[row, : len(a) + len(b)] = 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    model.eval()
    return model


def _hand_count(rows: list[dict]) -> dict[str, dict]:
    """Metrics recomputed from samples.jsonl alone: pass@k by enumerating k-subsets of each problem's
    samples, plain means for the rest."""
    by_bench: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_bench[row["benchmark"]][row["problem_index"]].append(row)
    out = {}
    for bench, problems in by_bench.items():
        samples = [s for p in problems.values() for s in p]
        n = len(next(iter(problems.values())))
        pass_k = {}
        for k in default_ks(n):
            per_problem = []
            for p in problems.values():
                subsets = list(itertools.combinations(p, k))
                per_problem.append(sum(any(s["correct"] for s in sub) for sub in subsets) / len(subsets))
            pass_k[f"pass@{k}"] = sum(per_problem) / len(per_problem)
        out[bench] = {
            "n_problems": len(problems),
            "n_samples": n,
            "pass@k": pass_k,
            "mean_length": sum(s["length"] for s in samples) / len(samples),
            "no_answer_rate": sum(s["verdict"] == "no_answer" for s in samples) / len(samples),
            "truncated_rate": sum(not s["terminated"] for s in samples) / len(samples),
            "correct_per_problem": [sum(s["correct"] for s in p) for p in problems.values()],
            "maj@k": {f"maj@{n}": sum(map(_string_majority, problems.values())) / len(problems)},
        }
    return out


def _string_majority(samples: list[dict]) -> bool:
    """A problem's majority vote by string equality of the boxed answers (the earliest wins a tie): what
    grouping by the verifier gives when no two different strings are equal numbers."""
    votes = [s["extracted"] for s in samples if s["extracted"] is not None]
    if not votes:
        return False
    best = max(dict.fromkeys(votes), key=votes.count)
    return next(s["correct"] for s in samples if s["extracted"] == best)


RESULT_FIELDS = {
    "source",
    "n_problems",
    "n_samples",
    "pass@k",
    "ci95",
    "mean_length",
    "no_answer_rate",
    "truncated_rate",
    "timeout_rate",
    "unscored_rate",
    "correct_per_problem",
    "problems_sha256",
}
METADATA_FIELDS = {
    "model",
    "backend",
    "device",
    "sampling",
    "seed",
    "ks",
    "limit",
    "system_prompt",
    "chat_template_sha256",
    "chat_template_kwargs",
    "reward",
    "ci",
    "date",
    "versions",
    "seconds",
    "command",
}


@pytest.mark.slow
def test_cli_end_to_end_on_two_schemas_matches_a_hand_count(tmp_path, tiny_path, tokenizer, capsys) -> None:
    from bnpo_trl.cli import main as cli_main

    benchmarks = load_benchmarks(SPECS, system_prompt=None)
    model = _memorize(load_model(tiny_path, device="cpu"), tokenizer, benchmarks)
    model.save_pretrained(tmp_path / "trained")
    tokenizer.save_pretrained(tmp_path / "trained")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model_name_or_path: {tmp_path / 'trained'}\nsystem_prompt: null\nmax_completion_length: 12\n"
        "reward_funcs: [{name: accuracy, timeout: 10.0}, boxed_format]\nbf16: true\n"
    )
    out = tmp_path / "out"
    cli_main(
        [
            "eval",
            "--config",
            str(recipe),
            "--benchmarks",
            SPECS,
            "--n",
            "4",
            "--temperature",
            "1.0",
            "--backend",
            "transformers",
            "--device",
            "cpu",
            "--output",
            str(out),
            "--baseline",
            tiny_path,
            "--no_progress",
            "--verify_workers",
            "1",
        ]
    )
    printed = capsys.readouterr().out
    assert "| math500 | 6 | 4 |" in printed and "| amc23 | 4 | 4 |" in printed and "Δ (95% CI)" in printed
    assert "maj@n (95% CI)" in printed

    results = json.loads((out / "results.json").read_text())
    meta = results["metadata"]
    assert set(meta) >= METADATA_FIELDS
    assert meta["sampling"]["max_new_tokens"] == 12 and meta["sampling"]["temperature"] == 1.0
    assert meta["system_prompt"] is None  # from the recipe
    assert meta["reward"] == json.dumps({"name": "accuracy", "timeout": 10.0, "workers": 1})
    assert meta["versions"]["math-verify"] and meta["backend"] == "transformers"
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert {"problem", "completion", "extracted", "gold", "verdict"} <= set(rows[0])
    assert rows[0]["problem"] == "What is $7 + 8$?" and rows[0]["gold"] == "15"
    counted = _hand_count(rows)
    assert list(results["results"]) == ["math500", "amc23"]
    for name, result in results["results"].items():
        assert set(result) >= RESULT_FIELDS
        for key in ("n_problems", "n_samples", "correct_per_problem"):
            assert result[key] == counted[name][key]
        for key in ("mean_length", "no_answer_rate", "truncated_rate"):
            assert result[key] == pytest.approx(counted[name][key])
        assert result["pass@k"] == pytest.approx(counted[name]["pass@k"])
        assert result["maj@k"] == pytest.approx(counted[name]["maj@k"])
        assert list(result["ci95"]) == [*result["pass@k"], *result["maj@k"]]
    assert results["average"]["pass@1"] == pytest.approx(
        np.mean([r["pass@k"]["pass@1"] for r in results["results"].values()])
    )
    # The fine-tuned model gives a mix of outcomes, so the counts above are not trivially all zero.
    verdicts = {row["verdict"] for row in rows}
    assert "correct" in verdicts and len(verdicts) >= 2
    assert all(row["extracted"] is not None for row in rows if row["extraction"] == "boxed")

    # Baseline: its own samples, and the difference is model - baseline.
    baseline_rows = [json.loads(line) for line in (out / "samples_baseline.jsonl").read_text().splitlines()]
    base_counted = _hand_count(baseline_rows)
    for name, diff in results["difference"].items():
        ours = results["results"][name]["pass@k"]["pass@1"]
        assert results["baseline"]["results"][name]["pass@k"]["pass@1"] == pytest.approx(
            base_counted[name]["pass@k"]["pass@1"]
        )
        assert diff["pass@k"]["pass@1"]["delta"] == pytest.approx(
            ours - base_counted[name]["pass@k"]["pass@1"]
        )


def test_evaluate_in_memory_is_seeded_and_leaves_rng_alone(tiny_path, tokenizer, tmp_path) -> None:
    model = load_model(tiny_path, device="cpu")
    benchmarks = load_benchmarks(SPECS, limit=2)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first = evaluate(
        model,
        tokenizer,
        benchmarks,
        n=2,
        max_new_tokens=4,
        progress=False,
        n_bootstrap=10,
        samples_path=tmp_path / "all.jsonl",
    )
    assert torch.equal(torch.get_rng_state(), state)  # a training run's random stream is untouched
    # A benchmark's samples do not depend on the other benchmarks of the run (a plain Dataset works too).
    only_amc = evaluate(
        model,
        tokenizer,
        {"amc23": benchmarks["amc23"].dataset},
        n=2,
        max_new_tokens=4,
        progress=False,
        samples_path=tmp_path / "amc.jsonl",
    )

    def completions(path, bench):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["completion"] for r in rows if r["benchmark"] == bench]

    assert completions(tmp_path / "amc.jsonl", "amc23") == completions(tmp_path / "all.jsonl", "amc23")
    assert len(set(completions(tmp_path / "amc.jsonl", "amc23"))) > 1  # sampled, not one repeated text
    assert only_amc["results"]["amc23"]["source"] == "in-memory dataset"
    table = format_table(first)
    assert table.splitlines()[0].startswith("| benchmark | problems | n | pass@1 (95% CI) | pass@2 |")
    assert "| average |" in table
    assert "Δ" in format_comparison(first, first, compare(first, first))
    with pytest.raises(ValueError, match="Lower --max_new_tokens to at most"):
        evaluate(model, tokenizer, benchmarks, n=1, max_new_tokens=600, progress=False)
    with pytest.raises(ValueError, match="--n 1"):
        evaluate(model, tokenizer, benchmarks, n=2, temperature=0.0, progress=False)


def test_cli_argument_errors(tiny_path) -> None:
    with pytest.raises(SystemExit, match="--model"):
        evaluation.main(["--benchmarks", MATH500])
    with pytest.raises(SystemExit, match="--k must be in"):
        evaluation.main(["--model", tiny_path, "--n", "2", "--k", "1,4", "--backend", "transformers"])


def test_eval_arguments_from_flags_config_and_recipe(tmp_path) -> None:
    parse_args = evaluation_cli.parse_args
    args = parse_args(["--model", "m"])
    assert (args.benchmarks, args.n, args.temperature, args.top_p, args.backend) == (
        "math500,aime24,aime25,amc23",
        4,
        0.6,
        0.95,
        "auto",
    )
    assert args.max_new_tokens is None and args.recipe is None and args.bootstrap == 1000
    assert not args.trust_remote_code and not args.no_progress
    flags = parse_args(["--model", "m", "--top-p", "0.5", "--no_progress", "--trust_remote_code"])
    assert flags.top_p == 0.5 and flags.no_progress and flags.trust_remote_code  # dashed names work too
    # An eval config: its keys are EvalArguments fields; flags override it.
    config = tmp_path / "eval.yaml"
    config.write_text("model: tiny:hidden_size=64\nn: 8\nk: '1,8'\nbackend: transformers\n")
    args = parse_args(["--config", str(config), "--n", "16"])
    assert (args.model, args.n, args.k, args.backend, args.recipe) == (
        "tiny:hidden_size=64",
        16,
        "1,8",
        "transformers",
        None,
    )
    # A training recipe given as --config (keys that are not eval options) is the recipe.
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: some/model\nsystem_prompt: null\nlearning_rate: 1.0e-6\n")
    args = parse_args(["--config", str(recipe), "--n", "2"])
    assert args.recipe == str(recipe) and args.n == 2 and args.model is None
    assert parse_args(["--recipe", str(recipe)]).recipe == str(recipe)
    with pytest.raises(SystemExit, match="two recipes"):
        parse_args(["--config", str(recipe), "--recipe", str(config)])
    read = evaluation_cli._read_recipe(str(recipe))
    assert read["model"] == "some/model" and read["system_prompt"] is None and read["reward"] == "accuracy"
    with pytest.raises(SystemExit, match="--model"):  # --recipe without model_name_or_path, no --model
        evaluation.main(["--recipe", str(config)])


def test_backends_share_one_protocol_and_the_worker_is_standalone() -> None:
    import ast

    from bnpo_trl.evaluation import Backend, TransformersBackend, core, make_backend
    from bnpo_trl.evaluation.vllm_backend import _WORKER

    assert all(callable(getattr(cls, "generate", None)) for cls in (TransformersBackend, VLLMBackend))
    assert make_backend(backend := SimpleNamespace(), None, None) is backend  # an object is used as is
    assert isinstance(TransformersBackend(SimpleNamespace(), None), Backend)
    assert "VLLMBackend" not in Path(core.__file__).read_text()  # the orchestrator does not switch on type
    with pytest.raises(ValueError, match="Unknown backend"):
        make_backend("tpu", None, None)
    tree = ast.parse(_WORKER.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= set(sys.stdlib_module_names) | {"vllm", "__future__"}
    assert not any(p.name == "vllm.py" for p in _WORKER.parent.iterdir())  # nothing to shadow vLLM


# ---------------------------------------------------------------------------------------- the callback


def test_callback_logs_pass_at_1(tiny_path, tokenizer) -> None:
    from bnpo_trl.evaluation import BenchmarkEvalCallback

    callback = BenchmarkEvalCallback(tokenizer, SPECS, eval_steps=2, limit=2, n=2, max_new_tokens=4)
    model = load_model(tiny_path, device="cpu")
    state = SimpleNamespace(global_step=1, is_world_process_zero=True, log_history=[])
    callback.on_step_end(None, state, None, model=model)
    assert state.log_history == []  # not an eval step
    state.global_step = 2
    callback.on_step_end(None, state, None, model=model)
    (logged,) = state.log_history
    assert logged["step"] == 2
    assert {
        "eval/math500/pass@1",
        "eval/amc23/pass@1",
        "eval/amc23/pass@2",
        "eval/math500/no_answer_rate",
    } <= set(logged)
    assert callback.history[0]["eval/math500/pass@1"] == logged["eval/math500/pass@1"]


@pytest.mark.slow
def test_callback_in_a_grpo_run_logs_through_the_trainer(tmp_path, tiny_path, tokenizer) -> None:
    from datasets import Dataset

    from bnpo_trl import NormalizedGRPOConfig, NormalizedGRPOTrainer
    from bnpo_trl.evaluation import BenchmarkEvalCallback
    from bnpo_trl.rewards import get_reward_funcs

    rows = [
        {"prompt": [{"role": "user", "content": f"What is {a} + 1?"}], "answer": str(a + 1)} for a in range(8)
    ]
    callback = BenchmarkEvalCallback(
        tokenizer, {"amc23": load_benchmarks(AMC23, limit=2)["amc23"]}, eval_steps=1, n=2, max_new_tokens=4
    )
    args = NormalizedGRPOConfig(**tiny_grpo_kwargs(tmp_path))
    trainer = NormalizedGRPOTrainer(
        model=load_model(tiny_path, device="cpu"),
        processing_class=tokenizer,
        reward_funcs=get_reward_funcs(["accuracy"]),
        args=args,
        train_dataset=Dataset.from_list(rows),
        callbacks=[callback],
    )
    callback.trainer = trainer
    trainer.train()
    evals = [h for h in trainer.state.log_history if "eval/amc23/pass@1" in h]
    trains = [h for h in trainer.state.log_history if "loss" in h]
    assert [h["step"] for h in evals] == [1, 2]
    assert len(trains) == 2 and all("rewards/accuracy/mean" in h for h in trains)  # train metrics not flushed


def test_eval_reads_a_local_file_through_its_column_map(tmp_path, tiny_path) -> None:
    from bnpo_trl.cli import main as cli_main

    data = tmp_path / "mine.jsonl"
    data.write_text(
        "\n".join(json.dumps({"question": f"What is {a} + 1?", "gold": str(a + 1)}) for a in range(3)) + "\n"
    )
    common = ["eval", "--model", tiny_path, "--benchmarks", str(data), "--n", "1", "--temperature", "0"]
    common += ["--max_new_tokens", "2", "--backend", "transformers", "--device", "cpu", "--no_progress"]
    common += ["--verify_workers", "1", "--bootstrap", "0"]
    with pytest.raises(ValueError, match=r"--column_map '\{\"problem\": \"<column>\"\}'"):
        cli_main([*common, "--output", str(tmp_path / "no-map")])
    column_map = json.dumps({"problem": "question", "answer": "gold"})
    cli_main([*common, "--output", str(tmp_path / "out"), "--column_map", column_map])
    results = json.loads((tmp_path / "out" / "results.json").read_text())["results"]
    assert results["mine"]["n_problems"] == 3
    rows = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in rows] == ["1", "2", "3"] and rows[0]["problem"] == "What is 0 + 1?"
