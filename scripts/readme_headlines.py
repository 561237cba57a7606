"""Copy the headline numbers of the generated blocks in docs/ into README.md.

    python scripts/readme_headlines.py           # rewrite the `headlines` block of README.md
    python scripts/readme_headlines.py --check   # exit 1 if that block is not what the docs give now

README.md's ``<!-- headlines -->`` block holds one bullet per generated block of docs/benchmarks.md and
docs/theory.md (``scripts/docs_section.py`` writes those blocks; each names the command that measured it),
ending with a link to the doc section. Every number in a bullet is parsed with a regular expression out of
that block's text, so none is typed by hand. A block that is missing or not generated yet gives a bullet
saying so. A block whose text no longer matches its parser (the script that writes it changed its output)
is an error naming the block: update the parser below. ``tests/test_readme_headlines.py`` fails when
README.md's block differs from what this script would write.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from docs_section import read_section, replace_section

ROOT = Path(__file__).resolve().parent.parent
BLOCK = "headlines"
COMMAND = "python scripts/readme_headlines.py"
#: A number as the benchmark scripts print it: 0.993, 65,536, -1.67, +0.07, nan.
NUM = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|nan|inf)"


class HeadlinesError(ValueError):
    """A block's text does not match its parser, or README.md has no headlines block."""


def _flat(text: str) -> str:
    """``text`` with every run of whitespace made one space (sentences may be wrapped)."""
    return " ".join(text.split())


def _search(name: str, what: str, pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    if match is None:
        raise HeadlinesError(
            f"block {name}: found no {what} (pattern {pattern!r}); the script that writes the block "
            f"changed its output? Update the parser in scripts/readme_headlines.py"
        )
    return match


def _int(number: str) -> int:
    return int(number.replace(",", ""))


# ---------------------------------------------------------------------------------------------------------
# One parser per block: block text (between its markers) -> the headline (markdown, no trailing period)
# ---------------------------------------------------------------------------------------------------------


def parse_bench_normalizers(text: str) -> str:
    """``scripts/bench_normalizers.py``: the BNPO loop / vectorized time ratio and N."""
    flat = _flat(text)
    speedup = _search(
        "bench_normalizers", "speed-up line", rf"BNPO loop / vectorized: \*\*({NUM})x\*\*", flat
    )[1]
    n = _search("bench_normalizers", "N", rf"N = ({NUM}) \(({NUM}) prompts x ({NUM})\) binary rewards", flat)
    return (
        f"BNPO vectorized is **{speedup}x** faster than a per-sample Python loop "
        f"(N = {n[1]} binary rewards, {n[2]} prompts x {n[3]})"
    )


def parse_bench_rewards(text: str) -> str:
    """``scripts/bench_rewards.py``: the clean first-seen row of the cost table."""
    row = _search(
        "bench_rewards",
        "clean first-seen row of the cost table",
        rf"^\| first-seen, clean \| ({NUM}) \| ({NUM}) \| ({NUM}) / ({NUM}) \| ({NUM})x \| ({NUM}) \| "
        rf"({NUM}) / ({NUM}) \| ({NUM})x \| ({NUM})x \|",
        text,
        re.M,
    )
    n, trl_cpu, ours_cpu, cpu_ratio, scaling, vs_trl = row[1], row[2], row[4], row[5], row[9], row[10]
    return (
        f"the `accuracy` reward uses **{ours_cpu} CPU-s per 1,000 completions** vs. {trl_cpu} for TRL's "
        f"`accuracy_reward` on a clean first-seen batch of {n} ({cpu_ratio}x less) and is **{vs_trl}x** faster "
        f"in wall time with 2 workers ({scaling}x from 1 to 2 workers)"
    )


def parse_bench_rewards_real(text: str) -> str:
    """``scripts/bench_rewards_real.py``: ours vs TRL on the real completions and the rewrites, and the
    false positives of ours over every set."""

    def row(label: str) -> re.Match[str]:
        cell = rf"({NUM})/({NUM}) \(({NUM})\), ({NUM}) FP"
        return _search(
            "bench_rewards_real",
            f"'{label}' row",
            rf"^\| {label} \| ({NUM}) \| {cell} \| {cell} \|",
            text,
            re.M,
        )

    real, rewrites = row("real completions"), row("rewrites of the golds")
    ours_fp = sum(
        _int(m[1])
        for m in re.finditer(rf"^\| [^|]+ \| {NUM} \| {NUM}/{NUM} \({NUM}\), ({NUM}) FP", text, re.M)
    )
    return (
        f"the `accuracy` reward is right on **{real[4]}** of {real[1]} real model completions (TRL's "
        f"`accuracy_reward`: {real[8]}) and on **{rewrites[4]}** of {rewrites[1]} rewrites of the golds (TRL: "
        f"{rewrites[8]}), with **{ours_fp}** false positives over every set"
    )


def parse_bench_overhead(text: str) -> str:
    """``scripts/bench_overhead.py``: the median CPU step-time ratio with its interval, the added share."""
    row = _search(
        "bench_overhead",
        "'median, cpu' row of the ratio table",
        rf"^\| median, cpu \| \*\*({NUM})\*\* \| \[({NUM}), ({NUM})\] \|",
        text,
        re.M,
    )
    share = _search(
        "bench_overhead",
        "summary of the added work",
        rf"Summary: the work A adds is ({NUM}%) of its CPU time per step",
        _flat(text),
    )[1]
    return (
        f"`NormalizedGRPOTrainer` / TRL `GRPOTrainer` median step CPU time: **{row[1]}** "
        f"(95% interval [{row[2]}, {row[3]}]); the work it adds is **{share}** of a step's CPU time"
    )


def parse_bench_learning(text: str) -> str:
    """``scripts/bench_learning.py``: its "In short" line (best arm per G, and how many differences to
    ``group`` the data support after the Holm correction)."""
    match = _search(
        "bench_learning",
        "'In short' line",
        r"\*\*In short\*\* \((\d+) seeds?, %\): (.+? supported by the data \(Holm, 5%\): \d+ of \d+)\.",
        _flat(text),
    )
    plural = "" if match[1] == "1" else "s"
    return (
        f"every normalizer on the three-source `arithmetic_mix` task from shared warm starts (final held-out "
        f"accuracy in %, mean ± std over {match[1]} seed{plural}): {match[2]}"
    )


def parse_simulate_theory(text: str) -> str:
    """``scripts/simulate_theory.py``: its BNPO and EBPO summary lines."""
    flat = _flat(text)
    bnpo = _search(
        "simulate_theory",
        "BNPO argmin summary",
        rf"Measured argmin within ({NUM}) standard errors of \(1 \+ a/3, 1 \+ b/3\): (\d+) of (\d+) priors "
        rf"\(largest \|z\| = ({NUM})\)",
        flat,
    )
    ebpo = _search(
        "simulate_theory",
        "EBPO summary",
        rf"Over all priors and G: ({NUM}) all-fail groups; EBPO gave ({NUM}) of them a non-zero advantage "
        rf"\(({NUM}) negative\), GRPO gave ({NUM})\. MSE ratio group mean / EBPO ranges from ({NUM}) to ({NUM})\.",
        flat,
    )
    fail, nonzero, grpo = _int(ebpo[1]), _int(ebpo[2]), _int(ebpo[4])
    signal = (
        f"a non-zero advantage for **{nonzero / fail:.1%}** of the {ebpo[1]} all-fail groups "
        f"(GRPO: {grpo / fail:.1%})"
        if fail
        else "no all-fail groups drawn"
    )
    return (
        f"BNPO's measured variance-minimizing (α, β) is within {bnpo[1]} SE of (1 + a/3, 1 + b/3) for "
        f"**{bnpo[2]} of {bnpo[3]}** priors (largest |z| = {bnpo[4]}); EBPO's baseline MSE ratio group mean / "
        f"EBPO is **{ebpo[5]} to {ebpo[6]}**, with {signal}"
    )


def parse_quickstart_seeds(text: str) -> str:
    """``scripts/quickstart_seeds.py``: its closing line per machine speed (target met on k of n seeds, the
    gains); speeds simulated slower (``--slowdown``) are named, this machine's (or a one-speed table's) is not."""
    summary = rf"Target met on (\d+) of (\d+) seeds; gains (.+?) points \(mean ({NUM})\)\."
    flat = _flat(text)
    _search("quickstart_seeds", "summary line", summary, flat)  # at least one
    parts = []
    for table in flat.split("Machine speed: "):  # one table per speed; older blocks have no heading
        if (met := re.search(summary, table)) is None:
            continue
        slower = re.match(rf"({NUM})x slower", table)
        parts.append(
            (f"on a machine simulated {slower[1]}x slower " if slower else "")
            + f"gained **{met[3]}** held-out points ({met[4]} on average); the target (>= 40 points within "
            f"5 minutes) was met on **{met[1]} of {met[2]}** seeds"
        )
    return "the quickstart (`bnpo-trl quickstart --seed K`) " + "; ".join(parts)


@dataclass(frozen=True)
class Source:
    name: str  # the block's name in its doc
    doc: str  # "benchmarks" or "theory"
    title: str
    script: str
    parse: Callable[[str], str]


SOURCES = [
    Source("bench_normalizers", "benchmarks", "Normalizer speed", "scripts/bench_normalizers.py", parse_bench_normalizers),
    Source("bench_rewards", "benchmarks", "Reward cost", "scripts/bench_rewards.py", parse_bench_rewards),
    Source("bench_rewards_real", "benchmarks", "Answers on real data", "scripts/bench_rewards_real.py", parse_bench_rewards_real),
    Source("bench_overhead", "benchmarks", "Trainer overhead", "scripts/bench_overhead.py", parse_bench_overhead),
    Source("bench_learning", "benchmarks", "Learning curves", "scripts/bench_learning.py", parse_bench_learning),
    Source("quickstart_seeds", "benchmarks", "Quickstart", "scripts/quickstart_seeds.py", parse_quickstart_seeds),
    Source("simulate_theory", "theory", "Theory checks", "scripts/simulate_theory.py", parse_simulate_theory),
]  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Links, bullets, the README block
# ---------------------------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces made hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def section_of(text: str, name: str) -> tuple[str, str] | None:
    """(heading, anchor) of the last heading above the block ``name`` in ``text``, or None."""
    start = text.find(f"<!-- {name} -->")
    if start < 0:
        return None
    seen: dict[str, int] = {}
    last = None
    fenced = False
    offset = 0
    for line in text.splitlines(keepends=True):
        if offset >= start:
            break
        offset += len(line)
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6} +(.+?) *#* *$", line.rstrip("\n"))
        if match:
            heading = match[1]
            anchor = slug(heading)
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            last = (heading, anchor if count == 0 else f"{anchor}-{count}")
    return last


def bullet(source: Source, doc: Path, readme: Path) -> str:
    rel = Path(os.path.relpath(doc, readme.parent)).as_posix()
    text = doc.read_text() if doc.exists() else ""
    body = read_section(text, source.name)
    section = section_of(text, source.name)
    link = f"[{section[0]}]({rel}#{section[1]})" if section else f"[{rel}]({rel})"
    if body is None:
        headline = f"no `{source.name}` block in {rel} yet (`{source.script}` writes it)"
    elif re.match(r"\s*Not generated yet", body):
        headline = f"not generated yet (`{source.script}` writes it)"
    else:
        headline = source.parse(body)
    return f"- **{source.title}**: {headline} — {link}"


def render(readme: Path, benchmarks: Path, theory: Path) -> str:
    """The README block, markers included."""
    docs = {"benchmarks": benchmarks, "theory": theory}
    names = " and ".join(Path(os.path.relpath(d, readme.parent)).as_posix() for d in docs.values())
    bullets = "\n".join(bullet(s, docs[s.doc], readme) for s in SOURCES)
    return f"<!-- {BLOCK} -->\nGenerated by `{COMMAND}` from {names}.\n\n{bullets}\n<!-- /{BLOCK} -->"


def _readme_text(readme: Path) -> str:
    text = readme.read_text()
    if read_section(text, BLOCK) is None:
        raise HeadlinesError(
            f"{readme} has no <!-- {BLOCK} --> ... <!-- /{BLOCK} --> markers: put them where the list belongs"
        )
    return text


def update(readme: Path, benchmarks: Path, theory: Path) -> bool:
    """Rewrite README's block from the docs; True if the file changed."""
    text = _readme_text(readme)
    new = replace_section(text, BLOCK, render(readme, benchmarks, theory))
    if new != text:
        readme.write_text(new)
    return new != text


def check(readme: Path, benchmarks: Path, theory: Path) -> str | None:
    """None if README's block is what :func:`update` would write, else a message with the diff."""
    text = _readme_text(readme)
    current = f"<!-- {BLOCK} -->{read_section(text, BLOCK)}<!-- /{BLOCK} -->"
    expected = render(readme, benchmarks, theory)
    if current == expected:
        return None
    diff = difflib.unified_diff(
        current.splitlines(), expected.splitlines(), f"{readme} (now)", "generated", lineterm=""
    )
    return f"{readme}: the {BLOCK} block is out of date; run `{COMMAND}`.\n" + "\n".join(diff)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="exit 1 if README's block is out of date")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--theory", type=Path, default=ROOT / "docs" / "theory.md")
    args = parser.parse_args(argv)
    try:
        if args.check:
            message = check(args.readme, args.benchmarks, args.theory)
            if message:
                print(message, file=sys.stderr)
                return 1
            print(f"{args.readme}: the {BLOCK} block is up to date")
        else:
            changed = update(args.readme, args.benchmarks, args.theory)
            print(f"{args.readme}: {BLOCK} block {'rewritten' if changed else 'already up to date'}")
    except HeadlinesError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
