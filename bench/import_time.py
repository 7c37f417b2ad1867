"""What starting the package costs: time and modules loaded by ``import detector``, ``import
detector.training.tasks.detection`` (the LightningModule), ``detector --help`` and ``detector eval --help``, each in a
fresh interpreter, and which module first imported matplotlib or onnx, if any.

    python bench/import_time.py [--repeats 3]

Prints a table (median seconds of ``--repeats`` runs, interleaved, each relative to ``import torch``
measured beside them, so that a slower hour shows in every row alike), then one JSON line. Exits
non-zero when a module of this package imported matplotlib outside the figure modules
(``detector.pictures``, ``detector.evaluation.figures``), or onnx outside ``detector.deploy.export``. (torchmetrics imports matplotlib itself whenever it is installed, in
``torchmetrics.utilities.plot``, and Lightning imports torchmetrics: the table names it.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CASES = {
    "import torch": "import torch",
    "import lightning.pytorch": "import lightning.pytorch",
    "import detector": "import detector",
    "import detector.training.tasks.detection": "import detector.training.tasks.detection",
    "detector --help": "from detector.cli import main; main(['--help'])",
    "detector runs": "from detector.cli import main; main(['runs'])",
    "detector eval --help": "from detector.cli import main\ntry:\n    main(['eval', '--help'])\nexcept SystemExit:\n    pass",
}

PROBE = """
import builtins, contextlib, io, json, sys, time
first = {{}}  # "matplotlib" / "onnx" -> the module whose import statement first asked for it
real_import = builtins.__import__

def spy(name, globals=None, *args, **kwargs):
    root = name.split(".")[0]
    if root in ("matplotlib", "onnx") and root not in first and root not in sys.modules:
        first[root] = (globals or {{}}).get("__name__", "?")
    return real_import(name, globals, *args, **kwargs)

builtins.__import__ = spy
start = time.perf_counter()
with contextlib.redirect_stdout(io.StringIO()):
{body}
seconds = time.perf_counter() - start
names = set(sys.modules)
print(json.dumps({{"seconds": seconds, "modules": len(names), "torch": "torch" in names,
                  "matplotlib": first.get("matplotlib", ""), "onnx": first.get("onnx", "")}}))
"""


def measure(body: str) -> dict:
    code = PROBE.format(body="\n".join("    " + line for line in body.splitlines()))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in CASES}
    for _ in range(args.repeats):  # interleaved: every case sees the same hours of the machine
        for name, body in CASES.items():
            runs[name].append(measure(body))
    torch_s = statistics.median(r["seconds"] for r in runs["import torch"])
    print("| what | seconds | x import torch | modules | torch | matplotlib imported by | onnx imported by |")
    print("|---|---|---|---|---|---|---|")
    summary = {}
    for name, results in runs.items():
        seconds = statistics.median(r["seconds"] for r in results)
        last = results[-1]
        summary[name] = {k: last[k] for k in ("modules", "torch", "matplotlib", "onnx")} | {"seconds": round(seconds, 3)}
        flags = " | ".join(["yes" if last["torch"] else "no", last["matplotlib"] or "-", last["onnx"] or "-"])
        print(f"| `{name}` | {seconds:.2f} | {seconds / torch_s:.2f} | {last['modules']} | {flags} |")
    print(json.dumps(summary))
    ours = [
        f"{name}: {s[lib]} imported {lib}"
        for name, s in summary.items()
        for lib, allowed in (("matplotlib", ("detector.pictures", "detector.evaluation.figures")), ("onnx", ("detector.deploy.export",)))
        if s[lib].startswith("detector") and not s[lib].startswith(allowed)
    ]
    if ours:
        sys.exit("; ".join(ours))


if __name__ == "__main__":
    main()
