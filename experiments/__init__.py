"""Experiments and benchmarks. Run one from the repository root as ``python -m experiments.NAME``
(e.g. ``python -m experiments.init_methods --quick``); the code they share is
:mod:`experiments.harness`."""
