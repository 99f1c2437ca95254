"""Figures: :mod:`.grids` (labelled image grids; PIL only, usable from the bottom layers),
:mod:`.samples` (same-noise and guidance grids drawn from a model), :mod:`.images` (image
panels, histograms, augmentation rows), :mod:`.training` (loss curves, the live plot),
:mod:`.classification` (confusion, reliability, evidence maps), :mod:`.generation`
(guidance trade-offs, metrics beside their real floors), :mod:`.results` (comparisons of
results files).
"""
