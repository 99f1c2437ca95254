"""The CPEN455 data: :mod:`.dataset` (CSV splits, decoding, ``load_split``, ``verify``),
:mod:`.augment` (value ranges and train-time augmentation), :mod:`.download` (the course's
pinned public copy, checksummed). Where the data is found: :func:`pcnn.paths.resolve_data_dir`.
"""
