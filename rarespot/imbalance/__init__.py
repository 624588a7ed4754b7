"""Class-imbalance toolkit (shared core: imports nothing from detect/screen/sounds).

- ``weights``: class-balanced (effective number), inverse and sqrt-inverse frequency weights (numpy).
- ``losses``: focal (sigmoid/softmax), class-balanced CE/BCE/focal, GHM-C (torch).
- ``sampling``: repeat-factor image sampling, class-aware choice of the object a tile is centred on.
- ``copy_paste``: X-ray copy-paste of rare objects (transmission blend for grayscale, alpha for colour).
- ``report``: imbalance report of a dataset's splits (Markdown + PNG).

Submodules are imported on demand, so numpy-only parts work without torch.
"""
