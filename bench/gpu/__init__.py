"""The GPU check (`bash bench/gpu/check.sh`, which runs `python -m bench.gpu.check`)."""
