"""What a person sees: `biogner evaluate` prints its own progress and scores, not Ray's or
Ray Data's INFO/WARNING lines (those go to `.biogner/logs/`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import library_lines

pytestmark = pytest.mark.slow  # Ray in a subprocess or a cluster of its own


def run_biogner(argv: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """A `biogner` command as a user runs it: its own process (so the console filter is on),
    its own Ray, `cwd` as its working directory and (unless `env` says) BIOGNER_HOME."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BIOGNER_VERBOSE")}
    full_env.update({"BIOGNER_HOME": str(cwd), **env})
    return subprocess.run(
        [sys.executable, "-m", "biogner.cli", *argv],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def kept_in_logs(home: Path) -> str:
    """What the commands run in `home` kept off the console: their log files."""
    return "".join(p.read_text() for p in (home / ".biogner" / "logs").glob("*.log"))


def test_evaluate_prints_no_ray_log_lines(small_data_dir: Path, tmp_path: Path) -> None:
    from biogner.models.config import ModelConfig
    from biogner.models.load import load_model

    model_dir = tmp_path / "tiny"
    model, tokenizer = load_model(ModelConfig(spec="tiny-llama", lora=False), "cpu", False)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    meta = {"format": "conv_term", "entity_types": ["Disease"], "base_model": "tiny-llama"}
    (model_dir / "biogner_model.json").write_text(json.dumps(meta))
    argv = ["evaluate", "--model", str(model_dir), "--split", "dev", "--limit", "4"]
    argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    # 4 sentences, 2 actors: Ray Data warned that one would get no input
    done = run_biogner([*argv, "num_actors=2"], tmp_path, BIOGNER_DATA_DIR=str(small_data_dir))
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "F1" in output
    noise = library_lines(output)
    assert noise == [], "\n".join(noise)
    kept = kept_in_logs(tmp_path)
    assert "streaming_executor" in kept
    assert "constructor arguments in the object store" in kept  # ray-project/ray#57733


def test_a_new_store_says_nothing_but_the_commands_own_words(tmp_path: Path) -> None:
    """Opening a new SQLite store logs MLflow's schema migration at INFO on the console
    ("Creating initial MLflow database tables...", before `biogner train` started Ray): a
    command sends it to its log file and prints only its own message."""
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    done = run_biogner(["select", "--experiment", "nothing-here", "--tracking-uri", uri], tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"error: no MLflow experiment named 'nothing-here' in {uri}\n"
    assert "Creating initial MLflow database tables" in kept_in_logs(tmp_path)


def test_ray_serve_console_handler_goes_back_to_the_log_file(tmp_path: Path) -> None:
    """Importing ray.serve gives its logger a console handler ("INFO ... Started Serve"
    lines in the demo's serve stage); `requiet_logs`, which serve's start_app calls after the
    import, sends it back to the log file."""
    script = (
        "import logging\n"
        "from biogner.runtime import quiet_logs, requiet_logs\n"
        f"log_file = quiet_logs({str(tmp_path)!r})\n"
        "import ray.serve\n"
        "requiet_logs()\n"
        "logging.getLogger('ray.serve').info('serve says hello')\n"
        "print(log_file)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BIOGNER_VERBOSE"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "serve says hello" not in done.stdout + done.stderr
    log_file = Path(done.stdout.strip().splitlines()[-1])
    assert "serve says hello" in log_file.read_text()


# A line Ray 2.60's core wrote to `biogner sweep`'s terminal (ray-project/ray#57733).
ACTOR_RESTART_LINE = (
    b"[2026-12-02 02:18:22,095 E 2354 2354] core_worker.cc:2465: Actor with class name: "
    b"'MapWorker(Project->MapBatches(Tokenize))' and ID: '6c4f6d863a825befcd2eb16f01000000' "
    b"has constructor arguments in the object store and max_restarts > 0. If the arguments in "
    b"the object store go out of scope or are lost, the actor restart will fail. See "
    b"https://github.com/ray-project/ray/issues/53727 for more details."
)


def test_noise_is_only_the_listed_lines() -> None:
    from biogner.console import is_noise

    assert is_noise(ACTOR_RESTART_LINE)
    other_actor = ACTOR_RESTART_LINE.replace(
        b"'MapWorker(Project->MapBatches(Tokenize))'", b"'Mine'"
    )
    assert not is_noise(other_actor)  # an actor of ours: its restarts may really fail
    assert not is_noise(b"[2026-12-02 02:18:22,095 E 1 1] raylet_client.cc:9: lost the raylet")
    assert not is_noise(b"Traceback (most recent call last):")


# What `serve.shutdown()` left on the demo's stdout in CI (stop 25), as Ray's driver prints
# the errors the cluster publishes.
SERVE_SHUTDOWN_LINE = (
    "\x1b[33m(raylet)\x1b[0m Task ServeController.graceful_shutdown failed. There are infinite "
    "retries remaining, so the task will be retried. Error: The actor is dead because it was "
    "killed by `ray.kill`."
)


def test_rays_printed_noise_is_kept_off_stdout_and_nothing_else_is(tmp_path: Path) -> None:
    """Ray prints a published error as one write and its newline as another, from its own
    thread, while the command prints: every line of the command's comes through whole and in
    order, the noise goes to the log file, other raylet lines stay."""
    import io
    import threading

    from biogner.console import RayPrints

    out = io.StringIO()
    log = tmp_path / "biogner.log"
    wrapped = RayPrints(out, log)  # type: ignore[arg-type]

    def ray_listener() -> None:
        for _ in range(300):
            print(SERVE_SHUTDOWN_LINE, file=wrapped)
        print("\x1b[33m(raylet)\x1b[0m A worker died or was killed", file=wrapped)

    listener = threading.Thread(target=ray_listener)
    listener.start()
    for i in range(300):
        print(f"[2/6] line {i}", file=wrapped)
    listener.join()
    lines = out.getvalue().splitlines()
    assert [line for line in lines if line.startswith("[2/6]")] == [
        f"[2/6] line {i}" for i in range(300)
    ]
    # the other raylet line stays, wherever the two threads' lines met
    assert [line for line in lines if not line.startswith("[2/6]")] == [
        "\x1b[33m(raylet)\x1b[0m A worker died or was killed"
    ]
    assert log.read_text().count("graceful_shutdown failed") == 300
    assert wrapped.isatty() is False and wrapped.encoding == out.encoding


def test_rays_printed_noise_wrapper_edges(tmp_path: Path) -> None:
    """A noise line with its own newline leaves no blank line; writelines is filtered too; no
    log file to write to lets the line through rather than raise into Ray's thread; the
    wrapper copies."""
    import copy
    import io

    from biogner.console import RayPrints

    out = io.StringIO()
    wrapped = RayPrints(out, tmp_path / "biogner.log")  # type: ignore[arg-type]
    print(SERVE_SHUTDOWN_LINE + "\n", file=wrapped)
    wrapped.writelines(["kept\n", SERVE_SHUTDOWN_LINE + "\n", "also kept\n"])
    assert out.getvalue() == "kept\nalso kept\n"
    assert copy.copy(wrapped).stream is out
    nowhere = RayPrints(out, tmp_path / "no-such-folder" / "biogner.log")  # type: ignore[arg-type]
    print(SERVE_SHUTDOWN_LINE, file=nowhere)
    assert out.getvalue().endswith(SERVE_SHUTDOWN_LINE + "\n")


def test_a_command_without_stdout_or_a_writable_home_still_runs(tmp_path: Path) -> None:
    """No stdout at all (sys.stdout is None: print does nothing) and a home where no log
    folder can be made: the command does its work and says its error, as without biogner's
    console handling."""
    home = tmp_path / "a-file"
    home.write_text("")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from biogner import console, runtime\n"
        "assert runtime.quiet_logs() is None\n"
        "assert console.start(Path(sys.argv[1]))\n"
        "print('nowhere to go')\n"
        "console.stop()\n"
        "print('done', file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "BIOGNER_VERBOSE"}
    env["BIOGNER_HOME"] = str(home)
    done = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -c "$0" "$1" >&-', script, str(tmp_path / "l.log")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "done\n"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["select", "--experiment", "x", "--tracking-uri", uri]
    done = run_biogner(argv, tmp_path, BIOGNER_HOME=str(home))
    assert done.returncode == 1
    assert done.stderr.endswith(f"error: no MLflow experiment named 'x' in {uri}\n")


def test_the_filter_keeps_noise_off_and_loses_nothing_when_the_command_aborts(
    tmp_path: Path,
) -> None:
    """Through the filter, a command's stderr reaches the terminal unchanged but for the noise
    (in the log file), even when the command dies by SIGABRT right after writing: the
    filter is a process of its own and drains what was written."""
    log_file = tmp_path / "biogner.log"
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from biogner import console\n"
        "console.start(Path(sys.argv[1]))\n"
        f"os.write(2, {ACTOR_RESTART_LINE!r} + bytes([10]))\n"
        "os.write(2, b'[2026-12-02 02:18:22,095 E 1 1] raylet_client.cc:9: lost the raylet\\n')\n"
        "print('real error', file=sys.stderr, flush=True)\n"
        "os.write(2, b'progress 50%\\r')\n"
        "os.write(2, b'[unfinished')\n"
        f"print({SERVE_SHUTDOWN_LINE!r}, flush=True)\n"
        "print('stdout goes on', flush=True)\n"
        "os.abort()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(log_file)], capture_output=True, timeout=120
    )
    assert done.returncode == -6  # SIGABRT
    err = done.stderr.decode()
    assert "constructor arguments" not in err
    for line in ("lost the raylet\n", "real error\n", "progress 50%\r", "[unfinished"):
        assert line in err
    assert "constructor arguments in the object store" in log_file.read_text()
    assert done.stdout.decode() == "stdout goes on\n"
    assert "graceful_shutdown failed" in log_file.read_text()


def test_a_local_ray_starts_workers_without_the_raylet_storm_warning() -> None:
    """Ray Train's own 0-CPU actors and a data pipeline start ~8 workers at once; the raylet
    warned at 4x the machine's cores ("8 PYTHON worker processes ... 4x the maximum expected
    startup concurrency (2)" on 2 cores). init_ray sets the startup concurrency to the logical
    CPUs it gives Ray, so 12 workers stay under the warning's 4x."""
    script = (
        "import os, ray\n"
        "from biogner.runtime import init_ray\n"
        "init_ray(num_cpus=4)\n"
        "@ray.remote(num_cpus=0)\n"
        "class Idle:\n"
        "    def ping(self):\n"
        "        return os.getpid()\n"
        "actors = [Idle.remote() for _ in range(12)]\n"
        "print(len(set(ray.get([a.ping.remote() for a in actors]))), flush=True)\n"
        "print(os.environ.get('RAY_worker_maximum_startup_concurrency'), flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BIOGNER_VERBOSE")}
    env.pop("RAY_worker_maximum_startup_concurrency", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "(raylet)" not in done.stdout + done.stderr
    assert done.stdout.split()[-2:] == ["12", "4"]


def test_a_filter_that_cannot_start_leaves_stderr_as_it_was(tmp_path: Path) -> None:
    """No filter process (here: no interpreter where sys.executable says) is no reason to fail
    a command: start says False, stderr still reaches the terminal, no descriptor leaks."""
    script = (
        "import os, sys\n"
        "from pathlib import Path\n"
        "from biogner import console\n"
        "before = len(os.listdir('/proc/self/fd'))\n"
        "sys.executable = '/nonexistent/python'\n"
        "print(console.start(Path(sys.argv[1])), console.filter_pid() is not None, flush=True)\n"
        "print(len(os.listdir('/proc/self/fd')) - before, flush=True)\n"
        f"os.write(2, {ACTOR_RESTART_LINE!r} + bytes([10]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "biogner.log")],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["False", "False", "0"]
    assert ACTOR_RESTART_LINE in done.stderr  # unfiltered, but there


def test_stopping_ray_leaves_the_filter_to_end_by_itself(tmp_path: Path) -> None:
    """stop_local_ray ends every process the command started, but the filter is one of them:
    it waited its whole grace for the filter (which cannot end while the command's stderr
    is its pipe), then killed it, adding 10 s to every command's exit and losing what Ray
    wrote while shutting down. It now leaves the filter alone; `console.stop`, after it,
    gives stderr back and the filter ends."""
    script = (
        "import os, sys, psutil\n"
        "from biogner import console\n"
        "from biogner.runtime import init_ray, stop_local_ray\n"
        "console.enable()\n"
        "init_ray(num_cpus=4)\n"
        "pid = console.filter_pid()\n"
        "killed = stop_local_ray(grace_s=3)\n"
        "print('killed' if pid in killed else 'spared', psutil.pid_exists(pid), flush=True)\n"
        "filter = console._filter\n"
        "console.stop()\n"
        "print(filter.returncode, flush=True)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BIOGNER_VERBOSE")}
    env["BIOGNER_HOME"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-3:] == ["spared", "True", "0"]
