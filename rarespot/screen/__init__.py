"""Unsupervised anomaly screening trained on normal images only (issue 6).

Convolutional autoencoder + Gaussian KDE of its bottleneck latent (the seed's
"CAE + KDE" on malaria cells), with thresholds set from held-out normal data at
a chosen false-alarm rate, plus classical baselines (GMM, One-Class SVM,
Isolation Forest, KDE, PCA reconstruction). Modules, in reading order:

``config`` (settings, YAML) -> ``data`` (npz / folder -> model input) ->
``torch_model`` (the nn.Module) -> ``train`` (Adam/MSE, early stopping, resume) ->
``scores`` (error maps, latent KDE, thresholds) -> ``detectors`` (sklearn-style
estimators) -> ``patch`` (PatchCore / PaDiM on pretrained EfficientNet-Lite0 features, the same
estimator contract) -> ``evaluate`` (metrics + plots) -> ``pipeline`` (fit/score/evaluate
jobs) -> ``cli``.

Kept import-free so ``rarespot --help`` stays fast; import the submodules.
"""
