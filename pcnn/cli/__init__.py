"""``python -m pcnn`` / ``pcnn``: :mod:`.main` (the parser assembly and error mapping), one module
per command group with its flags beside its code: :mod:`.train`, :mod:`.score` (classify,
evaluate, fid, evaluate-generation), :mod:`.draw` (sample, complete, demo), :mod:`.data`,
:mod:`.course`; :mod:`.common` (argument helpers they share).
"""
