"""A UserError raised in a DataLoader worker reaches the user as the worker's own message (the
file, the record, the fix): one line from ``detector train``, exit status 2, not the worker's
traceback that PyTorch wraps it in."""

from __future__ import annotations

import json
import traceback
from pathlib import Path

import pytest
from torch.utils.data import DataLoader, Dataset

from detector.data.dataset import DetectionDataset, collate_detections
from detector.data.records import load_records
from detector.data.transforms import DetectionTransform
from detector.errors import BadRecordError, ConfigError, MissingFileError, UserError
from helpers import detector, tiny_config, tiny_shapes


def cut(path: Path, n: int = 20) -> Path:
    """``path`` without its last ``n`` bytes: a truncated JPEG whose header still reads."""
    path.write_bytes(path.read_bytes()[:-n])
    return path


class Raising(Dataset):
    """Item 2 raises ``error`` (chained onto an OSError, as a decode failure is)."""

    def __init__(self, error: Exception):
        self.error = error

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> int:
        if i == 2:
            try:
                raise OSError("image file is truncated")
            except OSError as e:
                raise self.error from e
        return i


@pytest.mark.parametrize("error", [
    BadRecordError("a.json: image id 3 (b.jpg): cannot be decoded; fix or remove the file"),
    MissingFileError("b.jpg: file not found;\n  a second line"),
    ConfigError("data.image_size: 0 is not a size"),
], ids=["bad-record", "missing-file-two-lines", "config"])
def test_a_user_error_from_a_worker_keeps_its_type_and_message_alone(error: UserError):
    with pytest.raises(type(error)) as info:
        list(DataLoader(Raising(error), num_workers=1))
    assert str(info.value) == str(error)
    assert info.value.__notes__ == ["(raised in DataLoader worker process 0; re-raised in the main process)"]


def test_the_same_user_error_without_workers_is_untouched():
    error = BadRecordError("a.json: image id 3 (b.jpg): cannot be decoded")
    with pytest.raises(BadRecordError) as info:
        list(DataLoader(Raising(error), num_workers=0))
    assert info.value is error and not getattr(error, "__notes__", None)


def test_a_message_that_merely_starts_like_a_worker_frame_is_kept_whole():
    """Only PyTorch's frame of the same type, ending in that type's traceback line, is unwrapped."""
    other = "Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\nValueError: x"
    assert str(BadRecordError(other)) == other
    no_last_line = "Caught BadRecordError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n  nothing"
    assert str(BadRecordError(no_last_line)) == no_last_line
    assert BadRecordError("a", "b").args == ("a", "b")


def test_the_frame_pytorch_builds_is_the_one_unwrapped():
    """The string PyTorch's ExceptionWrapper.reraise passes (its format, rebuilt here from a real
    traceback) gives back the message, so a change in either shows here."""
    try:
        raise BadRecordError("x.json: image id 1 (y.jpg): cannot be decoded")
    except BadRecordError as e:
        text = "Caught BadRecordError in DataLoader worker process 3.\nOriginal " + "".join(traceback.format_exception(e))
    again = BadRecordError(text)
    assert str(again) == "x.json: image id 1 (y.jpg): cannot be decoded"
    assert again.__notes__ == ["(raised in DataLoader worker process 3; re-raised in the main process)"]


def test_a_truncated_jpeg_read_in_a_worker_names_the_json_the_image_and_the_fix(tmp_path: Path):
    root = tiny_shapes(tmp_path / "shapes")
    split = load_records(root / "shapes_train.json", root / "JPEGImages")
    victim = cut(split.records[1].path)
    dataset = DetectionDataset(split, DetectionTransform("none", 64))
    with pytest.raises(BadRecordError) as info:
        list(DataLoader(dataset, batch_size=4, num_workers=1, collate_fn=collate_detections))
    text = str(info.value)
    assert text.startswith(f"{root / 'shapes_train.json'}: image id {split.records[1].image_id}: {victim}: cannot be decoded"), text
    assert "truncated" in text and "detector data import restores a truncated image" in text, text
    assert text.endswith("set data.on_bad_record: skip to drop it"), text
    assert "Traceback" not in text and "Caught" not in text, text


def test_train_ends_with_the_workers_line_and_status_2(tmp_path: Path, one_thread):
    """``detector train fit`` with loader workers, a val image truncated after the import: the
    sanity check stops on it; the last line of stderr names it and the fix, the status is 2."""
    root = tiny_shapes(tmp_path / "shapes")
    val = json.loads((root / "shapes_val.json").read_text())
    victim = cut(root / "JPEGImages" / val["images"][0]["file_name"])
    config = tiny_config(tmp_path, root, epochs=2)
    config.write_text(config.read_text().replace("num_workers: 0", "num_workers: 1"))
    code, err = detector("train", "fit", "--config", str(config))
    last = err.strip().splitlines()[-1]
    assert code == 2, err[-3000:]
    assert last.startswith(f"detector train: {root / 'shapes_val.json'}: image id {val['images'][0]['id']}: {victim}"), last
    assert last.endswith("set data.on_bad_record: skip to drop it") and "Traceback" not in last, last
    assert len(last) < 500, last
