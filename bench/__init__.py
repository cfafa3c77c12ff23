"""The benchmarks, one module each: run from the repository root as `python -m bench.<name>`
(`--help` for its options). Each prints a table and writes bench/results/<name>.json; the
figures and what they mean are in bench/RESULTS.md. Shared helpers live in `bench.common`;
bench/gpu holds the GPU check, bench/archive the studies of removed code paths."""
