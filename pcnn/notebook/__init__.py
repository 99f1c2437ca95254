"""What the notebooks call: :mod:`.runtime` (Colab/Kaggle/local set-up, data, devices, run
folders, progress), :mod:`.live` (``train_live``: one training run with a live plot, GPU epoch
estimates), :mod:`.widgets` (the sampling and completion widgets).
"""
