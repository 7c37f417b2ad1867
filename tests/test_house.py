"""The package's layout rules (docs/design.md, "Layout"): each shared default written once, the
package root holding only what the rule places there, rooms that load nothing until asked, and the
commands that list or explain importing no training stack."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import detector.defaults as defaults

PACKAGE = Path(defaults.__file__).parent
ROOMS = ("autoanchor", "cli", "core", "data", "deploy", "evaluation", "inspection", "model", "pictures", "research", "training")
ROOT_MODULES = {"__init__.py", "__main__.py", "defaults.py", "errors.py"}

# (what the name of the setting mentions, the value): a default that defaults.py holds
NAMED = [
    (("iou",), defaults.MATCH_IOU, "MATCH_IOU or NMS_IOU"),
    (("iou",), defaults.CONFUSION_IOU, "CONFUSION_IOU"),
    (("score", "threshold", "conf"), defaults.EVAL_SCORE, "EVAL_SCORE"),
    (("score", "threshold", "conf"), defaults.PICTURE_SCORE, "PICTURE_SCORE"),
    (("fraction",), defaults.MAX_SKIPPED_FRACTION, "MAX_SKIPPED_FRACTION"),
]
STATISTICS = set(defaults.IMAGENET_MEAN) | set(defaults.IMAGENET_STD)


def _number(node: ast.AST | None) -> float | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return node.value
    return None


def _named_defaults(tree: ast.AST):
    """(setting name, default node) for parameters, class fields, ``.get(key, default)`` and
    argparse's ``add_argument("--flag", default=...)``."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            yield from zip([p.arg for p in positional[len(positional) - len(a.defaults):]], a.defaults)
            yield from ((p.arg, d) for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name) and item.value is not None:
                    yield item.target.id, item.value
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "get" and len(node.args) == 2 and isinstance(node.args[0], ast.Constant):
                yield str(node.args[0].value), node.args[1]
            if node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("--"):
                yield from ((str(node.args[0].value), k.value) for k in node.keywords if k.arg == "default")


def default_literals(path: Path) -> list[str]:
    """Where ``path`` writes one of ``defaults.py``'s values again as a literal, one line each."""
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        value = _number(node)
        if isinstance(value, int) and value == defaults.IMAGE_SIZE:
            found.append(f"{path.name}:{node.lineno}: {value} (IMAGE_SIZE)")
        elif isinstance(value, float) and value in STATISTICS:
            found.append(f"{path.name}:{node.lineno}: {value} (IMAGENET_MEAN / IMAGENET_STD)")
        elif isinstance(node, (ast.Tuple, ast.List)) and [getattr(e, "value", None) for e in node.elts] == list(defaults.SPLITS):
            found.append(f"{path.name}:{node.lineno}: {tuple(defaults.SPLITS)} (SPLITS)")
    for name, node in _named_defaults(tree):
        value = _number(node)
        for words, default, constant in NAMED:
            if value is not None and value == default and any(w in name.lower() for w in words):
                found.append(f"{path.name}:{node.lineno}: {name} = {value} ({constant})")
    return found


def test_each_shared_default_is_written_once():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) if path.name != "defaults.py" for hit in default_literals(path)]
    assert found == [], "import these from detector.defaults instead:\n" + "\n".join(found)


def test_the_check_finds_a_second_literal(tmp_path: Path):
    """The scan above is only worth something if it sees each kind of repeat."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "from dataclasses import dataclass\n"
        "def f(image_size=224, iou_threshold=0.4, score_threshold=0.25):\n"
        "    return cfg.get('max_skipped_fraction', 0.05), ('train', 'val', 'test'), (0.485, 0.456, 0.406)\n"
        "@dataclass\nclass C:\n    conf: float = 0.01\n    nms_iou: float = 0.45\n    dropout: float = 0.4\n"
        "parser.add_argument('--score', default=0.25)\n"
    )
    hits = default_literals(sample)
    assert [h.split(" (")[-1] for h in hits].count("IMAGENET_MEAN / IMAGENET_STD)") == 3
    for constant in ("IMAGE_SIZE", "SPLITS", "MATCH_IOU or NMS_IOU", "PICTURE_SCORE", "EVAL_SCORE", "CONFUSION_IOU",
                     "MAX_SKIPPED_FRACTION"):
        assert any(h.endswith(f"({constant})") for h in hits), (constant, hits)
    assert not any("dropout" in h for h in hits)  # 0.4 is the lesson's dropout too: not a threshold
    assert sum("PICTURE_SCORE" in h for h in hits) == 2  # the parameter and the argparse default


def test_the_package_root_holds_only_what_the_layout_rule_places_there():
    modules = {p.name for p in PACKAGE.glob("*.py")}
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert modules == ROOT_MODULES
    assert rooms == set(ROOMS)
    for name in ("defaults.py", "errors.py"):  # every room may import them: they import nothing of the package
        imports = [n for n in ast.walk(ast.parse((PACKAGE / name).read_text())) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not [n for n in imports if "detector" in (getattr(n, "module", None) or "") or any("detector" in a.name for a in n.names)]


@pytest.mark.parametrize("room", ROOMS)
def test_each_room_names_its_public_parts_and_each_resolves(room: str):
    package = importlib.import_module(f"detector.{room}")
    assert package.__doc__ and len(package.__doc__) > 80, f"detector.{room} says what it holds"
    for name in getattr(package, "__all__", []):
        assert getattr(package, name) is not None, f"detector.{room}.{name}"


PROBE = """
import json, sys
from detector.cli import main
try:
    main({argv!r})
except SystemExit:
    pass
heavy = ("lightning", "torchmetrics", "albumentations", "torch", "matplotlib")
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}} & set(heavy))))
"""


@pytest.mark.parametrize("argv", [["--help"], ["runs", "--root", "{tmp}"], ["eval", "--help"]])
def test_help_and_listing_runs_import_no_training_stack(argv: list[str], tmp_path: Path):
    (tmp_path / "shapes" / "v1" / "csv").mkdir(parents=True)  # a run folder to list
    (tmp_path / "shapes" / "v1" / "csv" / "metrics.csv").write_text("epoch,val/map_50\n0,0.5\n")
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = subprocess.run([sys.executable, "-c", PROBE.format(argv=argv)], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [], out.stdout
