"""Connecting to Ray the same way everywhere: a cluster under `ray job submit`, a local
one otherwise; and keeping the terminal readable.

Ray, Ray Data, DeepSpeed and transformers each print their own INFO lines and progress
bars, from the driver and from every worker. Unless `BIOGNER_VERBOSE` is set (`biogner
--verbose`), their logs go to a file under `.biogner/logs/` and their progress bars are off;
what the terminal shows is biogner's own one line per training step and one progress line
per evaluation, each with an ETA. Workers' own output stays in Ray's session logs
(`/tmp/ray/session_latest/logs/`); the few lines Ray's C++ core writes to a command's stderr
pass through `biogner.console`'s filter.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes.util
import functools
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import psutil

from biogner import console

STARTUP_CONCURRENCY_ENV = "RAY_worker_maximum_startup_concurrency"
LOCAL_MIN_CPUS = 4  # 2 train workers + a Ray Data task must fit, or lazy pipelines deadlock
VERBOSE_ENV = "BIOGNER_VERBOSE"
ALLOCATOR_ENV = "BIOGNER_ALLOCATOR"  # "jemalloc" (where installed) or "system"
# Loggers whose INFO lines go to the log file, not the terminal, unless verbose.
QUIET_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve", "DeepSpeed", "mlflow")
# Set for the driver and passed to every worker: no progress bars but biogner's.
QUIET_ENV = {
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
_log_file: Path | None = None
_handler: logging.Handler | None = None


def cpu_threads(processes_on_node: int = 1) -> int:
    """Torch threads for one of `processes_on_node` CPU processes sharing this node's cores.

    Ray starts a worker or actor with OMP_NUM_THREADS set to its logical CPU share (1 by
    default), which left a lone training worker, or an evaluation actor, computing on one
    core of two: callers set torch's threads from this instead."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(processes_on_node, 1))


def verbose() -> bool:
    return os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def log_file() -> Path | None:
    """Where Ray's and the libraries' logs went this process (None when verbose)."""
    return _log_file


def quiet_logs(home: str | Path | None = None) -> Path | None:
    """Send the libraries' loggers to `<home>/.biogner/logs/biogner-<time>.log` and turn
    their progress bars off (here and, through `worker_env`, in Ray workers)."""
    global _log_file, _handler
    if verbose():
        return None
    if _log_file is None or _handler is None:
        base = Path(home or os.environ.get("BIOGNER_HOME") or os.getcwd()).resolve()
        folder = base / ".biogner" / "logs"
        log_file = folder / f"biogner-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ray_data_config = log_file.with_suffix(".ray-data.yaml")
            # Ray Data (re)configures its "ray.data" logger with a console handler whenever a
            # dataset starts, from this file if it is named: send it to the log file instead.
            ray_data_config.write_text(json.dumps(_ray_data_logging(log_file), indent=1))
            _handler = logging.FileHandler(log_file)
        except OSError:  # a read-only folder: the command runs, the libraries' lines show
            return None
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        _log_file = log_file
    os.environ.update(QUIET_ENV)
    os.environ["RAY_DATA_LOGGING_CONFIG"] = str(_log_file.with_suffix(".ray-data.yaml"))
    warnings.filterwarnings("ignore", message="Use 'expr' instead of 'fn'")
    handler = _handler
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            if isinstance(old, logging.StreamHandler) and not isinstance(old, logging.FileHandler):
                logger.removeHandler(old)
        if handler not in logger.handlers:
            logger.addHandler(handler)
        logger.propagate = False
    return _log_file


def requiet_logs() -> None:
    """Send back to the log file a library that attaches its own console handler when it is
    imported (Ray Serve does, in `ray.serve.__init__`): a no-op unless quiet_logs ran."""
    if _log_file is not None and not verbose():
        quiet_logs()


def _ray_data_logging(log_file: Path) -> dict[str, Any]:
    """Ray Data's logging config (YAML; JSON is YAML): its logger to our log file only."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "formatter": "plain",
                "filename": str(log_file),
            }
        },
        "loggers": {"ray.data": {"level": "INFO", "handlers": ["file"], "propagate": False}},
    }


def compute_runtime_env(niceness: int = 0) -> dict[str, Any]:
    """runtime_env for compute-bound workers (training, evaluation).

    Niceness: Ray starts its workers at nice 15 (RAY_worker_niceness), where any other
    process on the node, Ray's own included, preempts them, and a CPU worker's OpenMP threads
    then wait for each other at every barrier (bench/results/archive/training.md, "The champion
    on a bf16 CPU"). An unprivileged process
    cannot lower its own nice value, so it is set when Ray starts the worker. The allocator
    (`allocator_env`) is chosen there too: LD_PRELOAD only acts when a process starts."""
    return {"env_vars": {"RAY_worker_niceness": str(niceness), **allocator_env()}}


def jemalloc_library() -> str | None:
    """jemalloc's shared library on this Linux machine (apt: libjemalloc2), or None."""
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.util.find_library("jemalloc")


def allocator_env() -> dict[str, str]:
    """The environment that makes a compute worker allocate with jemalloc, not glibc.

    Why: a long CPU training run brings a new tensor shape at most steps (length-grouped
    batches), which fragments glibc's heap: its worker's memory grew past 10 GiB and its
    tokens/s fell by a quarter; under jemalloc it stepped 1.33x faster with memory flat
    (bench/long_run.py, bench/RESULTS.md#training). Empty where the machine has no jemalloc, where
    LD_PRELOAD is already set (the user's choice, which workers inherit, wins) or with
    BIOGNER_ALLOCATOR=system."""
    choice = os.environ.get(ALLOCATOR_ENV, "jemalloc").strip().lower() or "jemalloc"
    if choice not in ("jemalloc", "system"):
        raise ValueError(f"{ALLOCATOR_ENV}={choice!r}: expected 'jemalloc' or 'system'")
    if choice == "system" or os.environ.get("LD_PRELOAD"):
        return {}
    library = jemalloc_library()
    if library is None:
        _warn_no_jemalloc()
    return {"LD_PRELOAD": library} if library else {}


@functools.cache  # once per process
def _warn_no_jemalloc() -> None:
    """Say it once: without jemalloc a CPU training run is ~1.6x slower
    (bench/RESULTS.md#training)."""
    if sys.platform.startswith("linux"):
        print(
            "biogner: jemalloc not found: CPU training and generation run on glibc's allocator, "
            "about 1.6x slower (bench/RESULTS.md#training). Fix: `sudo apt install libjemalloc2` "
            f"({ALLOCATOR_ENV}=system silences this).",
            file=sys.stderr,
        )


@functools.cache  # fixed when the process starts; evaluation actors report it per sentence
def jemalloc_loaded() -> bool:
    """Whether this process allocates with jemalloc: each worker logs it, since a long CPU
    run's speed depends on it."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return False
    return "libjemalloc" in maps


def worker_env() -> dict[str, str]:
    """Environment every Ray worker gets: biogner's, DeepSpeed's, HF's, MLflow's variables,
    and the quiet settings unless verbose."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith(("BIOGNER_", "DS_", "HF_", "TRANSFORMERS_", "MLFLOW_"))
    }
    if not verbose():
        env.update(QUIET_ENV)
    return env


def stop_local_ray(grace_s: float = 10.0) -> list[int]:
    """Shut down the Ray this process started, then end every process it left behind.

    Why: `ray.shutdown` stops the raylet and GCS, but a worker that is busy (a Ray Train
    controller, an evaluation actor) can outlive them, orphaned: `biogner demo` once left a
    400 MB `ray::TrainController` running after it exited. Every descendant of this process
    (GCS, raylet, workers, agents) gets `grace_s` to exit, then SIGKILL. Returns the pids
    that had to be killed."""
    import ray

    keep = console.filter_pid()  # drains Ray's last words; ends once stderr is given back
    started = [p for p in psutil.Process().children(recursive=True) if p.pid != keep]
    ray.shutdown()
    _, alive = psutil.wait_procs(started, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    return [p.pid for p in alive]


def shipped_package() -> Path | None:
    """This process's biogner package folder when it runs from a source tree (`platform/`, as
    a `ray job submit --working-dir` ships it), None when it is an installed package."""
    package = Path(__file__).resolve().parent  # this module sits at the package's top
    return package if package.parent.name == "platform" else None


def init_ray(num_cpus: int | None = None) -> None:
    """Join the cluster named by RAY_ADDRESS (set by `ray job submit`, or by the user to join
    a `ray start` cluster), else start a private local Ray with enough logical CPUs for
    training workers and a data pipeline side by side.

    Private (`address="local"`): `ray.init()` alone joins whatever cluster Ray last recorded
    in its temp folder, a live `ray start` head or a stale record of a stopped one, and then
    refuses `num_cpus` (every command died with "When connecting to an existing cluster,
    num_cpus and num_gpus must not be provided")."""
    import ray

    if ray.is_initialized():
        return
    quiet = not verbose()
    runtime_env: dict[str, Any] = {"env_vars": worker_env()}
    # Quiet: workers' and Ray's own actors' output (Ray Train's PlacementGroupCleaner warns
    # every second without a dashboard) stays in Ray's session logs; the driver prints
    # training steps from MLflow (train.driver.StepPrinter) and evaluation progress itself.
    options: dict[str, Any] = {"runtime_env": runtime_env, "log_to_driver": not quiet}
    if quiet:
        log = quiet_logs()
        if log is not None and console.wanted():  # before Ray starts: its C++ lines pass it
            console.start(log)
    if os.environ.get("RAY_ADDRESS"):
        source = shipped_package()
        if source is not None:  # workers import the code this driver runs, not an install
            runtime_env["py_modules"] = [str(source)]
        ray.init(address=os.environ["RAY_ADDRESS"], **options)
    else:
        cpus = num_cpus or max(LOCAL_MIN_CPUS, os.cpu_count() or 1)
        # The raylet warns "N PYTHON worker processes have been started ... 4x the maximum
        # expected startup concurrency" at 4x the machine's cores: on a 2-core laptop Ray
        # Train's own 0-CPU actors alone reach it. Its startup concurrency follows the
        # logical CPUs this Ray is given instead (a user's setting wins).
        os.environ.setdefault(STARTUP_CONCURRENCY_ENV, str(cpus))
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, **options)
        atexit.register(stop_local_ray)  # runs before Ray's own atexit shutdown (LIFO)
    if quiet:
        quiet_logs()  # ray.init re-attaches its own stream handler to the "ray" logger
        from ray.data import DataContext

        DataContext.get_current().enable_progress_bars = False
