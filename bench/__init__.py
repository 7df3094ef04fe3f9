"""Benchmarks of the MMAudio node pack: speed, memory and output agreement (see ``bench/benchmark.py``).

Nothing here is part of the pack that ComfyUI loads; these scripts import the library under a private name so
that the reference implementation (also a top-level ``mmaudio``) can be loaded beside it in one process.
"""
