"""Scoring models: :mod:`.classification` (accuracy, F1, calibration, prediction files and the
likelihood-margin analyses), :mod:`.fid` and :mod:`.fid_weights` (FID, offline Inception
weights), :mod:`.quality` (speckle, clipped colour, precision/recall/density/coverage),
:mod:`.generation` (KID, FID-2048, the Inception probe, real floors), :mod:`.card` (the one
model card: a checkpoint's classification, generation and training cost).
"""
