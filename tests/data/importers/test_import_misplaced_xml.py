"""A VOC devkit whose split files name an image whose XML is not in Annotations/ but beside the
image in JPEGImages/ or elsewhere under the folder (as in some published datasets): the importer
uses that XML and says so in one line; several candidates are refused, naming them."""

from __future__ import annotations

from pathlib import Path

from test_import import assert_truth

import import_files
from detector.data.importers.importer import import_dataset
from detector.data.importers.voc_xml import read_voc
from helpers import detector


def test_xmls_beside_their_image_or_elsewhere_are_used_and_said_so(tmp_path: Path):
    root = import_files.voc(tmp_path / "dk", "devkit", moved={"b": "JPEGImages", "f": "JPEGImages", "h": "extra/xml"})
    done = import_dataset(root, tmp_path / "pets")
    assert_truth(tmp_path / "pets", splits_kept=True)  # every image, its boxes and its split
    assert done.source.problems == []
    note = [n for n in done.source.notes if "split files name" in n]
    assert note == ["3 XML(s) that the split files name were not in Annotations/: used the one of the same stem in "
                    f"JPEGImages/ (2), extra/xml/ (1) (first: {root / 'JPEGImages' / 'b.xml'})"]
    assert f"  note: {note[0]}" in done.summary.splitlines()
    assert not any("without an XML" in n for n in done.source.notes)  # b, f and h are annotated


def test_the_command_prints_the_line_and_writes_the_jsons(tmp_path: Path):
    root = import_files.voc(tmp_path / "dk", "devkit", moved={"g": "JPEGImages"})
    code, err = detector("data", "import", str(root), "--out", str(tmp_path / "pets"))
    assert code == 0, err
    assert_truth(tmp_path / "pets", splits_kept=True)


def test_the_xml_beside_the_image_wins_over_one_elsewhere(tmp_path: Path):
    root = import_files.voc(tmp_path / "dk", "devkit", moved={"e": "JPEGImages"})
    import_files.voc_xml(root / "backup" / "e.xml", "e.jpg", (48, 36), [("dog", 1, 1, 9, 9)])  # another, not used
    src = read_voc(root)
    (e,) = [i for i in src.images if i.path.stem == "e"]
    assert [(b.label, b.xyxy) for b in e.boxes] == [("cat", (20.0, 10.0, 40.0, 30.0))] and e.where == str(root / "JPEGImages" / "e.xml")


def test_several_xmls_of_the_stem_elsewhere_are_refused_naming_them(tmp_path: Path):
    root = import_files.voc(tmp_path / "dk", "devkit", moved={"e": "one"})
    import_files.voc_xml(root / "two" / "e.xml", "e.jpg", (48, 36), [("dog", 1, 1, 9, 9)])
    code, err = detector("data", "import", str(root), "--out", str(tmp_path / "pets"))
    assert code == 2 and err.count("\n") == 1, err
    assert (f"train.txt names 'e': not in {root / 'Annotations'}, and several XMLs of that stem elsewhere "
            f"({root / 'one' / 'e.xml'}, {root / 'two' / 'e.xml'}); keep one") in err, err


def test_a_split_file_naming_an_xml_found_nowhere_is_still_refused(tmp_path: Path):
    root = import_files.voc(tmp_path / "dk", "devkit")
    (root / "Annotations" / "e.xml").unlink()
    code, err = detector("data", "import", str(root), "--out", str(tmp_path / "pets"))
    assert code == 2 and f"train.txt names 'e', but {root / 'Annotations' / 'e.xml'} does not exist" in err, err


def test_without_split_files_an_xml_beside_its_image_is_not_looked_for(tmp_path: Path):
    """Only a split file's name makes an XML missing; without one, an image without an XML in
    Annotations/ is left out as before, and said so."""
    root = import_files.voc(tmp_path / "dk", "devkit_no_sets", moved={"e": "JPEGImages"})
    src = read_voc(root)
    assert "e" not in [i.path.stem for i in src.images]
    assert "1 image(s) without an XML: left out (give each an XML without objects to keep it as a negative)" in src.notes
