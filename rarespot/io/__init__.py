"""Data in and out: images (``images``), detection annotations (``annotations``:
VOC / YOLO / COCO), the dataset model (``dataset``), validation (``validate``),
grouped splits (``split``) and audio (``audio``).

Kept import-free so ``rarespot --help`` stays fast; import the submodules.
"""
