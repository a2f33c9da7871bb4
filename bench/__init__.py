"""The benchmarks: each prints a table and writes JSON under bench/results/ (or docs/results/).

Run them from the repository root as modules, ``python -m bench.NAME`` (e.g. ``python -m bench.gpu_check
--dry-run``); they import each other as ``bench.NAME``. The package is not installed with fmn_core: it measures
the checkout it sits in.
"""
