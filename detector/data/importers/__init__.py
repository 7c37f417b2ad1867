"""Importers: a labelled folder in any common format -> the COCO-style JSONs the pipeline reads.

One module per format, one shared record type (``source``):

- ``voc_xml``: VOC XML in any common layout; ``yolo_txt``: YOLO txt with an ultralytics
  ``data.yaml``; ``coco_json``: COCO JSON, every listed image file checked to exist.
- ``decoding``: every image decoded once; one that cannot be is a bad record, a truncated one
  that PIL can still read is restored (written whole under ``out/restored/``).
- ``splits``: the stratified, seeded split where the source has none.
- ``writing``: the JSONs, ``split.json`` and the summary; ``config_file``: the ready ``config.yaml``.
- ``importer``: ``detector data import``: finds the format, reads, checks, splits, writes.

Like ``detector.data``, this package imports nothing itself (no torch for ``detector data import``).
"""
