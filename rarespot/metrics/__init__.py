"""Metrics in plain numpy: detection (matching, P/R/F1, COCO AP) and the others' per-area modules."""
