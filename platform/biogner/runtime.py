"""Connecting to Ray the same way everywhere: a cluster under `ray job submit`, a local
one otherwise."""

from __future__ import annotations

import os

LOCAL_MIN_CPUS = 4  # 2 train workers + a Ray Data task must fit, or lazy pipelines deadlock


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`), else start a local
    Ray with enough logical CPUs for training workers and a data pipeline side by side."""
    import ray

    if ray.is_initialized():
        return
    env = {
        "env_vars": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("BIOGNER_", "DS_", "HF_", "TRANSFORMERS_", "MLFLOW_"))
        }
    }
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], runtime_env=env, log_to_driver=True)
        return
    cpus = num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1)
    ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=env, log_to_driver=True)
