"""The fault zoo: seeded training faults with the findings nn-doctor must report (benchmarks/run_zoo.py)."""
