"""Benchmarks: how soon the narration shows, how many channels one process carries, what a turn costs.

``make bench`` (``python -m bench``) runs them; bench/README.md says what each figure measures and how.
"""
