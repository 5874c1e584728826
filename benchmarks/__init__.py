"""Benchmarks of kubetune's suggestion algorithms against Optuna, scikit-optimize, Hyperopt and random search.

Run from the repository root: ``python benchmarks/run_all.py`` (see docs/benchmarks.md).
"""
