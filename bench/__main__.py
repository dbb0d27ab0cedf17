"""Command line of the benchmark suite: ``python -m bench [NAME ...] [--quick] [--repeat N] [--device cpu|cuda]``.

Runs the named benchmarks (all when none is named), prints one rich table
and rewrites the results section of ``docs/benchmarks.md`` (``--output``
writes elsewhere, ``--no-write`` nowhere). The exit status is 1 when a
benchmark failed, 0 otherwise. A benchmark that cannot run on this machine,
because a data file or a model is missing, is listed as skipped.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import shlex
import sys
import time
import traceback
from pathlib import Path

from bench.common import REPO_ROOT, BenchOptions, BenchSkipped, Row, machine_facts, versions
from pipeline.cli import positive_float, positive_int

BENCHMARKS = ("transport", "latency", "replay", "memory", "models")
DEFAULT_OUTPUT = REPO_ROOT / "docs" / "benchmarks.md"
RESULTS_MARKER = "<!-- results: written by python -m bench; everything below this line is replaced -->"

log = logging.getLogger("bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the scenewatch benchmarks; see docs/benchmarks.md.")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"benchmarks to run, any of {', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke mode: a few seconds per benchmark; the figures only show that the code runs")
    parser.add_argument("--repeat", type=positive_int, default=3, metavar="N", help="runs per figure; each figure is the median over them (default 3)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="torch device of the CLIP figures (default cpu)")
    parser.add_argument("--memory-minutes", type=positive_float, default=None, metavar="MINUTES",
                        help="length of the memory benchmark's looped replay, in minutes (default 5; 6 s with --quick)")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, metavar="FILE", help=f"Markdown file whose results section is rewritten (default {DEFAULT_OUTPUT.relative_to(REPO_ROOT)})")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    unknown = [name for name in args.names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if not args.names:
        args.names = list(BENCHMARKS)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: torch finds no CUDA device on this machine; use --device cpu")
    return args


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.01 or value == 0:
        return f"{value:.2f}"
    return f"{value:.2g}"


def _table_lines(rows: list[Row]) -> list[str]:
    lines = ["| benchmark | case | metric | median | min | max | unit | runs | note |", "|---|---|---|---:|---:|---:|---|---:|---|"]
    for row in rows:
        lines.append(
            f"| {row.benchmark} | {row.case} | {row.metric} | {_format(row.median)} | {_format(row.minimum)} | "
            f"{_format(row.maximum)} | {row.unit} | {len(row.samples)} | {row.note} |"
        )
    return lines


def print_table(rows: list[Row], problems: dict[str, str]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="scenewatch benchmarks")
    for column in ("benchmark", "case", "metric", "median", "min", "max", "unit", "runs", "note"):
        table.add_column(column, justify="right" if column in ("median", "min", "max", "runs") else "left")
    for row in rows:
        table.add_row(row.benchmark, row.case, row.metric, _format(row.median), _format(row.minimum), _format(row.maximum), row.unit, str(len(row.samples)), row.note)
    for name, problem in problems.items():
        table.add_row(name, problem, "", "", "", "", "", "", "")
    Console(width=200).print(table)


def _earlier_rows(results: str, names: list[str]) -> tuple[list[str], str]:
    """Return the table lines of benchmarks not in ``names`` from an earlier results section, and that run's command and date."""
    kept = [line for line in results.splitlines() if line.startswith("| ") and line.split(" | ")[0][2:] in BENCHMARKS
            and line.split(" | ")[0][2:] not in names]
    facts = [line[2:] for line in results.splitlines() if line.startswith(("- command:", "- date:"))]
    return kept, ", ".join(facts)


def write_results(path: Path, rows: list[Row], problems: dict[str, str], command: str, elapsed_s: float, names: list[str]) -> None:
    """Replace everything after ``RESULTS_MARKER`` in ``path`` with this run's results (append the marker when missing).

    Rows of benchmarks that this run left out are kept from the earlier
    results, with a line that names the run they come from.
    """
    text = path.read_text(encoding="utf-8") if path.is_file() else "# Benchmarks\n"
    head, _, earlier = text.partition(RESULTS_MARKER)
    head = head.rstrip("\n")
    kept, earlier_run = _earlier_rows(earlier, names)
    machine = machine_facts()
    found = versions()
    lines = [
        head, "", RESULTS_MARKER, "", "## Latest results", "",
        f"- command: `{command}` ({elapsed_s / 60:.1f} min)",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['ram']} RAM, {machine['os']}",
        f"- date: {machine['date']}",
        "- versions: " + ", ".join(f"{name} {version}" for name, version in found.items()),
        "",
    ]
    lines += _table_lines(rows) + kept
    if kept:
        lines += ["", f"Rows of {', '.join(sorted({line.split(' | ')[0][2:] for line in kept}))} come from an earlier run ({earlier_run})."]
    for name, problem in problems.items():
        lines += ["", f"- {name}: {problem}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    options = BenchOptions(quick=args.quick, repeat=args.repeat, device=args.device, memory_minutes=args.memory_minutes)
    rows: list[Row] = []
    problems: dict[str, str] = {}
    failed = False
    began = time.monotonic()
    for name in args.names:
        module = importlib.import_module(f"bench.{name}")
        started = time.monotonic()
        print(f"bench: running {name} ...", file=sys.stderr, flush=True)
        try:
            rows += module.run(options)
        except BenchSkipped as error:
            problems[name] = f"skipped: {error}"
        except Exception as error:  # noqa: BLE001 - one failed benchmark must not hide the others' results
            traceback.print_exc()
            problems[name] = f"failed: {type(error).__name__}: {error}"
            failed = True
        print(f"bench: {name} took {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)

    print_table(rows, problems)
    if not args.no_write:
        command = "python -m bench " + " ".join(shlex.quote(arg) for arg in (argv if argv is not None else sys.argv[1:]))
        write_results(args.output, rows, problems, command.strip(), time.monotonic() - began, args.names)
        print(f"bench: results written to {args.output}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
