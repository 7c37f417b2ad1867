"""The folder side of ``detector data import`` (``source``, ``splits``, ``writing``, ``config_file``,
``importer``), one behaviour per test: finding the images and labels, the split, the files written
and the config. Written to kill mutmut's survivors in those modules (``make mutation``)."""
