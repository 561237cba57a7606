"""Tests of the dataset loaders (bnpo_trl.data), offline, on the fixture files in tests/fixtures/data/."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml
from datasets import Dataset

from bnpo_trl import data, tasks
from bnpo_trl.answers import extract_gsm8k_answer, last_boxed, normalize_answer
from bnpo_trl.data import (
    DATASETS,
    DEFAULT_SYSTEM_PROMPT,
    DatasetSpec,
    MixtureEntry,
    apply_curriculum,
    available_datasets,
    extract_dapo_problem,
    load_dataset_by_name,
    load_local,
    load_mixture,
    load_schema_source,
    mixture_sizes,
    register_dataset,
)
from bnpo_trl.data import registry as data_registry

FIXTURES = Path(__file__).parent / "fixtures" / "data"
FILES = {
    "math": "math_lighteval.jsonl",
    "math500": "math500.jsonl",
    "gsm8k": "gsm8k.jsonl",
    "aime24": "aime24.jsonl",
    "aime25": "aime25.jsonl",
    "amc23": "amc23.parquet",
    "dapo": "dapo_math_17k.jsonl",
}
CONTRACT = ["prompt", "answer", "data_source", "difficulty"]


def fixture(name: str) -> str:
    return str(FIXTURES / FILES[name])


def load(name: str, **kwargs) -> Dataset:
    return load_dataset_by_name(name, path=fixture(name), **kwargs)


def user_text(row: dict) -> str:
    return row["prompt"][-1]["content"]


# ------------------------------------------------------------------------------------------ answer parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$\\boxed{5}$", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}"),
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("$\\boxed 5$.", "5"),
        ("so \\boxed 12.", "12"),
        ("\\fbox{0, 2}", "0, 2"),
        ("\\boxed {7}", "7"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\left\\{ x \\right.}", "\\left\\{ x \\right."),
        ("\\boxed{a \\\\ {b}}", "a \\\\ {b}"),
        ("\\boxed{3} and an unclosed \\boxed{4", "3"),
        ("\\boxedx{3}", None),
        ("no answer here", None),
        ("", None),
        (None, None),
    ],
)
def test_extract_boxed(text: str | None, expected: str | None) -> None:
    assert last_boxed(text) == expected


def test_old_names_stay_importable_from_data() -> None:
    assert data.extract_boxed is last_boxed
    assert data.extract_gsm8k_answer is extract_gsm8k_answer
    assert data.normalize_answer is normalize_answer
    assert all(hasattr(data, name) for name in data.__all__)


def test_extract_gsm8k_answer() -> None:
    assert extract_gsm8k_answer("step\n#### 1,080") == "1080"
    assert extract_gsm8k_answer("x #### 5 #### 72") == "72"
    assert extract_gsm8k_answer("#### -7") == "-7"
    with pytest.raises(ValueError, match="no '####'"):
        extract_gsm8k_answer("The answer is 5.")


def test_normalize_answer() -> None:
    assert normalize_answer(27.0) == "27"
    assert normalize_answer(-3.0) == "-3"
    assert normalize_answer(0.25) == "0.25"
    assert normalize_answer(7) == "7"
    assert normalize_answer(" \\frac{1}{2} ") == "\\frac{1}{2}"
    assert normalize_answer(float("nan")) is None
    assert normalize_answer("") is None
    assert normalize_answer(None) is None


def test_extract_dapo_problem() -> None:
    wrapped = (
        "Solve the following math problem step by step. The last line of your response should be of the form "
        "Answer: $Answer (without quotes) where $Answer is the answer to the problem.\n\nWhat is $1+1$?\n\n"
        'Remember to put your answer on its own line after "Answer:".'
    )
    assert extract_dapo_problem(wrapped) == "What is $1+1$?"
    assert extract_dapo_problem("  A plain problem.  ") == "A plain problem."


# ------------------------------------------------------------------------------------------------ schemas


def test_registry_lists_every_source() -> None:
    assert set(available_datasets()) == {
        "arithmetic",
        "arithmetic_mix",
        "math",
        "math500",
        "gsm8k",
        "aime24",
        "aime25",
        "amc23",
        "dapo",
        "local",
    }
    assert DATASETS["gsm8k"].config == "main"
    assert DATASETS["math500"].default_split == "test"


@pytest.mark.parametrize("name", sorted(FILES))
def test_every_source_gives_the_column_contract(name: str) -> None:
    ds = load(name)
    assert ds.column_names == CONTRACT
    assert len(ds) >= 5
    for row in ds:
        assert row["prompt"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
        assert [m["role"] for m in row["prompt"]] == ["system", "user"]
        assert user_text(row).strip() and row["answer"] and isinstance(row["answer"], str)
        assert row["data_source"] == name
        assert (row["difficulty"] is not None) == DATASETS[name].has_difficulty or name == "math"


def test_math_gold_is_last_boxed_and_difficulty_is_level() -> None:
    ds = load("math")
    assert len(ds) == 7  # the fixture row without \boxed is dropped
    assert ds["answer"] == ["\\frac{5}{6}", "6", "2", "24", "\\frac{\\sqrt{3}}{2}", "10", "0, 2"]
    assert ds["difficulty"] == [1.0, 2.0, 3.0, 4.0, 5.0, None, 2.0]  # "Level ?" -> None
    assert user_text(ds[0]).startswith("What is $\\frac{1}{2} + \\frac{1}{3}$?")


def test_math500_uses_answer_column_and_int_level() -> None:
    ds = load("math500", keep_columns=["unique_id"])
    assert ds[0]["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert ds["difficulty"] == [2.0, 1.0, 3.0, 5.0, 4.0, 2.0]
    assert ds[1]["unique_id"] == "test/algebra/2263.json"


def test_gsm8k_gold_after_hashes_without_commas() -> None:
    ds = load("gsm8k")
    assert ds["answer"] == ["72", "10", "1080", "27", "20", "-7"]
    assert user_text(ds[0]).startswith("Natalia sold clips")
    assert set(ds["difficulty"]) == {None}


def test_aime_sources() -> None:
    aime24 = load("aime24")
    assert aime24["answer"] == ["780", "91", "001", "8", "900"]
    aime25 = load("aime25")
    assert aime25["answer"] == ["45", "12", "512", "257", "13"]


def test_amc23_float_answers_are_normalised() -> None:
    ds = load("amc23")
    assert ds["answer"] == ["27", "36", "8", "0.25", "3159", "18"]
    assert user_text(ds[0]).startswith("Cities $A$ and $B$")


def test_amc23_accepts_a_problem_column_instead_of_question(tmp_path: Path) -> None:
    path = tmp_path / "amc_problem.jsonl"
    path.write_text(
        "".join(json.dumps({"problem": f"P{i}?", "answer": float(i)}) + "\n" for i in range(1, 4))
    )
    ds = load_dataset_by_name("amc23", path=str(path), system_prompt=None)
    assert [user_text(r) for r in ds] == ["P1?", "P2?", "P3?"] and ds["answer"] == ["1", "2", "3"]
    path.write_text(json.dumps({"text": "P?", "answer": 1.0}) + "\n")
    with pytest.raises(ValueError, match=re.escape("lacks the column(s) ['question']")):
        load_dataset_by_name("amc23", path=str(path))


def test_dapo_problem_extracted_and_deduplicated() -> None:
    ds = load("dapo")
    assert len(ds) == 5  # 7 rows in the fixture, 2 repeats
    assert ds["answer"] == ["34", "15", "111", "170", "14"]
    for row in ds:
        assert "Answer:" not in user_text(row) and "Solve the following" not in user_text(row)
    assert (
        user_text(ds[1])
        == "Find the smallest positive integer $n$ such that $n!$ ends in at least $3$ zeros."
    )
    assert len(load("dapo", dedupe=False)) == 7


def test_system_prompt_none_limit_template_and_data_source() -> None:
    ds = load("gsm8k", system_prompt=None, limit=2, user_template="Problem: {problem}", data_source="gsm")
    assert len(ds) == 2
    assert [m["role"] for m in ds[0]["prompt"]] == ["user"]
    assert user_text(ds[0]).startswith("Problem: Natalia")
    assert set(ds["data_source"]) == {"gsm"}
    custom = load("math", system_prompt="Be brief.")
    assert custom[0]["prompt"][0] == {"role": "system", "content": "Be brief."}


def test_aliases_resolve() -> None:
    assert load_dataset_by_name("MATH-500", path=fixture("math500"))["data_source"][0] == "math500"
    assert len(load_dataset_by_name("dapo-math-17k", path=fixture("dapo"))) == 5


def test_hub_path_calls_load_dataset_with_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Hub code path, without the network: load_dataset is replaced by a fixture reader."""
    import datasets

    calls: list[tuple] = []
    gsm8k_rows = Dataset.from_json(fixture("gsm8k"))

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        return gsm8k_rows

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_dataset_by_name("gsm8k")
    assert calls[-1] == ("openai/gsm8k", "main", {"split": "train"})
    assert len(ds) == 6
    load_dataset_by_name("gsm8k", split="test", hub_id="me/gsm8k-copy", revision="abc")
    assert calls[-1] == ("me/gsm8k-copy", "main", {"split": "test", "revision": "abc"})
    with pytest.raises(ValueError, match="lacks the column"):
        load_dataset_by_name("aime24")  # the gsm8k rows have no 'problem' column


# ------------------------------------------------------------------------------------------- local files


def test_local_csv_with_column_map() -> None:
    ds = load_dataset_by_name(
        "local",
        path=str(FIXTURES / "local_custom.csv"),
        column_map={
            "problem": "question",
            "answer": "final",
            "difficulty": "hardness",
            "data_source": "origin",
        },
    )
    assert ds.column_names == CONTRACT
    assert ds["answer"] == ["144", "12", "5", "10", "48", "385"]
    assert ds["difficulty"] == [1.0, 2.0, 2.0, 3.0, 1.0, 4.0]
    assert Counter(ds["data_source"]) == {"drill": 3, "algebra": 2, "number_theory": 1}


def test_local_json_array_defaults_and_round_trip(tmp_path: Path) -> None:
    ds = load_local(FIXTURES / "local_passrate.json", keep_columns=["pass_rate"])
    assert ds["answer"] == ["15", "391", "55", "1024", "12"]  # ints become strings
    assert set(ds["data_source"]) == {"local_passrate"}
    assert set(ds["difficulty"]) == {None}
    # A file written from a loaded dataset (prompt = message list) loads back with the same rows.
    out = tmp_path / "roundtrip.jsonl"
    load("aime25").to_json(str(out))
    again = load_local(out, {"problem": "prompt"}, data_source="aime25")
    assert again.to_list() == load("aime25").to_list()


@pytest.mark.parametrize("suffix", ["jsonl", "parquet"])
def test_local_file_formats(tmp_path: Path, suffix: str) -> None:
    rows = [{"q": f"What is {i} + {i}?", "a": 2 * i, "lvl": i} for i in range(1, 6)]
    path = tmp_path / f"mine.{suffix}"
    if suffix == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        Dataset.from_list(rows).to_parquet(str(path))
    ds = load_local(path, {"problem": "q", "answer": "a", "difficulty": "lvl"}, system_prompt=None)
    assert ds["answer"] == ["2", "4", "6", "8", "10"]
    assert ds["difficulty"] == [1.0, 2.0, 3.0, 4.0, 5.0]


# ------------------------------------------------------------------------------------------------ errors


def test_missing_answer_column_names_the_mapping_option() -> None:
    with pytest.raises(
        ValueError, match=r"Column 'answer' \(the answer\).*column_map=\{'answer': '<column>'\}"
    ):
        load_dataset_by_name(
            "local", path=str(FIXTURES / "local_custom.csv"), column_map={"problem": "question"}
        )
    with pytest.raises(ValueError, match=r"'final_answer'.*column_map"):
        load_local(FIXTURES / "local_custom.csv", {"problem": "question", "answer": "final_answer"})


def test_missing_problem_column_and_bad_keys() -> None:
    with pytest.raises(ValueError, match=r"Column 'problem' \(the problem\)"):
        load_local(FIXTURES / "local_custom.csv", {"answer": "final"})
    with pytest.raises(ValueError, match="Unknown column_map keys"):
        load_local(FIXTURES / "local_custom.csv", {"question": "question"})
    with pytest.raises(ValueError, match="only for the 'local' dataset"):
        load("gsm8k", column_map={"problem": "question"})
    with pytest.raises(ValueError, match="needs path="):
        load_dataset_by_name("local")


def test_wrong_schema_for_named_source() -> None:
    with pytest.raises(ValueError, match=r"lacks the column\(s\) \['question'\].*name='local'"):
        load_dataset_by_name("gsm8k", path=fixture("aime25"))


def test_empty_after_filtering(tmp_path: Path) -> None:
    path = tmp_path / "nobox.jsonl"
    path.write_text(
        json.dumps({"problem": "p", "solution": "no box here", "level": "Level 1", "type": "x"}) + "\n"
    )
    with pytest.raises(ValueError, match="empty after filtering: 1 rows read, 1 without a problem or gold"):
        load_dataset_by_name("math", path=str(path))
    with pytest.raises(ValueError, match="empty after filtering"):
        load("gsm8k", limit=0)


def test_unknown_name_lists_available() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "Unknown dataset name 'mathz'. Available: aime24, aime25, amc23, arithmetic, arithmetic_mix, dapo"
        ),
    ):
        load_dataset_by_name("mathz")


def test_bad_paths() -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        load_local(FIXTURES / "missing.jsonl")
    with pytest.raises(ValueError, match=re.escape("extension '.txt'")):
        load_local(FIXTURES / "notes.txt")
    with pytest.raises(ValueError, match=r"\{problem\}"):
        load("gsm8k", user_template="no placeholder")


# ---------------------------------------------------------------------------------------------- mixtures


def test_mixture_sizes_rule() -> None:
    assert mixture_sizes([7, 6], [0.7, 0.3]) == [7, 3]  # T = min(7/0.7, 6/0.3) = 10
    assert mixture_sizes([100, 100], [1, 1]) == [100, 100]
    assert mixture_sizes([10, 10], [0.5, 0.5], total=7) in ([4, 3], [3, 4])
    assert sum(mixture_sizes([5, 5, 5], [1, 1, 1], total=10)) == 10
    assert mixture_sizes([5, 5], [1, 0]) == [5, 0]
    with pytest.raises(ValueError, match="weights must be finite numbers >= 0"):
        mixture_sizes([5, 5], [1, -1])
    with pytest.raises(ValueError, match="must not all be 0"):
        mixture_sizes([5, 5], [0, 0])


def _specs(math_weight: float = 0.7, gsm_weight: float = 0.3) -> list[dict]:
    text = f"""
    - name: math
      weight: {math_weight}
      path: {fixture("math")}
    - name: gsm8k
      weight: {gsm_weight}
      split: train
      path: {fixture("gsm8k")}
    """
    return yaml.safe_load(text)


def test_mixture_default_has_no_repeats_and_weight_proportions() -> None:
    mixed = load_mixture(_specs(), seed=0)
    assert mixed.column_names == CONTRACT
    assert Counter(mixed["data_source"]) == {"math": 7, "gsm8k": 3}
    prompts = [user_text(r) for r in mixed]
    assert len(set(prompts)) == len(prompts)
    # Shuffled: not all math rows first
    assert mixed["data_source"] != sorted(mixed["data_source"], key=lambda s: s != "math")


def test_mixture_with_total_upsamples_and_is_seeded() -> None:
    mixed = load_mixture(_specs(), seed=3, total=20)
    counts = Counter(mixed["data_source"])
    assert counts == {"math": 14, "gsm8k": 6}
    math_rows = Counter(user_text(r) for r in mixed if r["data_source"] == "math")
    assert sorted(math_rows.values()) == [2] * 7  # 14 draws over 7 rows: each exactly twice
    again = load_mixture(_specs(), seed=3, total=20)
    assert again.to_list() == mixed.to_list()
    other = load_mixture(_specs(), seed=4, total=20)
    assert other.to_list() != mixed.to_list()


def test_mixture_spec_errors() -> None:
    with pytest.raises(ValueError, match="unknown keys \\['wieght'\\]"):
        load_mixture([{"name": "math", "wieght": 1, "path": fixture("math")}])
    with pytest.raises(ValueError, match="non-empty list"):
        load_mixture([])
    with pytest.raises(ValueError, match="'name' key"):
        load_mixture([{"weight": 1}])
    with pytest.raises(ValueError, match="Unknown dataset name"):
        load_mixture([{"name": "nope"}])


def test_mixture_entries_as_dataclasses_match_mappings() -> None:
    entries = [MixtureEntry(**spec) for spec in _specs()]
    assert (
        load_mixture(entries, seed=2, total=12).to_list()
        == load_mixture(_specs(), seed=2, total=12).to_list()
    )
    assert MixtureEntry.from_mapping({"name": "math"}) == MixtureEntry("math")
    with pytest.raises(
        ValueError, match=r"Mixture entry 1 \('gsm8k'\) has unknown keys \['num_proc'\]; allowed: "
    ):
        load_mixture([entries[0], {"name": "gsm8k", "num_proc": 2}])


def test_mixture_system_prompt_per_spec() -> None:
    specs = _specs()
    specs[1]["system_prompt"] = None
    mixed = load_mixture(specs, seed=0, system_prompt="Mixture prompt.")
    for row in mixed:
        roles = [m["role"] for m in row["prompt"]]
        if row["data_source"] == "gsm8k":
            assert roles == ["user"]
        else:
            assert row["prompt"][0]["content"] == "Mixture prompt."


# -------------------------------------------------------------------------------------------- registry


@pytest.fixture
def restore_registry():
    saved = dict(DATASETS), dict(data_registry._ALIASES)
    yield
    DATASETS.clear()
    DATASETS.update(saved[0])
    data_registry._ALIASES.clear()
    data_registry._ALIASES.update(saved[1])


@pytest.mark.usefixtures("restore_registry")
def test_register_dataset_adds_a_named_source(tmp_path: Path) -> None:
    path = tmp_path / "drill.jsonl"
    path.write_text("".join(json.dumps({"q": f"What is {i} * 3?", "a": 3 * i}) + "\n" for i in range(1, 5)))

    def parse(row):
        return {"problem": row["q"], "answer": normalize_answer(row["a"]), "difficulty": None}

    spec = DatasetSpec(
        name="drill", load=load_schema_source, hub_id="me/drill", required_columns=("q", "a"), parser=parse
    )
    assert register_dataset(spec) is spec and DATASETS["drill"] is spec
    ds = load_dataset_by_name("drill", path=str(path))
    assert ds.column_names == CONTRACT and ds["answer"] == ["3", "6", "9", "12"]
    assert set(ds["data_source"]) == {"drill"}
    mixed = load_mixture([{"name": "drill", "path": str(path)}, {"name": "gsm8k", "path": fixture("gsm8k")}])
    assert Counter(mixed["data_source"]) == {"drill": 4, "gsm8k": 4}  # equal weights, T = 2 * 4
    with pytest.raises(ValueError, match=r"Cannot register dataset 'drill'"):
        register_dataset(spec)
    with pytest.raises(ValueError, match=r"\['math-500'\] already registered"):
        register_dataset(DatasetSpec(name="other", load=load_schema_source, aliases=("math-500",)))
    renamed = DatasetSpec(
        name="drill",
        load=spec.load,
        required_columns=spec.required_columns,
        parser=parse,
        aliases=("drills",),
    )
    register_dataset(renamed, replace=True)
    assert load_dataset_by_name("DRILLS", path=str(path))["answer"] == ["3", "6", "9", "12"]


def test_arithmetic_is_registered_by_tasks() -> None:
    assert DATASETS["arithmetic"] is tasks.ARITHMETIC and DATASETS["arithmetic"].load is tasks.load_arithmetic


# -------------------------------------------------------------------------------------------- curriculum


def test_curriculum_none_is_identity() -> None:
    ds = load("math500")
    assert apply_curriculum(ds, "none") is ds


def test_curriculum_sorts_by_difficulty_stably_missing_last() -> None:
    ds = load("math")
    ordered = apply_curriculum(ds, "difficulty")
    assert ordered["difficulty"] == [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, None]
    # Equal difficulty keeps the original order ("Solve for $x$" came before "Find all real numbers").
    twos = [user_text(r) for r in ordered if r["difficulty"] == 2.0]
    assert twos[0].startswith("Solve for $x$") and twos[1].startswith("Find all real numbers")


def test_curriculum_pass_rate_higher_is_easier() -> None:
    ds = load_local(FIXTURES / "local_passrate.json", keep_columns=["pass_rate"])
    ordered = apply_curriculum(ds, "difficulty", column="pass_rate")
    assert ordered["pass_rate"] == [0.9, 0.9, 0.7, 0.4, 0.1]
    assert ordered["answer"][:2] == ["15", "1024"]  # ties keep file order
    reverse = apply_curriculum(ds, "difficulty", column="pass_rate", higher_is_easier=False)
    assert reverse["pass_rate"] == [0.1, 0.4, 0.7, 0.9, 0.9]


def test_curriculum_errors() -> None:
    ds = load("gsm8k")
    with pytest.raises(ValueError, match="column 'pass_rate'"):
        apply_curriculum(ds, "difficulty", column="pass_rate")
    with pytest.raises(ValueError, match="no numeric values"):
        apply_curriculum(ds, "difficulty")  # gsm8k has no difficulty
    with pytest.raises(ValueError, match="Unknown curriculum 'hardest'; choose one of none, difficulty"):
        apply_curriculum(ds, "hardest")


def test_module_logger_name() -> None:
    assert data.logger.name == "bnpo_trl.data"


def test_arithmetic_splits_are_disjoint_and_correct() -> None:
    train = load_dataset_by_name("arithmetic", split="train", limit=3000, system_prompt=None)
    test = load_dataset_by_name("arithmetic", split="test", limit=200, system_prompt=None)
    pairs = {
        split: {r["prompt"][-1]["content"] for r in ds} for split, ds in (("train", train), ("test", test))
    }
    assert not pairs["train"] & pairs["test"]
    assert len(pairs["test"]) == 200  # held-out problems are drawn without repetition
    for row in test:
        a, b = (int(x) for x in row["prompt"][-1]["content"][len("What is ") : -1].split(" + "))
        assert 50 <= a <= 99 and 50 <= b <= 99 and len(row["answer"]) == 3  # every sum has three digits
        assert row["answer"] == str(a + b) and row["completion"][0]["content"] == f"\\boxed{{{a + b}}}"
        assert row["difficulty"] == float(a % 10 + b % 10 >= 10)


@pytest.mark.parametrize("split", ["dev", "test"])
def test_arithmetic_heldout_split_repeats_only_past_its_pool(split: str) -> None:
    pool = {(a, b) for a in range(50, 100) for b in range(50, 100) if tasks._split_of(a, b) == split}
    rows = tasks.arithmetic_dataset(split, size=len(pool) + 10)
    questions = [row["prompt"][-1]["content"] for row in rows]
    assert set(questions) == {f"What is {a} + {b}?" for a, b in pool}  # the whole pool, then repeats
    assert len(questions) == len(pool) + 10


def test_a_mixture_entry_takes_exactly_the_loader_options():
    # MixtureEntry repeats LoadOptions' fields (with a per-mixture system_prompt default): keep them in step
    import dataclasses

    from bnpo_trl.data.mixture import MixtureEntry
    from bnpo_trl.data.registry import LoadOptions

    entry = {f.name for f in dataclasses.fields(MixtureEntry)} - {"name", "weight"}
    options = {f.name for f in dataclasses.fields(LoadOptions)} - {"num_proc", "cache_dir", "report"}
    assert entry == options


def test_arithmetic_mix_tags_sources_of_different_kinds_and_holds_out_pairs() -> None:
    from bnpo_trl.tasks import MIX_SOURCES, arithmetic_mix_dataset

    train = arithmetic_mix_dataset("train", 4000)
    counts = {s: list(train["data_source"]).count(s) for s in MIX_SOURCES}
    assert abs(counts["add2"] / 4000 - 0.5) < 0.03 and abs(counts["mul"] / 4000 - 0.25) < 0.03
    test = load_dataset_by_name("arithmetic_mix", split="test", limit=30, system_prompt=None)
    assert [list(test["data_source"]).count(s) for s in MIX_SOURCES] == [10, 10, 10]
    seen = {r["prompt"][-1]["content"] for r in train}
    for row in test:
        question = row["prompt"][-1]["content"]
        assert question not in seen  # held-out pairs are never trained on
        a, op, b = question.removeprefix("What is ").removesuffix("?").split()
        assert row["answer"] == str(int(a) + int(b) if op == "+" else int(a) * int(b))
        assert row["completion"][0]["content"] == f"\\boxed{{{row['answer']}}}"
    with pytest.raises(ValueError, match="weights must map"):
        arithmetic_mix_dataset("train", 10, weights={"div": 1.0})
