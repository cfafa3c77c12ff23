"""A new user's small stumbles (#29 item 22): names checked before Ray starts, `--limit 0`,
error lines without stray quotes, an ETA that is not measured across a model load,
`--version`, positional overrides for `serve`, the declared CPU wheel index and tqdm, and the
allocator a CPU run falls back to, said once."""

from __future__ import annotations

import functools
import io
import tomllib
from pathlib import Path

import pytest

from biogner import __version__, progress, runtime
from biogner.cli import main

ROOT = Path(__file__).parents[1]


def no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Ray fails the test (whether or not another test's Ray runs in this process:
    `ray.is_initialized()` depended on the order the tests ran in)."""
    from biogner.evaluate import runner

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started before the names were checked")

    monkeypatch.setattr(runtime, "init_ray", refuse)
    monkeypatch.setattr(runner, "init_ray", refuse)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--corpus", "NCBI-disease,nope"], "error: --corpus: unknown corpus 'nope'; known: "),
        (["--corpus", "nope"], "unknown corpus 'nope'; known: "),
        (["--format", "multi_nope"], "unknown format 'multi_nope'; known: "),
        (["--limit", "0"], "limit: Input should be greater than or equal to 1"),
    ],
)
def test_evaluate_refuses_bad_names_before_ray_starts(argv, says, capsys, monkeypatch) -> None:
    no_ray(monkeypatch)
    code = main(["evaluate", "--model", "/nowhere", *argv])
    err = capsys.readouterr().err
    assert code == 2 and says in err and "\"'" not in err and not err.startswith("error: '")


def test_version(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"biogner {__version__}"


def test_serve_takes_positional_overrides_like_every_command(capsys, tmp_path) -> None:
    assert (
        main(["serve", "--check", "batching.max_batch_size=6", "--set", "limits.max_texts=9"]) == 0
    )
    out = capsys.readouterr().out
    assert '"max_batch_size": 6' in out and '"max_texts": 9' in out


def test_the_eta_counts_from_the_first_unit_not_from_a_model_load(monkeypatch) -> None:
    clock = iter([0.0, 100.0, 100.0, 101.0, 101.0])  # start, then a unit after a 100 s load
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))

    class Out:
        lines: list[str] = []

        def write(self, text: str) -> None:
            self.lines.append(text)

        def flush(self) -> None:
            pass

    out = Out()
    bar = progress.Progress("evaluate", 10, "sentences", every_s=0.0, out=out)  # type: ignore[arg-type]
    bar.update()
    assert "eta ?" in out.lines[-1]  # one unit says nothing about the rate
    bar.update()
    assert "1.0/s" in out.lines[-1] and "eta 0m08s" in out.lines[-1]


def test_units_that_come_in_one_burst_are_rated_from_the_start(monkeypatch) -> None:
    """A whole split in one block (evaluation of 54 sentences): every row within
    microseconds of the first printed 559957.7/s."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    bar = progress.Progress("evaluate", 54, "sentences", every_s=0.0, out=out)
    now[0] = 18.0
    for _ in range(54):
        bar.update()
        now[0] += 1e-6
    assert "54/54 sentences, 3.0/s" in out.getvalue().splitlines()[-1]


def test_a_second_unit_is_counted_with_its_own_rate(monkeypatch) -> None:
    """Extraction counts documents and the sentences in them: both rates on one line."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "perf_counter", lambda: now[0])
    out = io.StringIO()
    docs = progress.Progress("extract", 10, "documents", every_s=0.0, out=out, also="sentences")
    now[0] = 30.0  # the model loads
    docs.update(also=7)
    assert "1/10 documents, 0.0/s (7 sentences, 0.0/s)" in out.getvalue().splitlines()[-1]
    now[0] = 32.0
    docs.update(also=9)
    assert "2/10 documents, 0.5/s (16 sentences, 4.5/s)" in out.getvalue().splitlines()[-1]


def test_the_cpu_requirements_name_the_cpu_wheel_index_and_tqdm_is_declared() -> None:
    lines = (ROOT / "requirements" / "cpu.txt").read_text().splitlines()
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in lines
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("tqdm") for d in deps)


def test_no_jemalloc_is_said_once(monkeypatch, capsys) -> None:
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.delenv(runtime.ALLOCATOR_ENV, raising=False)
    monkeypatch.setattr(runtime, "jemalloc_library", lambda: None)
    monkeypatch.setattr(
        runtime, "_warn_no_jemalloc", functools.cache(runtime._warn_no_jemalloc.__wrapped__)
    )
    assert runtime.allocator_env() == {} and runtime.allocator_env() == {}
    err = capsys.readouterr().err
    assert err.count("jemalloc not found") == 1 and "apt install libjemalloc2" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--corpus", "nope"], "unknown corpus 'nope'"),
        (["--format", "multi_nope"], "unknown format 'multi_nope'"),
    ],
)
def test_convert_refuses_bad_names_before_ray_starts(
    argv, says, capsys, tmp_path, monkeypatch
) -> None:
    no_ray(monkeypatch)
    code = main(["convert", "--out", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and says in err
