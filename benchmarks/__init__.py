"""The speed benchmark behind ``scripts/benchmark.py``: kept out of the installed package.

Imported from the repository root (``scripts/benchmark.py`` puts it on ``sys.path``; pytest's
``tests`` package does too).
"""
