"""The paper in one place (Salimans et al. 2017, PixelCNN++; conditioned as in van den Oord et al. 2016).

Layout: :mod:`.config` (ModelConfig, fusion modes, class names), :mod:`.layers` (shifted and
gated convolutions), :mod:`.fusion` (where the class enters), :mod:`.network` (the two-stream
U-net), :mod:`.likelihood` (network output -> mixture params -> log-prob -> bits/dim, and the
draws), :mod:`.classify` (``log p(x | c)`` for every class, ``predict``, ``posterior``),
:mod:`.evidence` (per-pixel class evidence), :mod:`.checkpoint` (safetensors save/load carrying
the config), :mod:`.precision` (devices, AMP, compiled scoring). Imports nothing above it.
"""
