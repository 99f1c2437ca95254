"""``python -m pcnn`` / ``pcnn``: :mod:`.main` (the parser and error mapping)."""
