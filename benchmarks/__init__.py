"""Measured speed of every LensOps stage, side by side, with one command: `python -m benchmarks`.

Each section is one module with a `run(settings) -> dict` function; `__main__` runs them, prints
the table, checks the issue's targets and writes reports/bench/bench.json + bench.png.
"""
