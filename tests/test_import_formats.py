"""The format readers of ``detector data import`` (``coco_json``, ``voc_xml``, ``yolo_txt``), one
behaviour per test: what each reads from a real export's quirks, and the exact line it prints for
each bad record. Written to kill mutmut's survivors in those modules (``make mutation``)."""
