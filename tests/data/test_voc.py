"""VOC tools: resumable, checksummed downloads (against a local server) and the VOCdevkit converter."""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import tarfile
import threading
import zipfile
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from conftest import shared_path
from detector.data import download as voc_download
from detector.data.download import Download, DownloadError, download
from detector.data.records import BadRecordError, load_records
from detector.data.voc import VocFormatError, convert_devkit
from helpers import detector

PAYLOAD = bytes(range(256)) * 400  # 102,400 bytes
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


# ---------------------------------------------------------------------------------------------
# A local HTTP server with Range support (and switches to misbehave)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server API
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        data = server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = 0
        asked = self.headers.get("Range")
        if asked and server.honour_range:
            start = int(asked.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if server.cut_after is not None:  # the connection drops mid-transfer
            body, server.cut_after = body[:server.cut_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.honour_range, httpd.cut_after = {"/file.bin": PAYLOAD}, [], True, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/file.bin"  # nothing listens there any more


def test_download_fresh_file_checks_md5_and_leaves_no_part(server, tmp_path):
    dest = download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "file.bin.part").exists()
    assert server.requests == [("/file.bin", None)]
    download(server.url + "/file.bin", dest, PAYLOAD_MD5)  # present and correct: no request
    assert len(server.requests) == 1


def test_download_resumes_a_part_file_with_a_range_request(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD[:30000])
    dest = download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5)
    assert server.requests == [("/file.bin", "bytes=30000-")]
    assert dest.read_bytes() == PAYLOAD


def test_download_restarts_when_the_server_ignores_range(server, tmp_path):
    server.honour_range = False
    (tmp_path / "file.bin.part").write_bytes(b"stale bytes from elsewhere")
    dest = download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5)
    assert server.requests == [("/file.bin", "bytes=26-")]
    assert dest.read_bytes() == PAYLOAD


def test_download_accepts_a_part_that_is_already_whole(server, tmp_path):
    (tmp_path / "file.bin.part").write_bytes(PAYLOAD)
    dest = download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5)
    assert server.requests == [("/file.bin", f"bytes={len(PAYLOAD)}-")]  # answered 416: nothing left
    assert dest.read_bytes() == PAYLOAD


def test_an_interrupted_transfer_keeps_its_part_and_resumes(server, tmp_path):
    server.cut_after = 40000
    with pytest.raises(DownloadError, match="run again to resume"):
        download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5, chunk_size=4096)
    kept = (tmp_path / "file.bin.part").stat().st_size
    assert 0 < kept <= 40000 and not (tmp_path / "file.bin").exists()
    dest = download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5, chunk_size=4096)
    assert server.requests[-1] == ("/file.bin", f"bytes={kept}-")
    assert dest.read_bytes() == PAYLOAD


def test_checksum_mismatch_is_an_error_and_deletes_the_download(server, tmp_path):
    with pytest.raises(DownloadError, match=f"file.bin: md5 {PAYLOAD_MD5} does not match the expected 0+"):
        download(server.url + "/file.bin", tmp_path / "file.bin", "0" * 32)
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_existing_file_is_downloaded_again(server, tmp_path):
    (tmp_path / "file.bin").write_bytes(b"corrupt")
    assert download(server.url + "/file.bin", tmp_path / "file.bin", PAYLOAD_MD5).read_bytes() == PAYLOAD


def test_offline_is_one_line_naming_the_url(tmp_path):
    url = _closed_port_url()
    with pytest.raises(DownloadError) as error:
        download(url, tmp_path / "file.bin", PAYLOAD_MD5, timeout=5)
    message = str(error.value)
    assert "\n" not in message and url in message and "file.bin" in message and "offline" in message


def test_a_mirror_is_tried_when_the_first_url_fails(server, tmp_path):
    dest = download([_closed_port_url(), server.url + "/file.bin"], tmp_path / "file.bin", PAYLOAD_MD5)
    assert dest.read_bytes() == PAYLOAD


def test_http_errors_name_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=r"/missing.bin \(HTTP Error 404"):
        download(server.url + "/missing.bin", tmp_path / "missing.bin")


# ---------------------------------------------------------------------------------------------
# download_voc2007 end to end, on tiny stand-ins for the three archives


def _tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _course_zip(counts: dict[str, int]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, n in counts.items():
            images = [{"file_name": f"{i:06d}.jpg", "height": 1, "width": 1, "id": i} for i in range(n)]
            content = {"images": images, "annotations": [], "categories": []}
            zf.writestr(f"PASCAL_VOC/{name}", json.dumps(content))
    return buffer.getvalue()


def _fake_voc(server, counts=voc_download.COURSE_JSON_IMAGES) -> tuple[Download, ...]:
    server.files.update({
        "/trainval.tar": _tar({"VOCdevkit/VOC2007/JPEGImages/000005.jpg": b"a",
                               "VOCdevkit/VOC2007/Annotations/000005.xml": b"<annotation/>"}),
        "/test.tar": _tar({"VOCdevkit/VOC2007/JPEGImages/000001.jpg": b"b"}),
        "/PASCAL_VOC.zip": _course_zip(counts),
    })
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in server.files.items()}
    return (Download((server.url + "/trainval.tar",), "VOCtrainval_06-Nov-2007.tar", md5["/trainval.tar"]),
            Download((server.url + "/test.tar",), "VOCtest_06-Nov-2007.tar", md5["/test.tar"]),
            Download((server.url + "/PASCAL_VOC.zip",), "PASCAL_VOC.zip", None))


def test_download_voc2007_builds_the_documented_layout(server, tmp_path):
    voc_download.download_voc2007(tmp_path, _fake_voc(server))
    images = tmp_path / "VOCdevkit" / "VOC2007" / "JPEGImages"
    assert sorted(p.name for p in images.iterdir()) == ["000001.jpg", "000005.jpg"]  # both tars, merged
    for name, n in voc_download.COURSE_JSON_IMAGES.items():
        assert len(json.loads((tmp_path / name).read_text())["images"]) == n
    requests = len(server.requests)
    voc_download.download_voc2007(tmp_path, _fake_voc(server))  # done already: no request
    assert len(server.requests) == requests


def test_download_voc2007_checks_the_unchecksummed_jsons_by_content(server, tmp_path):
    wrong = {**voc_download.COURSE_JSON_IMAGES, "pascal_val2007.json": 7}
    with pytest.raises(DownloadError, match=r"pascal_val2007.json: 7 images, expected 2510"):
        voc_download.download_voc2007(tmp_path, _fake_voc(server, wrong))
    assert not (tmp_path / "PASCAL_VOC.zip").exists()  # so that the next run fetches it afresh


def test_download_command_offline_exits_with_one_line(tmp_path, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setattr(voc_download, "VOC2007_DOWNLOADS", (Download((url,), "VOCtest_06-Nov-2007.tar", "0" * 32),))
    code, err = detector("data", "download-voc", "--root", str(tmp_path))
    assert code == 2 and err.startswith("detector data: cannot download VOCtest_06-Nov-2007.tar") and url in err
    assert err.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The converter


def _write_devkit(root: Path, images: list[dict], objects: dict[int, list[dict]],
                  splits: dict[str, list[str]]) -> Path:
    """A VOCdevkit folder: one XML per image (``objects``: name, box (1-based corners), difficult)."""
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for image in images:
        stem = Path(image["file_name"]).stem
        body = "".join(
            f"<object><name>{escape(o['name'])}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(o['difficult'])}</difficult><bndbox><xmin>{o['box'][0]}</xmin>"
            f"<ymin>{o['box'][1]}</ymin><xmax>{o['box'][2]}</xmax><ymax>{o['box'][3]}</ymax></bndbox></object>"
            for o in objects.get(image["id"], []))
        (root / "Annotations" / f"{stem}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image['file_name']}</filename><size>"
            f"<width>{image['width']}</width><height>{image['height']}</height><depth>3</depth></size>"
            f"<segmented>0</segmented>{body}</annotation>")
    for split, stems in splits.items():
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{s}\n" for s in stems))
    return root


def test_converting_the_sample_reproduces_the_course_json(voc_sample, tmp_path):
    course = json.loads((voc_sample / "pascal_sample2007.json").read_text())
    names = {c["id"]: c["name"] for c in course["categories"]}
    objects: dict[int, list[dict]] = {}
    for a in course["annotations"]:  # invert the course's conversion
        x, y, w, h = a["bbox"]
        objects.setdefault(a["image_id"], []).append(
            {"name": names[a["category_id"]], "box": (x + 1, y + 1, x + w, y + h), "difficult": a["ignore"]})
    stems = [Path(im["file_name"]).stem for im in course["images"]]
    devkit = _write_devkit(tmp_path / "VOC2007", course["images"], objects, {"test": stems})

    written = convert_devkit(devkit, tmp_path / "out")
    assert written == {"test": tmp_path / "out" / "pascal_test2007.json"}
    ours = json.loads(written["test"].read_text())
    assert ours["type"] == course["type"]
    assert ours["categories"] == course["categories"]
    assert ours["images"] == course["images"]
    assert len(ours["annotations"]) == len(course["annotations"]) == 42
    for mine, theirs in zip(ours["annotations"], course["annotations"]):
        assert mine == theirs  # bbox, category_id, ignore, image_id, area, segmentation, iscrowd, id
    assert sum(a["ignore"] for a in ours["annotations"]) == 7


def _counts(path: Path) -> tuple[int, Counter]:
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    return len(data["images"]), Counter(names[a["category_id"]] for a in data["annotations"])


def test_convert_bccd_counts_per_class_and_split(tmp_path):
    written = convert_devkit(shared_path("bccd"), tmp_path)
    assert {s: p.name for s, p in written.items()} == {
        "train": "bccd_train.json", "val": "bccd_val.json", "trainval": "bccd_trainval.json",
        "test": "bccd_test.json"}
    counts = {split: _counts(path) for split, path in written.items()}
    n_images = {split: n for split, (n, _) in counts.items()}
    assert n_images == {"train": 205, "val": 87, "trainval": 292, "test": 72}
    assert counts["trainval"][1] == counts["train"][1] + counts["val"][1]
    total = counts["trainval"][1] + counts["test"][1]
    assert total == Counter({"RBC": 4155, "WBC": 372, "Platelets": 361}) and sum(total.values()) == 4888
    data = {split: json.loads(path.read_text()) for split, path in written.items()}
    assert [c["name"] for c in data["train"]["categories"]] == ["Platelets", "RBC", "WBC"]  # sorted: not VOC's
    ids = {im["file_name"]: im["id"] for split in data.values() for im in split["images"]}
    assert sorted(ids.values()) == list(range(1, 365))  # one id per image, the same in every split
    assert ids["BloodImage_00000.jpg"] == 1


def test_bccd_zero_area_boxes_are_caught_by_the_loader(tmp_path, capsys):
    bccd = shared_path("bccd")
    written = convert_devkit(bccd, tmp_path, splits=["trainval"])
    err = capsys.readouterr().err
    assert "BloodImage_00338.xml object 12" in err and "BloodImage_00343.xml object 3" in err
    data = json.loads(written["trainval"].read_text())
    files = {im["id"]: im["file_name"] for im in data["images"]}
    empty = [a for a in data["annotations"] if a["bbox"][2] <= 0 or a["bbox"][3] <= 0]
    assert sorted(files[a["image_id"]] for a in empty) == ["BloodImage_00338.jpg", "BloodImage_00343.jpg"]

    with pytest.raises(BadRecordError) as error:
        load_records(written["trainval"], bccd / "JPEGImages", verify_images=False)
    message = str(error.value)
    assert str(written["trainval"]) in message
    for a in empty:
        assert f"annotation id {a['id']} (image id {a['image_id']}" in message
    assert message.count("width or height <= 0") == 2  # nothing else is wrong with BCCD

    loaded = load_records(written["trainval"], bccd / "JPEGImages", on_bad_record="skip",
                          verify_images=False)
    kept = {r.image_id for r in loaded.records}
    assert kept == set(files) - {a["image_id"] for a in empty}
    assert all(((r.boxes[:, 2:] - r.boxes[:, :2]) > 0).all() for r in loaded.records)


def test_convert_raccoon_counts_and_loads(tmp_path):
    raccoon = shared_path("raccoon")
    written = convert_devkit(raccoon, tmp_path)
    counts = {split: _counts(path) for split, path in written.items()}
    assert {split: n for split, (n, _) in counts.items()} == {"train": 160, "test": 40}
    assert counts["train"][1] + counts["test"][1] == Counter({"raccoon": 217})
    for path in written.values():
        loaded = load_records(path, raccoon / "JPEGImages")  # sizes match the JPEGs, no bad box
        assert loaded.report.skipped_images == 0 and loaded.report.clipped == 0


_IMAGE = {"file_name": "a1.jpg", "width": 100, "height": 80, "id": 1}


def test_classes_option_orders_categories_and_rejects_others(tmp_path):
    objects = {1: [{"name": "dog", "box": (1, 1, 10, 10), "difficult": 0},
                   {"name": "cat", "box": (5, 5, 20, 20), "difficult": 1}]}
    devkit = _write_devkit(tmp_path / "pets", [_IMAGE], objects, {"train": ["a1"]})
    written = convert_devkit(devkit, tmp_path / "out", classes=["dog", "cat", "bird"])
    data = json.loads(written["train"].read_text())
    assert [c["name"] for c in data["categories"]] == ["dog", "cat", "bird"]
    converted = [(a["category_id"], a["bbox"], a["ignore"]) for a in data["annotations"]]
    assert converted == [(1, [0, 0, 10, 10], 0), (2, [4, 4, 16, 16], 1)]
    assert data["images"][0]["id"] == 1  # stem "a1" is not an integer: rank in sorted order
    with pytest.raises(VocFormatError, match=r"a1.xml object 1: class 'cat' is not one of \['dog'\]"):
        convert_devkit(devkit, tmp_path / "out", classes=["dog"])


@pytest.mark.parametrize("xml, expected", [
    ("<annotation><size><width>10</width>", r"a1.xml: not well-formed XML"),
    ("<annotation><object><name>x</name></object></annotation>", r"a1.xml: missing <size>"),
    ("<annotation><size><width>10</width><height>10</height></size><object><name>x</name><bndbox>"
     "<xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object><object><name>y</name>"
     "<bndbox><xmin>1</xmin><ymin>1</ymin><ymax>5</ymax></bndbox></object></annotation>",
     r"a1.xml object 1 \(y\): missing <xmax>"),
    ("<annotation><size><width>10</width><height>10</height></size><object><name>x</name><bndbox>"
     "<xmin>one</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object></annotation>",
     r"a1.xml object 0 \(x\): <xmin> is 'one', not a number"),
])
def test_malformed_xml_is_reported_naming_the_file_and_object(tmp_path, xml, expected):
    devkit = _write_devkit(tmp_path / "bad", [_IMAGE], {}, {"train": ["a1"]})
    (devkit / "Annotations" / "a1.xml").write_text(xml)
    with pytest.raises(VocFormatError, match=expected):
        convert_devkit(devkit, tmp_path / "out")


def test_a_split_listing_a_missing_xml_is_an_error(tmp_path):
    devkit = _write_devkit(tmp_path / "kit", [_IMAGE], {}, {"train": ["a1", "a2"]})
    with pytest.raises(VocFormatError, match=r"train.txt lists 'a2', but .*a2.xml does not exist"):
        convert_devkit(devkit, tmp_path / "out")
    with pytest.raises(VocFormatError, match=r"val.txt: split file not found"):
        convert_devkit(devkit, tmp_path / "out", splits=["val"])


def test_convert_command_line(tmp_path):
    devkit = _write_devkit(tmp_path / "VOC2012", [{**_IMAGE, "file_name": "2008_000001.jpg"}],
                           {1: [{"name": "dog", "box": (1, 2, 3, 4), "difficult": 0}]},
                           {"val": ["2008_000001"]})
    code, err = detector("data", "convert-voc", "--devkit", str(devkit), "--out", str(tmp_path / "out"))
    assert code == 0, err
    data = json.loads((tmp_path / "out" / "pascal_val2012.json").read_text())
    assert len(data["categories"]) == 20 and data["annotations"][0]["bbox"] == [0, 1, 3, 3]
    (devkit / "Annotations" / "2008_000001.xml").write_text("<annotation>")
    code, err = detector("data", "convert-voc", "--devkit", str(devkit), "--out", str(tmp_path / "out"))
    assert code == 2 and re.match(r"detector data: .*2008_000001.xml: not well-formed XML", err), err
