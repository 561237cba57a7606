"""Dataset loaders for RL with verifiable rewards on math.

Every loader returns a ``datasets.Dataset`` with this column contract:

- ``prompt``: conversational prompt, a list of ``{"role", "content"}`` messages: an optional system
  message (``system_prompt``; ``None`` omits it) followed by one user message holding the problem.
- ``answer``: the gold answer as a string (e.g. ``"27"``, ``"\\frac{1}{2}"``).
- ``data_source``: a string naming where the row came from (the registry name by default).
- ``difficulty``: always present, ``float`` or ``None``. MATH and MATH-500 give the level (1-5);
  GSM8K, AIME, AMC and DAPO give ``None``; local files give the column mapped as ``difficulty``
  (else ``None``).

Columns named in ``keep_columns`` are carried over from the source as they are.

Sources (``DATASETS``): ``math`` (MATH train, ``DigitalLearningGmbH/MATH-lighteval``; gold = last
``\\boxed{}`` of the solution), ``math500``, ``gsm8k`` (gold after ``####``, commas removed),
``aime24``, ``aime25``, ``amc23`` (float answers normalised: ``27.0`` -> ``"27"``), ``dapo``
(``BytedTsinghua-SIA/DAPO-Math-17k``, verl format; duplicates removed by default) and ``local``
(any ``jsonl``/``json``/``parquet``/``csv`` file with a ``column_map``). Every Hub source also takes
``path=`` to read a local file of the same schema instead, which is how the tests run offline.

Mixtures (:func:`load_mixture`) and a difficulty curriculum (:func:`apply_curriculum`) are built on top.
See ``docs/data.md`` for the full rules.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets

logger = logging.getLogger(__name__)

__all__ = [
    "CURRICULA",
    "DATASETS",
    "DEFAULT_SYSTEM_PROMPT",
    "DatasetSpec",
    "apply_curriculum",
    "available_datasets",
    "extract_boxed",
    "extract_dapo_problem",
    "extract_gsm8k_answer",
    "load_dataset_by_name",
    "load_local",
    "load_mixture",
    "mixture_sizes",
    "normalize_answer",
]

DEFAULT_SYSTEM_PROMPT = "Please reason step by step, and put your final answer within \\boxed{}."

#: Curricula accepted by :func:`apply_curriculum`.
CURRICULA = ("none", "difficulty")

#: Columns where a higher value means an easier problem (used when ``higher_is_easier`` is not given).
_EASY_WHEN_HIGH = ("pass_rate", "pass@1", "pass_at_1", "solve_rate", "accuracy", "acc")

_LOCAL_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}

#: Output features, fixed so that datasets from different sources concatenate.
_FEATURES = Features(
    {
        "prompt": List({"role": Value("string"), "content": Value("string")}),
        "answer": Value("string"),
        "data_source": Value("string"),
        "difficulty": Value("float64"),
    }
)


# --------------------------------------------------------------------------------------- answer parsing


def _skip_spaces(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _braced_group(text: str, start: int) -> tuple[str, int] | None:
    """Content of the brace group opening at ``text[start] == "{"`` and the index after it.

    Escaped braces (``\\{``, ``\\}``) and other backslash pairs (``\\\\``) do not count. Returns
    ``None`` when the group never closes.
    """
    depth = 0
    i = start
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None


_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def extract_boxed(text: str | None) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``; ``None`` if there is none.

    Handles nested braces (``\\boxed{\\frac{1}{2}}``), escaped braces (``\\boxed{\\{1, 2\\}}``),
    whitespace before the brace and the brace-less form ``\\boxed 5`` (up to the next space or ``$``).
    An unclosed ``\\boxed{`` is ignored.

    Examples:
        >>> extract_boxed("so $x = \\\\boxed{\\\\frac{1}{2}}$ and later \\\\boxed{7}")
        '7'
        >>> extract_boxed("The answer is $\\\\boxed 5$.")
        '5'
        >>> extract_boxed("\\\\fbox{\\\\{1,2\\\\}}")
        '\\\\{1,2\\\\}'
        >>> extract_boxed("no box") is None
        True
    """
    if not text:
        return None
    found: str | None = None
    for match in _BOXED_RE.finditer(text):
        i = _skip_spaces(text, match.end())
        if i < len(text) and text[i] == "{":
            group = _braced_group(text, i)
            if group is not None:
                found = group[0].strip()
        elif i > match.end() and i < len(text):  # "\boxed 5": a space, then a bare token
            j = i
            while j < len(text) and not text[j].isspace() and text[j] != "$":
                j += 1
            token = text[i:j].rstrip(".,;")
            if token:
                found = token
    return found


def extract_gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: the text after the last ``####``, commas removed.

    Examples:
        >>> extract_gsm8k_answer("She pays 2 * 600 = 1,200 dollars.\\n#### 1,200")
        '1200'
    """
    if "####" not in solution:
        raise ValueError(f"GSM8K answer has no '####' marker: {solution[-80:]!r}")
    answer = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1]
    if answer.startswith("$"):
        answer = answer[1:].strip()
    return answer


def normalize_answer(value: Any) -> str | None:
    """Gold answer as a string: numbers lose a trailing ``.0`` (``27.0`` -> ``"27"``), strings are stripped.

    ``None``, NaN and empty strings give ``None`` (the row is then dropped by the loaders).

    Examples:
        >>> normalize_answer(27.0), normalize_answer(0.5), normalize_answer(" 12 "), normalize_answer(3)
        ('27', '0.5', '12', '3')
    """
    if value is None or isinstance(value, bool):
        return None if value is None else str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if math.isnan(value) or math.isinf(value):
            return None
        if float(value).is_integer():
            return str(int(value))
        return repr(float(value))
    text = str(value).strip()
    return text or None


_DAPO_RE = re.compile(
    r"^\s*Solve the following math problem step by step\..*?\n\n(?P<problem>.*)\n\n"
    r"Remember to put your answer on its own line after \"Answer:\"\.?\s*$",
    re.DOTALL,
)


def extract_dapo_problem(content: str) -> str:
    """The problem text inside a DAPO-Math-17k user message (which wraps it in answer-format instructions).

    DAPO prompts read ``"Solve the following math problem step by step. The last line of your response
    should be of the form Answer: $Answer ...\\n\\n{problem}\\n\\nRemember to put your answer on its own
    line after \\"Answer:\\"."``. Content that does not follow this template is returned stripped.
    """
    match = _DAPO_RE.match(content)
    return match.group("problem").strip() if match else content.strip()


def _math_level(level: Any) -> float | None:
    """``"Level 3"`` -> 3.0, ``4`` -> 4.0, ``"Level ?"`` / missing -> ``None``."""
    if level is None:
        return None
    if isinstance(level, (int, float, np.integer, np.floating)) and not isinstance(level, bool):
        return None if isinstance(level, float) and math.isnan(level) else float(level)
    match = re.search(r"-?\d+(?:\.\d+)?", str(level))
    return float(match.group()) if match else None


def _as_float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return _math_level(value)
    return None if math.isnan(number) else number


def _last_user_content(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return str(message.get("content") or "")
    raise ValueError("A prompt message list has no user message.")


# ------------------------------------------------------------------------------------------ row parsing

#: A row parser turns one source row into ``{"problem", "answer", "difficulty"}`` (answer may be None).
RowParser = Callable[[Mapping[str, Any]], dict[str, Any]]


def _parse_math(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "problem": row["problem"],
        "answer": extract_boxed(row["solution"]),
        "difficulty": _math_level(row.get("level")),
    }


def _parse_math500(row: Mapping[str, Any]) -> dict[str, Any]:
    answer = normalize_answer(row.get("answer")) or extract_boxed(row.get("solution"))
    return {"problem": row["problem"], "answer": answer, "difficulty": _math_level(row.get("level"))}


def _parse_gsm8k(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"problem": row["question"], "answer": extract_gsm8k_answer(row["answer"]), "difficulty": None}


def _parse_problem_answer(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"problem": row["problem"], "answer": normalize_answer(row["answer"]), "difficulty": None}


def _parse_amc(row: Mapping[str, Any]) -> dict[str, Any]:
    problem = row.get("question") or row.get("problem")
    return {"problem": problem, "answer": normalize_answer(row["answer"]), "difficulty": None}


def _parse_dapo(row: Mapping[str, Any]) -> dict[str, Any]:
    reward_model = row.get("reward_model") or {}
    return {
        "problem": extract_dapo_problem(_last_user_content(row["prompt"])),
        "answer": normalize_answer(reward_model.get("ground_truth")),
        "difficulty": None,
    }


@dataclass(frozen=True)
class DatasetSpec:
    """One registered source: where it lives on the Hub and how its rows map to the column contract.

    Attributes:
        name: Registry name (also the default ``data_source``).
        hub_id: Default Hugging Face Hub dataset id (``hub_id=`` overrides it per call).
        config: Hub config name, if any.
        default_split: Split used when ``split`` is not given.
        required_columns: Source columns the parser needs (checked with a clear error).
        parser: Row parser, or ``None`` for the ``local`` source (which uses ``column_map``).
        has_difficulty: Whether the source gives a difficulty.
        dedupe: Whether duplicate problems are dropped by default (DAPO-Math-17k repeats each ~100x).
        description: One line for listings.
    """

    name: str
    hub_id: str | None
    config: str | None
    default_split: str
    required_columns: tuple[str, ...]
    parser: RowParser | None
    has_difficulty: bool = False
    dedupe: bool = False
    description: str = ""
    aliases: tuple[str, ...] = field(default=())


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        DatasetSpec(
            "math",
            "DigitalLearningGmbH/MATH-lighteval",
            None,
            "train",
            ("problem", "solution"),
            _parse_math,
            has_difficulty=True,
            description="MATH (Hendrycks) train/test; gold = last \\boxed{} of the solution; difficulty = level",
            aliases=("math-lighteval", "hendrycks_math", "math_train"),
        ),
        DatasetSpec(
            "math500",
            "HuggingFaceH4/MATH-500",
            None,
            "test",
            ("problem", "answer"),
            _parse_math500,
            has_difficulty=True,
            description="MATH-500 test subset; difficulty = level",
            aliases=("math-500", "math_500"),
        ),
        DatasetSpec(
            "gsm8k",
            "openai/gsm8k",
            "main",
            "train",
            ("question", "answer"),
            _parse_gsm8k,
            description="GSM8K; gold after '####', commas removed",
        ),
        DatasetSpec(
            "aime24",
            "HuggingFaceH4/aime_2024",
            None,
            "train",
            ("problem", "answer"),
            _parse_problem_answer,
            description="AIME 2024 (30 problems)",
            aliases=("aime_2024", "aime2024"),
        ),
        DatasetSpec(
            "aime25",
            "math-ai/aime25",
            None,
            "test",
            ("problem", "answer"),
            _parse_problem_answer,
            description="AIME 2025 (30 problems)",
            aliases=("aime_2025", "aime2025"),
        ),
        DatasetSpec(
            "amc23",
            "math-ai/amc23",
            None,
            "test",
            ("answer",),
            _parse_amc,
            description="AMC 2023 (40 problems); float answers normalised (27.0 -> '27')",
            aliases=("amc_2023", "amc2023"),
        ),
        DatasetSpec(
            "dapo",
            "BytedTsinghua-SIA/DAPO-Math-17k",
            None,
            "train",
            ("prompt", "reward_model"),
            _parse_dapo,
            dedupe=True,
            description="DAPO-Math-17k (verl format); problem extracted from the prompt; deduplicated",
            aliases=("dapo-math-17k", "dapo_math", "math_dapo"),
        ),
        DatasetSpec(
            "local",
            None,
            None,
            "train",
            (),
            None,
            description="A local jsonl/json/parquet/csv file; columns named by column_map",
        ),
        DatasetSpec(
            "arithmetic",
            None,
            None,
            "train",
            (),
            None,
            has_difficulty=True,
            description="Synthetic 'What is a + b?' (a, b in 50-99), generated offline; splits train/dev/test (quickstart)",
        ),
    ]
}

_ALIASES = {alias: spec.name for spec in DATASETS.values() for alias in spec.aliases}


def available_datasets() -> list[str]:
    """Registry names accepted by :func:`load_dataset_by_name` (aliases not included)."""
    return sorted(DATASETS)


def _resolve(name: str) -> DatasetSpec:
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(
            f"Unknown dataset name {name!r}. Available: {', '.join(available_datasets())} "
            "(or 'local' with path=... and column_map=... for your own file)."
        )
    return DATASETS[key]


# --------------------------------------------------------------------------------------------- loading


def _read_local(path: str | os.PathLike[str], cache_dir: str | None = None) -> Dataset:
    """Read a jsonl/json/parquet/csv file (or a glob of them) with ``datasets.load_dataset``."""
    from datasets import load_dataset

    text = str(path)
    suffix = Path(text).suffix.lower()
    builder = _LOCAL_BUILDERS.get(suffix)
    if builder is None:
        raise ValueError(
            f"Cannot tell the format of {text!r} from its extension {suffix!r}; use one of "
            f"{', '.join(sorted(_LOCAL_BUILDERS))}."
        )
    if not any(ch in text for ch in "*?[") and not Path(text).is_file():
        raise FileNotFoundError(f"Data file not found: {text!r}.")
    return load_dataset(builder, data_files=text, split="train", cache_dir=cache_dir)


def _read_hub(spec: DatasetSpec, hub_id: str | None, split: str, revision: str | None, config: str | None):
    from datasets import load_dataset

    repo = hub_id or spec.hub_id
    kwargs: dict[str, Any] = {"split": split}
    if revision is not None:
        kwargs["revision"] = revision
    return load_dataset(repo, config if config is not None else spec.config, **kwargs)


def _check_columns(dataset: Dataset, needed: Iterable[tuple[str, str]], where: str) -> None:
    """``needed`` holds (column, field); raise naming the ``column_map`` key that fixes a missing one."""
    for column, field_name in needed:
        if column not in dataset.column_names:
            raise ValueError(
                f"Column {column!r} (the {field_name}) not found in {where}; its columns are "
                f"{dataset.column_names}. Name the right one with column_map={{'{field_name}': '<column>'}} "
                f"(YAML: `column_map: {{{field_name}: <column>}}`)."
            )


def _column(dataset: Dataset, name: str) -> list[Any]:
    """One column as a plain Python list (respects an indices mapping)."""
    return dataset.select_columns([name]).to_dict()[name]


def _messages(problem: str, system_prompt: str | None, user_template: str) -> list[dict[str, str]]:
    content = user_template.format(problem=problem)
    messages = [{"role": "system", "content": system_prompt}] if system_prompt is not None else []
    messages.append({"role": "user", "content": content})
    return messages


def _finalize(
    raw: Dataset,
    parser: RowParser,
    *,
    data_source: str | Callable[[Mapping[str, Any]], str],
    system_prompt: str | None,
    user_template: str,
    keep_columns: Sequence[str],
    limit: int | None,
    dedupe: bool,
    where: str,
    num_proc: int | None,
) -> Dataset:
    """Parse rows, drop the unusable ones, deduplicate, limit and cast to the output features."""
    if "{problem}" not in user_template:
        raise ValueError(f"user_template must contain '{{problem}}', got {user_template!r}.")
    for column in keep_columns:
        if column not in raw.column_names:
            raise ValueError(
                f"keep_columns names {column!r}, which is not in {where}; columns: {raw.column_names}."
            )
        if column in _FEATURES:
            raise ValueError(f"keep_columns cannot name {column!r}: it is one of the output columns.")
    n_read = len(raw)

    def convert(row: dict[str, Any]) -> dict[str, Any]:
        parsed = parser(row)
        problem = parsed["problem"]
        problem = problem.strip() if isinstance(problem, str) else None
        answer = parsed["answer"]
        source = data_source(row) if callable(data_source) else data_source
        return {
            "prompt": _messages(problem, system_prompt, user_template) if problem else [],
            "answer": answer if answer else None,
            "data_source": str(source),
            "difficulty": parsed["difficulty"],
            "_problem": problem or "",
        }

    features = Features(
        {**_FEATURES, "_problem": Value("string"), **{c: raw.features[c] for c in keep_columns}}
    )
    drop = [c for c in raw.column_names if c not in keep_columns]
    dataset = raw.map(
        convert, remove_columns=drop, features=features, num_proc=num_proc, desc=f"Parsing {where}"
    )

    # One pass in batches (the DAPO Hub copy has 1.79 M rows): usable rows, then first occurrences.
    keep: list[int] = []
    seen: set[bytes] = set()
    n_unusable = n_dupes = 0
    index = 0
    for batch in dataset.select_columns(["_problem", "answer"]).iter(batch_size=10_000):
        for problem, answer in zip(batch["_problem"], batch["answer"], strict=True):
            if not (problem and answer):
                n_unusable += 1
            elif dedupe and (digest := hashlib.blake2b(problem.encode(), digest_size=16).digest()) in seen:
                n_dupes += 1
            else:
                if dedupe:
                    seen.add(digest)
                keep.append(index)
            index += 1
    if n_unusable:
        logger.warning(
            "%s: dropped %d of %d rows with no problem text or no gold answer.", where, n_unusable, n_read
        )
    if n_dupes:
        logger.info("%s: dropped %d duplicate problems.", where, n_dupes)
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}.")
        keep = keep[:limit]
    if not keep:
        raise ValueError(
            f"{where} is empty after filtering: {n_read} rows read, {n_unusable} without a problem or gold "
            f"answer, {n_dupes} duplicates, limit={limit}. Check the split/path and the column_map "
            "(the answer column may be wrong), or raise limit."
        )
    if len(keep) != len(dataset):
        dataset = dataset.select(keep)
    return dataset.remove_columns("_problem").flatten_indices()


def load_local(
    path: str | os.PathLike[str],
    column_map: Mapping[str, str] | None = None,
    *,
    data_source: str | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    user_template: str = "{problem}",
    limit: int | None = None,
    keep_columns: Sequence[str] = (),
    dedupe: bool = False,
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Load your own ``jsonl``/``json``/``parquet``/``csv`` file into the column contract.

    Args:
        path: The file (its extension picks the reader; a glob of files of one type works too).
        column_map: Maps the contract's fields to the file's columns. Keys: ``problem`` (default column
            ``"problem"``), ``answer`` (default ``"answer"``), optional ``difficulty`` (default: the
            ``"difficulty"`` column if present) and optional ``data_source`` (a column holding the source
            name per row). The problem column may hold strings or chat message lists (the last user
            message is then used). Example: ``{"problem": "question", "answer": "final"}``.
        data_source: Constant ``data_source`` value (default: the file name without extension).
        system_prompt: System message; ``None`` omits it.
        user_template: Format string for the user message, with ``{problem}``.
        limit: Keep at most this many rows (the first ones, after filtering).
        keep_columns: Source columns to carry over unchanged.
        dedupe: Drop rows whose problem text repeats an earlier row's.
        num_proc: Processes for ``Dataset.map``.
        cache_dir: ``datasets`` cache folder.

    Returns:
        The dataset (columns ``prompt``, ``answer``, ``data_source``, ``difficulty`` + ``keep_columns``).
    """
    mapping = dict(column_map or {})
    unknown = set(mapping) - {"problem", "answer", "difficulty", "data_source"}
    if unknown:
        raise ValueError(
            f"Unknown column_map keys {sorted(unknown)}; allowed: problem, answer, difficulty, data_source."
        )
    raw = _read_local(path, cache_dir=cache_dir)
    where = f"local file {str(path)!r}"
    problem_col = mapping.get("problem", "problem")
    answer_col = mapping.get("answer", "answer")
    _check_columns(raw, [(problem_col, "problem"), (answer_col, "answer")], where)
    difficulty_col = mapping.get("difficulty", "difficulty" if "difficulty" in raw.column_names else None)
    source_col = mapping.get("data_source")
    optional = [
        (c, f) for c, f in [(difficulty_col, "difficulty"), (source_col, "data_source")] if c is not None
    ]
    _check_columns(raw, optional, where)

    def parse(row: Mapping[str, Any]) -> dict[str, Any]:
        problem = row[problem_col]
        if isinstance(problem, list):
            problem = _last_user_content(problem)
        return {
            "problem": problem if isinstance(problem, str) else (None if problem is None else str(problem)),
            "answer": normalize_answer(row[answer_col]),
            "difficulty": _as_float(row[difficulty_col]) if difficulty_col else None,
        }

    constant_source = data_source or Path(str(path)).name.split(".")[0]
    source: str | Callable[[Mapping[str, Any]], str]
    if source_col is not None:

        def source(row: Mapping[str, Any]) -> str:
            return str(row[source_col]) if row[source_col] is not None else constant_source

    else:
        source = constant_source
    return _finalize(
        raw,
        parse,
        data_source=source,
        system_prompt=system_prompt,
        user_template=user_template,
        keep_columns=keep_columns,
        limit=limit,
        dedupe=dedupe,
        where=where,
        num_proc=num_proc,
    )


def load_dataset_by_name(
    name: str,
    split: str | None = None,
    path: str | os.PathLike[str] | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    limit: int | None = None,
    *,
    column_map: Mapping[str, str] | None = None,
    data_source: str | None = None,
    user_template: str = "{problem}",
    keep_columns: Sequence[str] = (),
    dedupe: bool | None = None,
    hub_id: str | None = None,
    config: str | None = None,
    revision: str | None = None,
    num_proc: int | None = None,
    cache_dir: str | None = None,
) -> Dataset:
    """Load a registered dataset (see :data:`DATASETS`) into the column contract.

    Args:
        name: Registry name (``math``, ``math500``, ``gsm8k``, ``aime24``, ``aime25``, ``amc23``,
            ``dapo``, ``local``) or an alias (``math-500``, ``aime_2024``, ``dapo-math-17k``, ...).
        split: Hub split (default: the source's usual one, e.g. ``test`` for MATH-500). Ignored with
            ``path=`` (a local file is a single split).
        path: Read this local file instead of the Hub; it must have the Hub dataset's columns
            (for ``local`` it is required and ``column_map`` names the columns).
        system_prompt: System message; ``None`` omits it.
        limit: Keep at most this many rows (the first ones, after filtering and deduplication).
        column_map: Only for ``local``: see :func:`load_local`.
        data_source: Value of the ``data_source`` column (default: the registry name).
        user_template: Format string for the user message, with ``{problem}``.
        keep_columns: Source columns to carry over unchanged (e.g. ``["unique_id"]``).
        dedupe: Drop repeated problems (default: only for ``dapo``, whose Hub copy repeats each ~100x).
        hub_id, config, revision: Override the Hub dataset id, config and revision.
        num_proc: Processes for ``Dataset.map``.
        cache_dir: ``datasets`` cache folder.

    Returns:
        The dataset (columns ``prompt``, ``answer``, ``data_source``, ``difficulty`` + ``keep_columns``).
    """
    spec = _resolve(name)
    if spec.name == "arithmetic":
        from bnpo_trl.tasks import arithmetic_dataset

        return arithmetic_dataset(
            split or spec.default_split, size=limit or 2000, system_prompt=system_prompt
        )
    if spec.name == "local":
        if path is None:
            raise ValueError(
                "Dataset 'local' needs path=... (a jsonl/json/parquet/csv file) and usually column_map."
            )
        return load_local(
            path,
            column_map,
            data_source=data_source,
            system_prompt=system_prompt,
            user_template=user_template,
            limit=limit,
            keep_columns=keep_columns,
            dedupe=bool(dedupe),
            num_proc=num_proc,
            cache_dir=cache_dir,
        )
    if column_map:
        raise ValueError(
            f"column_map is only for the 'local' dataset; {spec.name!r} has a fixed schema. Use "
            f"name='local' with path=... to read a file whose columns differ from {spec.hub_id}'s."
        )
    if path is not None:
        raw = _read_local(path, cache_dir=cache_dir)
        where = f"{spec.name} (local file {str(path)!r})"
    else:
        raw = _read_hub(spec, hub_id, split or spec.default_split, revision, config)
        where = f"{spec.name} ({hub_id or spec.hub_id}, split {split or spec.default_split!r})"
    missing = [c for c in spec.required_columns if c not in raw.column_names]
    if spec.name == "amc23" and not {"question", "problem"} & set(raw.column_names):
        missing.append("question")
    if missing:
        raise ValueError(
            f"{where} lacks the column(s) {missing} that the {spec.name!r} schema needs; its columns are "
            f"{raw.column_names}. For a file with other column names use name='local' with "
            "column_map={'problem': '<column>', 'answer': '<column>'}."
        )
    return _finalize(
        raw,
        spec.parser,  # type: ignore[arg-type]
        data_source=data_source or spec.name,
        system_prompt=system_prompt,
        user_template=user_template,
        keep_columns=keep_columns,
        limit=limit,
        dedupe=spec.dedupe if dedupe is None else dedupe,
        where=where,
        num_proc=num_proc,
    )


# --------------------------------------------------------------------------------------------- mixtures

_SPEC_KEYS = {
    "name",
    "weight",
    "split",
    "path",
    "limit",
    "system_prompt",
    "column_map",
    "data_source",
    "user_template",
    "keep_columns",
    "dedupe",
    "hub_id",
    "config",
    "revision",
}


def mixture_sizes(available: Sequence[int], weights: Sequence[float], total: int | None = None) -> list[int]:
    """Rows to draw from each source of a mixture (the rule :func:`load_mixture` uses).

    Weights are normalised to sum to 1. With ``total=None`` the mixture is the largest one that needs no
    repetition: ``T = min_i(available_i / w_i)`` (rounded down), so the scarcest source relative to its
    weight is used whole. With ``total`` given, ``T = total``. Sizes are ``w_i * T`` rounded by the
    largest-remainder method, so they sum exactly to ``T``; a size above ``available_i`` is drawn with
    repetition (see :func:`load_mixture`).

    Examples:
        >>> mixture_sizes([100, 100], [0.7, 0.3])
        [99, 43]
        >>> mixture_sizes([100, 100], [3, 1], total=10)
        [8, 2]
    """
    if len(available) != len(weights) or not weights:
        raise ValueError("mixture_sizes needs one weight per source and at least one source.")
    for w in weights:
        if not isinstance(w, (int, float)) or isinstance(w, bool) or not math.isfinite(w) or w < 0:
            raise ValueError(f"Mixture weights must be finite numbers >= 0, got {list(weights)}.")
    weight_sum = float(sum(weights))
    if weight_sum <= 0:
        raise ValueError(f"Mixture weights must not all be 0, got {list(weights)}.")
    shares = [w / weight_sum for w in weights]
    if total is None:
        target = min(n / s for n, s in zip(available, shares, strict=True) if s > 0)
        target_rows = math.floor(target + 1e-9)
    else:
        if total < 0:
            raise ValueError(f"total must be >= 0, got {total}.")
        target_rows = int(total)
    exact = [s * target_rows for s in shares]
    sizes = [math.floor(x + 1e-9) for x in exact]
    remainder = target_rows - sum(sizes)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - sizes[i]), i))
    for i in order[:remainder]:
        sizes[i] += 1
    if total is None:  # never exceed what is there (guards rounding up)
        sizes = [min(s, n) for s, n in zip(sizes, available, strict=True)]
    return sizes


def _draw(n_available: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` indices into ``range(n_available)``: without repetition while possible, else whole copies
    plus a random remainder (each row appears ``size // n`` or ``size // n + 1`` times)."""
    copies, rest = divmod(size, n_available)
    parts = [np.arange(n_available)] * copies
    if rest:
        parts.append(rng.choice(n_available, size=rest, replace=False))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def load_mixture(
    specs: Sequence[Mapping[str, Any]],
    seed: int = 0,
    total: int | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    cache_dir: str | None = None,
) -> Dataset:
    """Load several sources, sample them by weight, concatenate and shuffle (the column contract).

    Args:
        specs: One mapping per source, as read from YAML, e.g.
            ``[{"name": "math", "weight": 0.7}, {"name": "gsm8k", "weight": 0.3, "path": "gsm8k.jsonl"}]``.
            Keys: ``name`` (required), ``weight`` (default 1), and the keyword arguments of
            :func:`load_dataset_by_name`: ``split``, ``path``, ``limit``, ``system_prompt`` (overrides the
            mixture-wide one), ``column_map``, ``data_source``, ``user_template``, ``keep_columns``,
            ``dedupe``, ``hub_id``, ``config``, ``revision``.
        seed: Seed for the per-source sampling and the final shuffle.
        total: Mixture size. ``None``: the largest mixture with the weights' proportions that repeats no
            row. Given: sizes ``weight * total`` (largest remainder), a source drawn more often than it
            has rows is repeated (whole copies, then a random remainder without replacement).
        system_prompt: Default system prompt for every source.
        cache_dir: ``datasets`` cache folder.

    Returns:
        One shuffled dataset; ``data_source`` tells the rows apart.
    """
    if isinstance(specs, (Mapping, str)) or not specs:
        raise ValueError(
            "load_mixture needs a non-empty list of dataset specs (mappings with at least 'name')."
        )
    loaded: list[Dataset] = []
    weights: list[float] = []
    for position, spec in enumerate(specs):
        if not isinstance(spec, Mapping) or "name" not in spec:
            raise ValueError(f"Mixture entry {position} must be a mapping with a 'name' key, got {spec!r}.")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise ValueError(
                f"Mixture entry {position} ({spec['name']!r}) has unknown keys {sorted(unknown)}; "
                f"allowed: {', '.join(sorted(_SPEC_KEYS))}."
            )
        kwargs = {k: v for k, v in spec.items() if k not in ("name", "weight")}
        kwargs.setdefault("system_prompt", system_prompt)
        loaded.append(load_dataset_by_name(spec["name"], cache_dir=cache_dir, **kwargs))
        weights.append(spec.get("weight", 1.0))

    sizes = mixture_sizes([len(d) for d in loaded], weights, total)
    rng = np.random.default_rng(seed)
    parts = []
    for dataset, size in zip(loaded, sizes, strict=True):
        indices = _draw(len(dataset), size, rng)
        if len(indices):
            parts.append(dataset.select(indices.tolist()))
    if not parts:
        raise ValueError(f"The mixture is empty (sizes {sizes}); raise total or the weights.")
    common = set.intersection(*(set(p.column_names) for p in parts))
    parts = [p.remove_columns([c for c in p.column_names if c not in common]) for p in parts]
    mixed = concatenate_datasets(parts)
    return mixed.shuffle(seed=seed).flatten_indices()


# ------------------------------------------------------------------------------------------- curriculum


def apply_curriculum(
    dataset: Dataset,
    curriculum: str,
    column: str = "difficulty",
    higher_is_easier: bool | None = None,
) -> Dataset:
    """Order a dataset for a curriculum.

    Args:
        dataset: Any dataset.
        curriculum: ``"none"`` returns ``dataset`` unchanged; ``"difficulty"`` sorts it easy -> hard,
            stably (rows of equal difficulty keep their order); rows whose value is ``None``/NaN go last.
        column: The column to sort by (``"difficulty"``, or e.g. a pass-rate column).
        higher_is_easier: Direction. ``None`` picks ``True`` for pass-rate-like names (``pass_rate``,
            ``pass@1``, ``solve_rate``, ``accuracy``, ...) and ``False`` otherwise (higher = harder, as for
            MATH levels).

    Returns:
        The ordered dataset. ``GRPOTrainer`` shuffles its training data by default: set
        ``shuffle_dataset=False`` in the GRPO config to keep this order.
    """
    key = str(curriculum).strip().lower()
    if key not in CURRICULA:
        raise ValueError(f"Unknown curriculum {curriculum!r}; choose one of {', '.join(CURRICULA)}.")
    if key == "none":
        return dataset
    if column not in dataset.column_names:
        raise ValueError(
            f"Curriculum 'difficulty' sorts by column {column!r}, which the dataset does not have (columns: "
            f"{dataset.column_names}). Pass column='<name>' (e.g. a pass-rate column) or use curriculum='none'."
        )
    if higher_is_easier is None:
        higher_is_easier = column.lower() in _EASY_WHEN_HIGH
    numbers = [_as_float(value) for value in _column(dataset, column)]
    if all(v is None for v in numbers):
        raise ValueError(
            f"Column {column!r} has no numeric values (all None/NaN), so there is nothing to sort by; "
            "this source has no difficulty. Use curriculum='none' or another column."
        )
    n_missing = sum(v is None for v in numbers)
    if n_missing:
        logger.warning("apply_curriculum: %d rows without a %r value are placed last.", n_missing, column)
    sign = -1.0 if higher_is_easier else 1.0
    order = sorted(range(len(numbers)), key=lambda i: (numbers[i] is None, sign * (numbers[i] or 0.0)))
    return dataset.select(order).flatten_indices()
