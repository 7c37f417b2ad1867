"""Batches: collate padding and dtypes, per-sample determinism, the DataModule and Lightning's epoch hook."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

import detector.data.dataset as dataset_module
import detector.data.image_cache as image_cache_module
import detector.data.shapes as shapes_module
from coco_files import tiny_coco, write_jpeg, write_json
from detector.data.datamodule import DetectionDataModule, ShapesSpec
from detector.data.dataset import DetectionDataset, collate_detections
from detector.data.image import reduced_size
from detector.data.records import BadRecordError, load_records
from detector.data.samplers import EpochSampler, ShardSampler, sample_seed
from detector.data.transforms import DetectionTransform

S = 32


@pytest.fixture
def coco_json(tmp_path: Path) -> Path:
    return write_json(tmp_path / "split.json", tiny_coco(tmp_path))


def dataset(json_path: Path, preset: str = "lesson", seed: int = 0) -> DetectionDataset:
    split = load_records(json_path, json_path.parent / "images")
    return DetectionDataset(split, DetectionTransform(preset, S), seed=seed)


def fake_sample(n: int, image_id: int) -> dict:
    return {
        "image": torch.rand(3, S, S),
        "boxes": torch.rand(n, 4),
        "labels": torch.arange(n, dtype=torch.int64),
        "difficult": torch.ones(n, dtype=torch.bool),
        "image_id": image_id,
        "size": (480 + image_id, 640),
    }


# ------------------------------------------------------------------------------------ collate


def test_collate_pads_to_the_largest_count():
    samples = [fake_sample(2, 1), fake_sample(0, 2), fake_sample(3, 3)]
    batch = collate_detections(samples)
    assert batch["images"].shape == (3, 3, S, S) and batch["images"].dtype == torch.float32
    assert batch["boxes"].shape == (3, 3, 4) and batch["boxes"].dtype == torch.float32
    assert batch["labels"].dtype == torch.int64 and batch["difficult"].dtype == torch.bool
    assert batch["labels"].tolist() == [[0, 1, -1], [-1, -1, -1], [0, 1, 2]]
    assert batch["difficult"].tolist() == [[True, True, False], [False, False, False], [True, True, True]]
    for b, s in enumerate(samples):
        n = len(s["labels"])
        assert torch.equal(batch["boxes"][b, :n], s["boxes"])
        assert (batch["boxes"][b, n:] == 0).all()
    assert batch["image_ids"].tolist() == [1, 2, 3] and batch["image_ids"].dtype == torch.int64
    assert batch["sizes"].tolist() == [[481, 640], [482, 640], [483, 640]] and batch["sizes"].dtype == torch.int64


def test_collate_batch_without_objects():
    batch = collate_detections([fake_sample(0, 1), fake_sample(0, 2)])
    assert batch["boxes"].shape == (2, 0, 4) and batch["boxes"].dtype == torch.float32
    assert batch["labels"].shape == (2, 0) and batch["labels"].dtype == torch.int64
    assert batch["difficult"].shape == (2, 0) and batch["difficult"].dtype == torch.bool
    assert batch["sizes"].shape == (2, 2)


# ------------------------------------------------------------------------------------ dataset


def test_sample_from_real_files(coco_json: Path):
    ds = dataset(coco_json, "none")
    sample = ds[0]
    assert sample["image"].shape == (3, S, S) and sample["image_id"] == 10 and sample["size"] == (48, 64)
    torch.testing.assert_close(sample["boxes"], torch.tensor([[4, 6, 24, 16], [30, 20, 54, 40]]) / torch.tensor([64.0, 48, 64, 48]))
    assert sample["labels"].tolist() == [0, 1] and sample["difficult"].tolist() == [False, True]
    batch = collate_detections([ds[i] for i in range(3)])  # objects: 2, 1, 0
    assert batch["labels"].tolist() == [[0, 1], [1, -1], [-1, -1]]


def test_labels_and_difficult_follow_their_boxes(coco_json: Path):
    """Image 10 has a small plain 'dog' box and a bigger difficult 'cat' box: whatever the
    augmentation does, the bigger output box must still be the difficult cat."""
    ds = dataset(coco_json, "strong")
    for epoch in range(12):
        s = ds[(epoch, 0)]
        area = (s["boxes"][:, 2] - s["boxes"][:, 0]) * (s["boxes"][:, 3] - s["boxes"][:, 1])
        if len(area) == 2:
            big = int(area.argmax())
            assert s["labels"][big] == 1 and s["difficult"][big]
            assert s["labels"][1 - big] == 0 and not s["difficult"][1 - big]
        else:
            assert len(s["labels"]) == len(s["difficult"]) == len(s["boxes"]) >= 1


def test_same_seed_epoch_index_same_sample(coco_json: Path):
    ds = dataset(coco_json, "lesson", seed=7)
    ds.set_epoch(3)
    a = ds[1]
    b = dataset(coco_json, "lesson", seed=7)[(3, 1)]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
    others = [ds[(e, 1)]["image"] for e in range(6)]
    assert sum(not torch.equal(a["image"], o) for o in others) >= 3
    seeds = [sample_seed(7, 3, 1), sample_seed(7, 1, 3), sample_seed(8, 3, 1)]
    assert len(set(seeds)) == 3, seeds  # all three differ (a != b != c never compares a with c)


def batches(json_path: Path, epoch: int, num_workers: int) -> list[dict]:
    ds = dataset(json_path, "lesson", seed=5)
    sampler = EpochSampler(len(ds), seed=5)
    sampler.set_epoch(epoch)
    loader = DataLoader(ds, batch_size=2, sampler=sampler, collate_fn=collate_detections, num_workers=num_workers)
    return list(loader)


def same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(torch.equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


def test_determinism_with_zero_and_two_workers(tmp_path: Path):
    data = tiny_coco(tmp_path)
    for k in range(3):  # six images, so that orders and augmentations have room to differ
        image = dict(data["images"][k], id=20 + k)
        data["images"].append(image)
        data["annotations"] += [dict(a, id=100 + a["id"] + k, image_id=20 + k) for a in data["annotations"][:3] if a["image_id"] == 10 + k]
    json_path = write_json(tmp_path / "six.json", data)
    in_process = batches(json_path, epoch=2, num_workers=0)
    assert same(in_process, batches(json_path, epoch=2, num_workers=2))
    assert not same(in_process, batches(json_path, epoch=3, num_workers=0))
    ids = torch.cat([b["image_ids"] for b in in_process]).tolist()
    assert sorted(ids) == [10, 11, 12, 20, 21, 22]


def test_decode_failure_names_file_and_image_id(coco_json: Path):
    ds = dataset(coco_json)
    path = coco_json.parent / "images" / "a.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # corrupted after validation
    with pytest.raises(BadRecordError, match=r"split\.json: image id 10: .*a\.jpg: cannot be decoded"):
        ds[0]
    path.unlink()
    with pytest.raises(BadRecordError, match=r"split\.json: image id 10: .*a\.jpg: file not found"):
        ds[0]


def test_image_replaced_by_another_size_after_validation(coco_json: Path):
    ds = dataset(coco_json)
    Image.new("RGB", (50, 48)).save(coco_json.parent / "images" / "b.jpg")
    with pytest.raises(BadRecordError, match=r"image id 11 \(.*b\.jpg\): decoded as 50 x 48 .* JSON says 64 x 48"):
        ds[1]


def test_large_image_is_decoded_reduced_and_its_boxes_follow(tmp_path: Path):
    data = {
        "images": [{"id": 1, "file_name": "big.jpg", "width": 900, "height": 700}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [300, 100, 450, 350], "category_id": 1}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    write_jpeg(tmp_path / "images" / "big.jpg", 900, 700, [[300, 100, 750, 450]])
    ds = dataset(write_json(tmp_path / "big.json", data), "none")
    assert reduced_size((900, 700), ds.transform.size) != (900, 700)  # the reduced path is taken
    sample = ds[0]
    expected = torch.tensor([[300 / 900, 100 / 700, 750 / 900, 450 / 700]])
    torch.testing.assert_close(sample["boxes"], expected)
    rgb = sample["image"][0] - sample["image"][1]  # (S, S) red minus green, normalised units
    ys, xs = torch.nonzero(rgb > 2, as_tuple=True)
    found = torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float() / S
    torch.testing.assert_close(found, expected[0], atol=1.5 / S, rtol=0)


def test_cached_images_give_the_same_samples_without_decoding_again(coco_json: Path, monkeypatch: pytest.MonkeyPatch):
    plain = dataset(coco_json, "lesson", seed=3)
    cached = DetectionDataset(plain.split, plain.transform, seed=3, cache_images=True)
    decoded: list[str] = []
    real_load = dataset_module.load_image
    monkeypatch.setattr(dataset_module, "load_image", lambda path, **kw: decoded.append(Path(path).name) or real_load(path, **kw))
    for epoch in range(3):  # the lesson set flips and rotates: every epoch differs, from the same cached pixels
        for i in range(len(plain)):
            a, b = plain[(epoch, i)], cached[(epoch, i)]
            assert torch.equal(a["image"], b["image"]) and torch.equal(a["boxes"], b["boxes"])
            assert torch.equal(a["labels"], b["labels"])
    assert decoded.count("a.jpg") == 3 + 1  # plain: every epoch; cached: the first only
    assert sorted(cached.cache) == [0, 1, 2] and not cached.cache[0].flags.writeable


def test_cache_that_does_not_fit_in_memory_is_refused(coco_json: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(image_cache_module, "_available_memory", lambda: 10_000)  # bytes: the 3 images need 27,648 x 2
    dm = datamodule(coco_json, cache_images=True, num_workers=2)
    with pytest.raises(ValueError, match=r"cache_images needs 0\.00 GiB \(0\.00 GiB x 2 loader processes\) for .*split\.json"):
        dm.setup("fit")
    monkeypatch.setattr(image_cache_module, "_available_memory", lambda: 10**9)
    dm = datamodule(coco_json, cache_images=True)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(list(loader)) == 1 and len(loader.dataset.cache) == 2  # one batch of 2 (the third image dropped)


@pytest.mark.parametrize("name, refused", [("big.jpg", False), ("big.png", True)])
def test_cache_size_counts_only_jpegs_at_their_reduced_scale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, refused: bool):
    """A 900 x 700 JPEG decodes at 1/8 for S = 32 (113 x 88); a PNG always decodes at full size."""
    data = {
        "images": [{"id": 1, "file_name": name, "width": 900, "height": 700}],
        "annotations": [{"id": 1, "image_id": 1, "bbox": [300, 100, 450, 350], "category_id": 1}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    write_jpeg(tmp_path / "images" / name, 900, 700, [[300, 100, 750, 450]])  # PIL picks the format by suffix
    monkeypatch.setattr(image_cache_module, "_available_memory", lambda: 900 * 700 * 3 - 1)
    dm = datamodule(write_json(tmp_path / "big.json", data), cache_images=True, batch_size=1)
    if refused:
        with pytest.raises(ValueError, match="cache_images needs"):
            dm.setup("fit")
    else:
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert next(iter(loader))["images"].shape == (1, 3, S, S)
        assert [a.shape for a in loader.dataset.cache.values()] == [(88, 113, 3)]  # what the estimate counted


# ------------------------------------------------------------------------------------ DataModule


def datamodule(json_path: Path, **kwargs) -> DetectionDataModule:
    args = dict(image_dir=str(json_path.parent / "images"), train_json=str(json_path), image_size=S,
                batch_size=2, num_workers=0)
    return DetectionDataModule(**(args | kwargs))


def test_datamodule_loaders(coco_json: Path):
    dm = datamodule(coco_json, val_json=str(coco_json))
    assert dm.class_names == ["dog", "cat"] and dm.num_classes == 2  # before setup
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == 1 and train[0]["images"].shape == (2, 3, S, S)  # 3 images: the last batch of 1 dropped
    val = list(dm.val_dataloader())
    assert [b["image_ids"].tolist() for b in val] == [[10, 11], [12]]  # every image once, in order
    assert val[0]["boxes"].shape == (2, 2, 4) and val[1]["labels"].shape == (1, 0)
    with pytest.raises(ValueError, match="needs data.test_json"):
        dm.setup("test")


def test_voc_sample_batches(voc_sample: Path):
    json_path = str(voc_sample / "pascal_sample2007.json")
    dm = DetectionDataModule(image_dir=str(voc_sample / "JPEGImages"), train_json=json_path, val_json=json_path,
                             image_size=S, batch_size=4, num_workers=0, train_augment="ssd")
    dm.setup("fit")
    for loader, batches, images in ((dm.train_dataloader(), 3, 12), (dm.val_dataloader(), 4, 13)):
        got = list(loader)
        assert len(got) == batches and sum(len(b["image_ids"]) for b in got) == images
        for b in got:
            real = b["labels"] >= 0  # (B, M)
            assert ((b["boxes"] >= 0) & (b["boxes"] <= 1)).all()
            assert (b["boxes"][real][:, 2:] > b["boxes"][real][:, :2]).all()
            assert (b["labels"][real] < dm.num_classes).all() and not b["difficult"][~real].any()
    val = list(dm.val_dataloader())
    assert sum(int((b["labels"] >= 0).sum()) for b in val) == 42
    assert sum(int(b["difficult"].sum()) for b in val) == 7


def test_small_train_split_is_not_dropped(coco_json: Path):
    dm = datamodule(coco_json, batch_size=8)
    dm.setup("fit")
    assert [len(b["image_ids"]) for b in dm.train_dataloader()] == [3]


def test_splits_must_share_classes(coco_json: Path, tmp_path: Path):
    data = tiny_coco(tmp_path)
    data["categories"].reverse()
    other = write_json(tmp_path / "other.json", data)
    dm = datamodule(coco_json, val_json=str(other))
    with pytest.raises(BadRecordError, match=r"other\.json: categories \['cat', 'dog'\] differ"):
        dm.setup("fit")


def test_datamodule_skip_mode(coco_json: Path):
    (coco_json.parent / "images" / "c.jpg").unlink()
    with pytest.raises(BadRecordError, match="image id 12"):
        datamodule(coco_json).setup("fit")
    with pytest.raises(BadRecordError, match="would skip 1 of 3 images"):  # a third: above max_skipped_fraction
        datamodule(coco_json, on_bad_record="skip").setup("fit")
    dm = datamodule(coco_json, on_bad_record="skip", max_skipped_fraction=0.5)
    dm.setup("fit")
    assert len(dm.splits["train"].records) == 2


def test_generate_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []
    monkeypatch.setattr(shapes_module, "ensure_shapes", lambda root, **kw: calls.append((Path(root), kw)))
    json_path = tmp_path / "shapes" / "shapes_train.json"
    spec = ShapesSpec(n_train=12, n_val=4)
    dm = DetectionDataModule(image_dir=str(tmp_path / "shapes" / "JPEGImages"), train_json=str(json_path), generate=spec)
    assert dm.class_names == list(shapes_module.CLASS_NAMES)  # the JSON does not exist yet
    dm.prepare_data()
    assert calls == [(tmp_path / "shapes", {"n_train": 12, "n_val": 4, "image_size": 256, "seed": 0})]


@pytest.mark.parametrize("length", [10, 11])
def test_ddp_samplers_cover_every_image_once(length: int):
    """Train shards are disjoint and equal in length; eval shards cover every index exactly once."""
    train = [list(EpochSampler(length, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(train[0]) == len(train[1]) == length // 2
    indices = [i for shard in train for _, i in shard]
    assert len(set(indices)) == len(indices)
    assert sorted(set(indices)) == sorted(i for _, i in list(EpochSampler(length, seed=3))[: 2 * (length // 2)])
    evals = [list(ShardSampler(length, 2, r)) for r in (0, 1)]
    assert sorted(evals[0] + evals[1]) == list(range(length))


class Recorder(L.LightningModule):
    """Keeps every training batch; the smallest module Lightning will fit."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[int, list[dict]] = {}

    def training_step(self, batch, batch_idx):
        self.seen.setdefault(self.current_epoch, []).append({k: v.clone() for k, v in batch.items()})
        return self.w * batch["images"].mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(dm: DetectionDataModule, root: Path, epochs: int, ckpt: str | None = None) -> Recorder:
    module = Recorder()
    trainer = L.Trainer(
        max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=root, num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt)
    return module


def test_lightning_drives_the_epoch_and_resume_repeats_it(tmp_path: Path):
    data = tiny_coco(tmp_path)
    data["images"] += [dict(data["images"][0], id=13), dict(data["images"][1], id=14)]
    json_path = write_json(tmp_path / "five.json", data)
    whole = fit(datamodule(json_path, seed=3), tmp_path / "a", epochs=3).seen
    assert sorted(whole) == [0, 1, 2]
    # what Lightning fed in epoch e is what the sampler and dataset give for (seed, e)
    for epoch, got in whole.items():
        dm = datamodule(json_path, seed=3)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        assert same(got, list(loader))
    assert not same(whole[1], whole[2])
    # stop after epoch 1, resume from its checkpoint: epoch 2 is the same as in the uninterrupted run
    fit(datamodule(json_path, seed=3), tmp_path / "b", epochs=2)
    ckpt = next((tmp_path / "b").rglob("*.ckpt"))
    resumed = fit(datamodule(json_path, seed=3), tmp_path / "b", epochs=3, ckpt=str(ckpt)).seen
    assert sorted(resumed) == [2] and same(resumed[2], whole[2])


def test_final_epochs_switch_the_augmentation_by_epoch_in_a_worker_too(tmp_path: Path):
    """data.final_epochs: the last epochs train with final_augment. What Lightning fed (loaded in a
    persistent worker process) is, epoch by epoch, what a data module with that preset gives."""
    data = tiny_coco(tmp_path)
    data["images"] += [dict(data["images"][0], id=13), dict(data["images"][1], id=14)]
    json_path = write_json(tmp_path / "five.json", data)
    dm = datamodule(json_path, seed=3, train_augment="strong", final_epochs=1, final_augment="none", num_workers=1)
    seen = fit(dm, tmp_path / "a", epochs=3).seen

    def reference(preset: str, epoch: int) -> list[dict]:
        ref = datamodule(json_path, seed=3, train_augment=preset)
        ref.setup("fit")
        loader = ref.train_dataloader()
        loader.sampler.set_epoch(epoch)
        return list(loader)

    for epoch in (0, 1):
        assert same(seen[epoch], reference("strong", epoch)) and not same(seen[epoch], reference("none", epoch))
    assert same(seen[2], reference("none", 2)) and not same(seen[2], reference("strong", 2))
    with pytest.raises(ValueError, match="data.final_epochs = 3 needs a run of more epochs"):
        fit(datamodule(json_path, final_epochs=3), tmp_path / "b", epochs=3)
