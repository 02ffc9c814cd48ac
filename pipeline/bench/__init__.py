"""Benchmarks (`dupn bench pipeline|memory|train|serve|scale`) and the random batches they (and tests) use.
Imports anything below the command line."""
