"""Drawing images: :mod:`.sample` (the one sampler shared by CLI, widget and FID; completion),
:mod:`.cached` (the cached fast sampler), :mod:`.guidance` (class guidance, plausibility,
schedules), :mod:`.sets` (the one owner of sample-set folders: names, writing, reading).
"""
