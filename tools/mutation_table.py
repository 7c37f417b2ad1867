"""Print mutmut's results per module as a table (`make mutation` runs it after `mutmut run`).

Reads the ``mutants/**/*.py.meta`` files mutmut writes, counts each module's mutants by status
(mutmut's own exit-code mapping) and prints one Markdown row per module: mutants, killed,
survived, no tests (no selected test calls the mutated function), timeouts, others (suspicious,
segfault; "not checked" = not run yet), and the percentage of covered mutants (all but "no
tests" and "not checked") that were killed; a timeout (a mutant that made a loop endless, stopped
by mutmut's time limit) counts as killed there. ``--survivors`` also lists the surviving mutants'
names, for ``mutmut show NAME``.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code


def main(argv: list[str]) -> int:
    metas = sorted(Path("mutants").rglob("*.py.meta"))
    if not metas:
        print("no mutants/**/*.py.meta: run `make mutation` first", file=sys.stderr)
        return 1
    print("| module | mutants | killed | survived | no tests | timeout | other | % of covered killed |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    survivors, total = [], Counter()
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if not codes:  # a module without functions (an __init__.py)
            continue
        counts = Counter(status_by_exit_code[code] for code in codes.values())
        survivors += sorted(name for name, code in codes.items() if status_by_exit_code[code] == "survived")
        total += counts
        module = str(meta.relative_to("mutants").with_suffix("").with_suffix("")).replace("/", ".")
        print(row(module, counts, len(codes)))
    print(row("**all**", total, sum(total.values())))
    if "--survivors" in argv:
        print("\nsurvived:" if survivors else "\nno survivors")
        for name in survivors:
            print(f"  {name}")
    return 0


def row(module: str, counts: Counter, n: int) -> str:
    main_columns = ("killed", "survived", "no tests", "timeout")
    other = n - sum(counts[k] for k in main_columns)
    others = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()) if k not in main_columns)
    covered = n - counts["no tests"] - counts["not checked"]
    percent = f"{100 * (counts['killed'] + counts['timeout']) / covered:.1f}" if covered else "-"
    cells = [module, n, *(counts[k] for k in main_columns), f"{other} ({others})" if other else 0, percent]
    return "| " + " | ".join(str(c) for c in cells) + " |"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
