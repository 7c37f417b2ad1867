"""Plant label errors in a dataset, then measure how many of them ``detector data audit`` finds.

    python tools/label_noise.py corrupt --config configs/bccd.yaml --fraction 0.05 --out data/bccd_noisy
    detector data audit data/bccd_noisy/bccd_noisy.yaml --folds 5
    python tools/label_noise.py recall --planted data/bccd_noisy/planted.json --issues data/bccd_noisy/audit/label_issues.csv

``corrupt`` relabels ``fraction`` of the train JSON's boxes (chosen with ``--seed``) as another
class drawn uniformly, writes the copy as ``OUT/<train JSON's name>``, the planted annotation ids
(with their true and written class) as ``OUT/planted.json``, and a copy of the config that trains
on it as ``OUT/<OUT's name>.yaml`` (its run name the same). ``recall`` reads the audit's CSV and
prints, at several cuts of its ranking (the number planted, twice it, ...), the share of the
planted boxes found there: over all rows (as the CSV is sorted), over the labelled boxes' rows,
and with the boxes sorted by their swap score alone (what one looking for wrong classes reads).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import yaml


def corrupt(config: Path, fraction: float, out: Path, seed: int) -> None:
    raw = yaml.safe_load(config.read_text())
    train_json = Path(raw["data"]["train_json"])
    coco = json.loads(train_json.read_text())
    categories = [c["id"] for c in coco["categories"]]
    names = {c["id"]: c["name"] for c in coco["categories"]}
    rng = np.random.default_rng(seed)
    annotations = coco["annotations"]
    chosen = rng.choice(len(annotations), size=round(fraction * len(annotations)), replace=False)
    planted = []
    for i in sorted(chosen.tolist()):
        a = annotations[i]
        others = [c for c in categories if c != a["category_id"]]
        new = int(rng.choice(others))
        planted.append({"annotation_id": a["id"], "image_id": a["image_id"], "true": names[a["category_id"]], "written": names[new]})
        a["category_id"] = new
    out.mkdir(parents=True, exist_ok=True)
    (out / train_json.name).write_text(json.dumps(coco))
    (out / "planted.json").write_text(json.dumps(planted, indent=1))
    raw["data"]["train_json"] = str(out / train_json.name)
    raw.setdefault("run", {})["name"] = out.name
    written = out / f"{out.name}.yaml"
    written.write_text(f"# {config} with {len(planted)} of its {len(annotations)} train boxes relabelled (tools/label_noise.py, seed {seed})\n"
                       + yaml.safe_dump(raw, sort_keys=False))
    print(f"relabelled {len(planted)} of {len(annotations)} boxes: {out / train_json.name}, {out / 'planted.json'}, {written}")


def recall(planted_path: Path, issues: Path) -> None:
    planted = {p["annotation_id"] for p in json.loads(planted_path.read_text())}
    with issues.open(newline="") as f:
        rows = list(csv.DictReader(f))
    ranked_all = [int(r["annotation_id"]) if r["annotation_id"] else None for r in rows]
    ranked_boxes = [a for a in ranked_all if a is not None]
    missing = planted - set(ranked_boxes)
    planted -= missing  # boxes of images training skips (bad records) are not audited
    n = len(planted)
    if missing:
        print(f"{len(missing)} planted boxes are in images the audit did not score (skipped as bad records): left out")
    print(f"{n} planted among {len(ranked_boxes)} labelled boxes ({len(ranked_all) - len(ranked_boxes)} overlooked-object rows besides)")
    by_swap = [int(r["annotation_id"]) for r in sorted((r for r in rows if r["annotation_id"]), key=lambda r: float(r["swap"]))]
    print("| cut | recall over all rows | over the labelled boxes' rows | by the swap column alone |")
    print("|---|---|---|---|")
    for cut in (n // 2, n, 2 * n, 4 * n):
        found = [len(planted & set(ranked[:cut])) for ranked in (ranked_all, ranked_boxes, by_swap)]
        print(f"| top {cut} | " + " | ".join(f"{f / n:.2f} ({f})" for f in found) + " |")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python tools/label_noise.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    c = commands.add_parser("corrupt")
    c.add_argument("--config", type=Path, required=True)
    c.add_argument("--fraction", type=float, default=0.05)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--seed", type=int, default=0)
    r = commands.add_parser("recall")
    r.add_argument("--planted", type=Path, required=True)
    r.add_argument("--issues", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "corrupt":
        corrupt(args.config, args.fraction, args.out, args.seed)
    else:
        recall(args.planted, args.issues)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
