"""What a person sees: `biogner evaluate` prints its own progress and scores, not Ray's or
Ray Data's INFO/WARNING lines (those go to `.biogner/logs/`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # Ray in a subprocess or a cluster of its own

RAY_LINE = re.compile(r"\b(INFO|WARNING)\b.*\.py:\d+ --|streaming_executor|Execution plan of")


def test_evaluate_prints_no_ray_log_lines(small_data_dir: Path, tmp_path: Path) -> None:
    from biogner.models.config import ModelConfig
    from biogner.models.load import load_model

    model_dir = tmp_path / "tiny"
    model, tokenizer = load_model(ModelConfig(spec="tiny-llama", lora=False), "cpu", False)
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    meta = {"format": "conv_term", "entity_types": ["Disease"], "base_model": "tiny-llama"}
    (model_dir / "biogner_model.json").write_text(json.dumps(meta))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "BIOGNER_VERBOSE")}
    env.update(BIOGNER_DATA_DIR=str(small_data_dir), BIOGNER_HOME=str(tmp_path))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "biogner.cli",
            "evaluate",
            "--model",
            str(model_dir),
            "--split",
            "dev",
            "--limit",
            "4",
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "F1" in output
    noise = [line for line in output.splitlines() if RAY_LINE.search(line)]
    assert noise == [], "\n".join(noise)
    logs = list((tmp_path / ".biogner" / "logs").glob("*.log"))
    assert any("streaming_executor" in p.read_text() for p in logs)  # kept, in the log file


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
