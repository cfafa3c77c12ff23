"""Benchmarks kept as the record of a decision: each compared the package against a code path
it no longer has (see README.md here). Not run by the suite; they may not run any more."""
