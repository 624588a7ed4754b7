"""rarespot: find the rare thing in screening data.

Sub-packages: ``io`` (images, annotations, audio), ``imbalance``, ``metrics``,
``tiling`` (shared core, importing nothing above it) and one package per
pipeline: ``detect``, ``screen``, ``sounds``; ``serve`` is the operator app.
"""

import os as _os

__version__ = "0.1.0"

# Nothing may be downloaded at run time: keep the libraries that would try offline.
for _key in ("YOLO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
    _os.environ.setdefault(_key, "1")
# Ultralytics would otherwise write settings/fonts under ~/.config on import.
_os.environ.setdefault("YOLO_VERBOSE", "False")
