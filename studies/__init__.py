"""Research drivers (not part of the installed library; nothing in ``pcnn`` imports them):
:mod:`.experiments` (results files of training runs and their tables), :mod:`.scaling`
(the model-size probe), :mod:`.guidance_tradeoff` (issue 28/34's guidance trade-off).
Run from a checkout: ``scripts/`` and the notebooks put the repository root on ``sys.path``.
"""
