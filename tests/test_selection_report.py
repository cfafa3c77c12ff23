"""Champion selection and study reports against a real SQLite MLflow store (no Ray, no mocks).

Runs are built the way `run_training` / `run_evaluation` leave them: training runs tagged
`biogner.kind=train` with a tiny logged HF model each, evaluation runs nested under them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import matplotlib.image
import pytest
import torch
from mlflow_store import make_cfg
from transformers import AutoModelForCausalLM, LlamaConfig

from biogner.cli.runs import add_report_command, add_select_command
from biogner.formats import FORMATS
from biogner.models.config import METADATA_FILE
from biogner.study.report import build_report
from biogner.study.results import collect_results, format_label
from biogner.study.select import explain, select_champion
from biogner.tracking.config import TrackingConfig
from biogner.tracking.models import download_model_dir, log_hf_model
from biogner.tracking.registry import logged_model_id
from biogner.tracking.runs import (
    client_for,
    end_run,
    log_metrics_from_worker,
    setup,
    start_run,
    tracked_run,
)
from biogner.tracking.tags import (
    CORPORA_TAG,
    CORPUS_TAG,
    EVALUATE_KIND,
    FORMAT_TAG,
    KIND_TAG,
    MODEL_TAG,
    SPLIT_TAG,
    SUBSET_TAG,
    TRAIN_KIND,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NCBI, CHEM = "NCBI-disease", "BC5CDR-chem"
_SEEDS = itertools.count()


@dataclass
class Study:
    cfg: TrackingConfig
    ids: dict[str, str]  # run name -> run id
    model_dirs: dict[str, Path]  # run id -> the HF dir logged by that run


def tiny_model(out: Path) -> Path:
    """A tiny Llama with its own random weights, so each run's model is recognisable."""
    torch.manual_seed(next(_SEEDS))
    config = LlamaConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        vocab_size=100,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(out, safe_serialization=True)
    return out


def score(f1: float, tokens_per_entity: float | None = None, **extra: float) -> dict[str, float]:
    metrics = {
        "test_f1": f1,
        "test_precision": f1 + 0.01,
        "test_recall": f1 - 0.01,
        "test_parse_error_rate": round(1 - f1, 4) / 10,
        "test_sentences_per_s": 100 * f1,
    }
    if tokens_per_entity is not None:
        metrics["test_generated_tokens_per_entity"] = tokens_per_entity
    metrics.update(extra)
    return metrics


def train_run(
    study: Study,
    tmp: Path,
    name: str,
    formats: list[str],
    corpora: list[str],
    metrics: dict[str, float] | None,
    status: str = "FINISHED",
    wall_s: float | None = None,
    log_model: bool = True,
) -> str:
    cfg = study.cfg
    tags = {
        KIND_TAG: TRAIN_KIND,
        MODEL_TAG: "tiny-llama",
        FORMAT_TAG: ",".join(formats),
        CORPORA_TAG: ",".join(corpora),
    }
    params = {"data": {"formats": formats, "corpora": corpora}, "model": {"spec": "tiny-llama"}}
    run_id = start_run(cfg, name, tags=tags, params=params)
    log_metrics_from_worker(run_id, {"loss": 1.0}, 0, cfg.uri)
    if metrics:
        log_metrics_from_worker(run_id, metrics, 0, cfg.uri)
    if log_model:
        model_dir = tiny_model(tmp / name)
        meta = {
            "base_model": "tiny-llama",
            "format": formats[0],
            "formats": formats,
            "entity_types": ["Disease"],
            "run": name,
        }
        log_hf_model(run_id, model_dir, metadata=meta, cfg=cfg)
        study.model_dirs[run_id] = model_dir
    if status == "FAILED":
        end_run(cfg, run_id, RuntimeError("diverged"))
    else:
        end_run(cfg, run_id)
    if wall_s is not None:
        client = client_for(cfg)
        start = client.get_run(run_id).info.start_time
        client.set_terminated(run_id, status, end_time=start + int(wall_s * 1000))
    study.ids[name] = run_id
    return run_id


def eval_run(
    study: Study,
    parent: str,
    fmt: str,
    corpus: str,
    metrics: dict[str, float],
    experiment: str | None = None,
) -> str:
    tags = {
        KIND_TAG: EVALUATE_KIND,
        MODEL_TAG: "tiny-llama",
        FORMAT_TAG: fmt,
        CORPUS_TAG: corpus,
        SPLIT_TAG: "test",
    }
    name = f"eval-{corpus}-{fmt}-test"
    cfg = study.cfg.model_copy(update={"experiment": experiment or study.cfg.experiment})
    with tracked_run(cfg, name, tags=tags, parent_run_id=parent) as run_id:
        log_metrics_from_worker(run_id, metrics, 0, study.cfg.uri)
        # evaluation also logs onto its parent; the parent keeps the last one
        log_metrics_from_worker(parent, metrics, 0, study.cfg.uri)
    return run_id


# test_f1 (tokens per entity) of the single-format runs
GRID = {
    ("conv_term", NCBI): (0.71, 6.0),
    ("multi_triple", NCBI): (0.69, 9.0),
    ("multi_json", NCBI): (0.60, 12.0),
    ("conv_term", CHEM): (0.80, 5.0),
    ("multi_triple", CHEM): (0.82, 8.0),
    ("multi_json", CHEM): (0.70, 11.0),
}
WALLS = {("conv_term", NCBI): 90.0, ("multi_triple", NCBI): 5400.0, ("multi_json", NCBI): 7200.0}
# the training loop's own seconds (a resumed run's wall time also counts the pause)
TRAIN_SECONDS = {("multi_json", NCBI): 600.0}


@pytest.fixture(scope="module")
def study(store: Path, tmp_path_factory: pytest.TempPathFactory) -> Study:
    """3 formats x 2 corpora, a multi-format run evaluated on both, a failed and an unscored run."""
    tmp = tmp_path_factory.mktemp("models")
    s = Study(make_cfg(store, "study"), {}, {})
    for (fmt, corpus), (f1, cost) in GRID.items():
        train_run(
            s,
            tmp,
            f"{fmt}-{corpus}",
            [fmt],
            [corpus],
            score(f1, cost)
            | (
                {"train_seconds": TRAIN_SECONDS[fmt, corpus]}
                if (fmt, corpus) in TRAIN_SECONDS
                else {}
            ),
            wall_s=WALLS.get((fmt, corpus)),
        )
    mix = train_run(s, tmp, "mix", ["conv_term", "multi_triple"], [NCBI, CHEM], None)
    # an evaluation may be logged to another experiment than its training run's
    eval_run(s, mix, "conv_term", NCBI, score(0.65, 7.0), experiment="study-evaluations")
    eval_run(s, mix, "conv_term", CHEM, score(0.75, 7.5))  # last: also the parent's test_f1
    train_run(s, tmp, "crashed", ["multi_triple"], [NCBI], score(0.99, 1.0), status="FAILED")
    train_run(s, tmp, "unscored", ["conv_term"], [NCBI], None)
    return s


def weights_of(uri: str, dst: Path) -> bytes:
    return (download_model_dir(uri, dst_path=dst) / "model.safetensors").read_bytes()


def assert_alias_serves(study: Study, model_name: str, run_name: str, dst: Path) -> None:
    setup(study.cfg)
    expected = (study.model_dirs[study.ids[run_name]] / "model.safetensors").read_bytes()
    hf_dir = download_model_dir(f"models:/{model_name}@champion", dst_path=dst)
    assert (hf_dir / "model.safetensors").read_bytes() == expected
    assert json.loads((hf_dir / METADATA_FILE).read_text())["run"] == run_name


def test_format_label_names_mixes_and_other_evaluation_formats() -> None:
    assert format_label(["conv_term"]) == "conv_term"
    assert format_label(["conv_term"], "conv_term") == "conv_term"
    assert format_label(["conv_term"], "multi_json") == "conv_term@multi_json"
    # a mix's score always names the format it was scored in, its first one included
    assert format_label(["conv_term", "multi_triple"]) == "mix(conv_term+multi_triple)"
    assert (
        format_label(["conv_term", "multi_triple"], "conv_term")
        == "mix(conv_term+multi_triple)@conv_term"
    )
    assert (
        format_label(["conv_term", "multi_json"], "multi_json")
        == "mix(conv_term+multi_json)@multi_json"
    )
    # every format, in any order: short enough for a table row
    assert format_label(reversed(list(FORMATS)), "multi_bio") == "mix(all)@multi_bio"
    assert format_label(list(FORMATS)[:-1]).startswith("mix(multi_term+")


def test_ranking_is_by_metric_and_ignores_failed_and_unscored_runs(study: Study) -> None:
    ranking = collect_results(study.cfg, "study", "test_f1")
    assert [r.run_name for r in ranking] == [
        "multi_triple-BC5CDR-chem",
        "conv_term-BC5CDR-chem",
        "mix",
        "conv_term-NCBI-disease",
        "multi_json-BC5CDR-chem",
        "multi_triple-NCBI-disease",
        "multi_json-NCBI-disease",
    ]
    best = ranking[0]
    assert (best.value, best.format, best.corpus, best.model) == (
        0.82,
        "multi_triple",
        CHEM,
        "tiny-llama",
    )
    assert best.precision == pytest.approx(0.83) and best.recall == pytest.approx(0.81)
    assert best.tokens_per_entity == 8.0
    mix = ranking[2]
    assert (mix.format, mix.corpus, mix.value) == (
        "mix(conv_term+multi_triple)@conv_term",
        f"{NCBI}+{CHEM}",
        0.75,
    )


def test_select_registers_the_best_finished_run_and_explains(study: Study, tmp_path: Path) -> None:
    sel = select_champion(study.cfg, "study", "test_f1")
    assert sel.model_name == "biogner"
    assert sel.champion.run_name == "multi_triple-BC5CDR-chem"
    assert sel.runner_up is not None and sel.runner_up.run_name == "conv_term-BC5CDR-chem"
    assert sel.margin == pytest.approx(0.02)
    assert sel.registered and sel.version == "1"
    assert_alias_serves(study, "biogner", "multi_triple-BC5CDR-chem", tmp_path / "a")

    client = client_for(study.cfg)
    tags = client.get_model_version("biogner", sel.version).tags
    assert tags["format"] == "multi_triple"
    assert tags["metric"] == "test_f1"
    assert float(tags["value"]) == 0.82
    assert tags["runner_up"].startswith("conv_term-BC5CDR-chem")

    text = explain(sel)
    assert (
        "champion: run multi_triple-BC5CDR-chem (format multi_triple, model tiny-llama, "
        "corpus BC5CDR-chem, test_f1=0.8200), runner-up: run conv_term-BC5CDR-chem "
        "(conv_term, 0.8000), margin 0.0200"
    ) in text
    table_lines = [line for line in text.splitlines() if line[:1].isdigit()]
    assert len(table_lines) == 7
    assert table_lines[0].split()[:2] == ["1", "multi_triple-BC5CDR-chem"]
    assert "crashed" not in text and "unscored" not in text

    again = select_champion(study.cfg, "study", "test_f1")  # same champion: nothing new registered
    assert not again.registered and again.version == "1"
    assert "nothing registered" in explain(again)
    assert len(client.search_model_versions("name = 'biogner'")) == 1


def test_corpus_filter_scores_runs_on_that_corpus(study: Study, tmp_path: Path) -> None:
    sel = select_champion(
        study.cfg, "study", "test_f1", corpus="ncbi-disease", model_name="study-ncbi"
    )
    names = [r.run_name for r in sel.ranking]
    assert names == [
        "conv_term-NCBI-disease",
        "multi_triple-NCBI-disease",
        "mix",  # its NCBI evaluation (0.65), not the parent's last-logged 0.75
        "multi_json-NCBI-disease",
    ]
    mix = sel.ranking[2]
    assert (mix.value, mix.corpus, mix.tokens_per_entity) == (0.65, NCBI, 7.0)
    assert mix.source_run_id != mix.run_id
    assert all(r.corpus == NCBI for r in sel.ranking)
    assert_alias_serves(study, "study-ncbi", "conv_term-NCBI-disease", tmp_path / "a")
    with pytest.raises(ValueError, match="no FINISHED training run trained on corpus 'AnatEM'"):
        select_champion(study.cfg, "study", "test_f1", corpus="AnatEM", model_name="study-anatem")


def test_a_better_run_moves_the_alias(store: Path, tmp_path: Path) -> None:
    s = Study(make_cfg(store, "moving"), {}, {})
    train_run(s, tmp_path, "first", ["conv_term"], [NCBI], score(0.5, 5.0))
    train_run(s, tmp_path, "second", ["multi_triple"], [NCBI], score(0.6, 5.0))
    before = select_champion(s.cfg, "moving", "test_f1", model_name="biogner-moving")
    assert before.champion.run_name == "second" and before.version == "1"
    assert_alias_serves(s, "biogner-moving", "second", tmp_path / "before")

    train_run(s, tmp_path, "third", ["multi_json"], [NCBI], score(0.7, 5.0))
    after = select_champion(s.cfg, "moving", "test_f1", model_name="biogner-moving")
    assert after.champion.run_name == "third" and after.registered and after.version == "2"
    assert after.runner_up is not None and after.runner_up.run_name == "second"
    assert_alias_serves(s, "biogner-moving", "third", tmp_path / "after")
    client = client_for(s.cfg)
    old = client.get_model_version("biogner-moving", "1")
    assert old.run_id == s.ids["second"] and "champion" not in old.aliases


@pytest.mark.parametrize(
    ("lost", "problem"),
    [("MLmodel", "no MLmodel file at"), ("model.safetensors", "no .safetensors weights in")],
)
def test_a_champion_whose_model_files_are_gone_leaves_the_alias(
    store: Path, tmp_path: Path, lost: str, problem: str
) -> None:
    experiment = f"lost-{lost}"
    s = Study(make_cfg(store, experiment), {}, {})
    train_run(s, tmp_path, "served", ["conv_term"], [NCBI], score(0.5, 5.0))
    name = f"biogner-{experiment}"
    assert select_champion(s.cfg, experiment, "test_f1", model_name=name).version == "1"
    better = train_run(s, tmp_path, "better", ["multi_triple"], [NCBI], score(0.9, 5.0))
    client = client_for(s.cfg)
    location = client.get_logged_model(logged_model_id(s.cfg, better)).artifact_location
    (lost_file,) = Path(urlparse(location).path).rglob(lost)
    lost_file.unlink()  # a cleaned-up artifact store, a half-copied upload

    with pytest.raises(LookupError) as caught:
        select_champion(s.cfg, experiment, "test_f1", model_name=name)
    message = str(caught.value)
    assert f"{name} version 2 (run better {better}" in message and problem in message
    assert "alias 'champion' not moved (still on version 1)" in message
    assert_alias_serves(s, name, "served", tmp_path / "still-served")


def test_ties_are_broken_by_cost_then_run_name(store: Path, tmp_path: Path) -> None:
    s = Study(make_cfg(store, "ties"), {}, {})
    # created in an order that differs from the expected ranking
    train_run(s, tmp_path, "b", ["conv_term"], [NCBI], score(0.5, 12.0), log_model=False)
    train_run(s, tmp_path, "d", ["conv_term"], [NCBI], score(0.4, 1.0), log_model=False)
    train_run(s, tmp_path, "c", ["conv_term"], [NCBI], score(0.5, 9.0), log_model=False)
    train_run(s, tmp_path, "a", ["multi_triple"], [NCBI], score(0.5, 9.0))
    train_run(s, tmp_path, "e", ["conv_term"], [NCBI], score(0.5), log_model=False)  # no cost
    expected = ["a", "c", "b", "e", "d"]
    for _ in range(2):
        assert [r.run_name for r in collect_results(s.cfg, "ties", "test_f1")] == expected
    assert (
        select_champion(s.cfg, "ties", "test_f1", model_name="biogner-ties").champion.run_name
        == "a"
    )
    assert (
        select_champion(s.cfg, "ties", "test_f1", model_name="biogner-ties").champion.run_name
        == "a"
    )


def test_no_finished_run_with_the_metric_is_a_clear_error(store: Path, tmp_path: Path) -> None:
    s = Study(make_cfg(store, "nothing-scored"), {}, {})
    train_run(
        s, tmp_path, "crashed", ["conv_term"], [NCBI], score(0.9), status="FAILED", log_model=False
    )
    train_run(s, tmp_path, "unscored", ["conv_term"], [NCBI], None, log_model=False)
    with pytest.raises(ValueError, match="no FINISHED training run .* with metric 'test_f1'"):
        select_champion(s.cfg, "nothing-scored", "test_f1")
    with pytest.raises(ValueError, match="no MLflow experiment named 'no-such-study'"):
        select_champion(s.cfg, "no-such-study", "test_f1")
    with pytest.raises(ValueError, match="nothing to report"):
        build_report(s.cfg, "nothing-scored", tmp_path / "r")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """NCBI-disease test split of two sentences; BC5CDR-chem absent (ceiling n/a).

    "colon cancer and cancer" with only the second `cancer` a disease: `term` writings can
    not say which occurrence (ceiling 0.5), `triple` can (ceiling 1.0).
    """
    root = tmp_path_factory.mktemp("data")
    (root / NCBI).mkdir()
    rows = [
        ("colon", "O"), ("cancer", "O"), ("and", "O"), ("cancer", "B-Disease"), None,
        ("ataxia", "B-Disease"), ("telangiectasia", "I-Disease"), ("patients", "O"), None,
    ]  # fmt: skip
    text = "".join("\n" if r is None else f"{r[0]}\t{r[1]}\n" for r in rows)
    (root / NCBI / "test.tsv").write_text(text)
    return root


def table_row(markdown: str, label: str) -> list[str]:
    prefix = f"| `{label}` |"
    lines = [line for line in markdown.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, (label, markdown)
    return [c.strip() for c in lines[0].strip("|").split("|")][1:]


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    height, width, channels = image.shape
    assert height >= 200 and width >= 300 and channels in (3, 4)
    assert image[..., :3].std() > 0.05  # something was drawn


def test_report_writes_heatmap_scatter_and_paper_table(
    study: Study, tiny_data: Path, tmp_path: Path
) -> None:
    paths = build_report(study.cfg, "study", tmp_path / "report", data_dir=tiny_data)
    assert list(paths.heatmaps) == ["tiny-llama"] and list(paths.scatters) == ["tiny-llama"]
    assert_png(paths.heatmaps["tiny-llama"])
    assert_png(paths.scatters["tiny-llama"])

    md, _, mix_section = paths.markdown.read_text().partition("## Multi-format training")
    # the mix was scored in conv_term only, on both corpora; no predictions were logged
    chem_mix, _, ncbi_mix = mix_section.partition(f"on {NCBI}")
    assert table_row(chem_mix, "conv_term")[:4] == ["0.8000", "0.7500", "-0.0500", "n/a"]
    assert table_row(ncbi_mix, "conv_term")[:4] == ["0.7100", "0.6500", "-0.0600", "n/a"]
    header = next(line for line in md.splitlines() if line.startswith("| format |"))
    # corpora in registry order, five columns each
    assert header == (
        "| format | BC5CDR-chem F1 | BC5CDR-chem parse err | BC5CDR-chem tok/ent | "
        "BC5CDR-chem ceiling | BC5CDR-chem train | NCBI-disease F1 | NCBI-disease parse err | "
        "NCBI-disease tok/ent | NCBI-disease ceiling | NCBI-disease train |"
    )
    labels = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| `")]
    # canonical FORMATS order (multi_* before conv_*), then the mix
    assert labels == [
        "`multi_triple`",
        "`multi_json`",
        "`conv_term`",
        "`mix(conv_term+multi_triple)@conv_term`",
    ]
    chem, ncbi = slice(0, 5), slice(5, 10)
    assert table_row(md, "conv_term")[ncbi] == ["**0.7100**", "0.0290", "6.0", "0.5000", "90 s"]
    assert table_row(md, "multi_triple")[ncbi] == ["0.6900", "0.0310", "9.0", "1.0000", "90.0 min"]
    # the loop's own 600 s, not the run's 2 h of wall time
    assert table_row(md, "multi_json")[ncbi][4] == "10.0 min"
    # BC5CDR-chem files are absent: ceiling n/a
    assert table_row(md, "multi_triple")[chem][:4] == ["**0.8200**", "0.0180", "8.0", "n/a"]
    mix = table_row(md, "mix(conv_term+multi_triple)@conv_term")
    assert (mix[0], mix[2], mix[3]) == ("0.7500", "7.5", "n/a")
    assert (mix[5], mix[7], mix[8]) == ("0.6500", "7.0", "0.5000")
    assert "crashed" not in md and "unscored" not in md

    client = client_for(study.cfg)
    exp = client.get_experiment_by_name("study")
    assert exp is not None and paths.run_id is not None
    reports = client.search_runs([exp.experiment_id], "tags.`biogner.kind` = 'report'")
    assert [r.info.run_id for r in reports] == [paths.run_id]
    assert reports[0].info.status == "FINISHED"
    logged = {Path(a.path).name for a in client.list_artifacts(paths.run_id, "report")}
    assert logged == {"report.md", "heatmap_tiny-llama.png", "cost_tiny-llama.png"}
    # a report run never competes in the ranking
    assert all(r.run_id != paths.run_id for r in collect_results(study.cfg, "study", "test_f1"))


def free(metrics: dict[str, float]) -> dict[str, float]:
    """The same scores as a free-decoding evaluation logs them (`test_free_f1`, ...)."""
    return {k.replace("test_", "test_free_", 1): v for k, v in metrics.items()}


def test_report_pairs_each_run_with_its_own_free_decoding(
    store: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """The constrained-vs-free table reads both scores of one checkpoint, never the best free
    score of another run of the same cell; a free score is never the cell's reported F1."""
    s = Study(make_cfg(store, "decoding"), {}, {})
    interval = {"test_f1_low": 0.66, "test_f1_high": 0.74, "test_hallucination_rate": 0.0}
    interval |= {"test_sentences": 940, "test_gold_mentions": 960, "test_overruled_rate": 0.2}
    best = train_run(s, tmp_path, "term", ["conv_term"], [NCBI], None)
    eval_run(s, best, "conv_term", NCBI, score(0.70, 6.0, **interval))
    loose = {"test_f1_low": 0.69, "test_f1_high": 0.75, "test_hallucination_rate": 0.06}
    eval_run(s, best, "conv_term", NCBI, free(score(0.72, 5.0, **loose)))
    other = train_run(s, tmp_path, "term-again", ["conv_term"], [NCBI], None)
    eval_run(s, other, "conv_term", NCBI, score(0.50, 6.0))
    eval_run(s, other, "conv_term", NCBI, free(score(0.90, 5.0)))

    md = build_report(s.cfg, "decoding", tmp_path / "report", data_dir=tiny_data, log_run=False)
    text = md.markdown.read_text()
    main_table, _, section = text.partition("## Constrained vs free decoding")
    assert table_row(main_table, "conv_term")[0] == "**0.7000** [0.660, 0.740]"
    assert "`conv_term` on NCBI-disease (940 sentences, 960 gold): run `term`" in main_table
    assert table_row(section, "conv_term") == [
        "0.7000 [0.660, 0.740]",
        "0.7200 [0.690, 0.750]",
        "0.710 / 0.730",
        "0.690 / 0.710",
        "0.030 / 0.028",
        "0.000 / 0.060",
        "0.200",
        "6.0 / 5.0",
        "70.00 / 72.00",
        "1.03x",
    ]


def test_cli_commands_print_ranking_and_report(
    study: Study, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser(prog="biogner")
    sub = parser.add_subparsers(dest="command", required=True)
    add_select_command(sub)
    add_report_command(sub)
    uri = study.cfg.uri

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.func(args))

    assert (
        run(
            "select",
            "--experiment",
            "study",
            "--metric",
            "test_f1",
            "--dry-run",
            "--tracking-uri",
            uri,
        )
        == 0
    )
    out = capsys.readouterr().out
    first = next(line for line in out.splitlines() if line.lstrip().startswith("1 "))
    assert first.split()[:2] == ["1", "multi_triple-BC5CDR-chem"]
    assert "champion: run multi_triple-BC5CDR-chem" in out
    assert "dry run: nothing registered" in out

    assert run("select", "--experiment", "no-such-study", "--tracking-uri", uri) == 1
    assert "no MLflow experiment named 'no-such-study'" in capsys.readouterr().err

    out_dir = tmp_path / "cli-report"
    argv = ["report", "--experiment", "study", "--out", str(out_dir), "--tracking-uri", uri]
    assert run(*argv, "--data-dir", str(tiny_data), "--no-log") == 0
    printed = capsys.readouterr().out
    assert "# Study report: study" in printed
    assert "| `multi_triple` | **0.8200** |" in printed
    assert (out_dir / "report.md").read_text() in printed


def test_default_champion_is_what_the_serve_configs_load() -> None:
    """`biogner select` without --model-name registers the model the endpoints serve."""
    import yaml

    from biogner.study.config import DEFAULT_ALIAS, DEFAULT_MODEL_NAME

    parser = argparse.ArgumentParser()
    add_select_command(parser.add_subparsers())
    args = parser.parse_args(["select", "--experiment", "e"])
    default_ref = f"models:/{args.model_name}@{args.alias}"
    assert (args.model_name, args.alias) == (DEFAULT_MODEL_NAME, DEFAULT_ALIAS)
    for name in ("local.yaml", "gpu.yaml"):
        path = Path(__file__).parents[1] / "serve_configs" / name
        app = yaml.safe_load(path.read_text())["applications"][0]
        assert app["args"]["model_uri"] == default_ref, name


def dev_eval(
    study: Study,
    parent: str,
    fmt: str,
    metrics: dict[str, float],
    hits: list[bool],
    subset: bool = False,
    split: str = "dev",
) -> str:
    """An evaluation (dev unless `split` says) as run_evaluation logs it: nested run,
    predictions.jsonl (one gold mention per sentence, predicted exactly where `hits` says)
    and, for whole splits only, the metrics copied onto the training run."""
    tags = {
        KIND_TAG: EVALUATE_KIND,
        MODEL_TAG: "tiny-llama",
        FORMAT_TAG: fmt,
        CORPUS_TAG: NCBI,
        SPLIT_TAG: split,
        SUBSET_TAG: str(subset).lower(),
    }
    with tracked_run(study.cfg, f"eval-{fmt}-{split}", tags=tags, parent_run_id=parent) as rid:
        log_metrics_from_worker(rid, metrics, 0, study.cfg.uri)
        records = [
            {"id": f"s{i}", "gold": [[0, 4, "Disease"]], "pred": [[0, 4, "Disease"]] if hit else []}
            for i, hit in enumerate(hits)
        ]
        client = client_for(study.cfg)
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "predictions.jsonl"
            target.write_text("".join(json.dumps(r) + "\n" for r in records))
            client.log_artifact(rid, str(target))
    if not subset:
        log_metrics_from_worker(parent, metrics, 0, study.cfg.uri)
    return rid


TiedRun = tuple[str, str, float]  # (run name, format, generated tokens per entity)


def dev_score(f1: float, tokens_per_entity: float) -> dict[str, float]:
    return {"dev_f1": f1, "dev_generated_tokens_per_entity": tokens_per_entity}


def test_a_first_n_evaluation_is_never_selected(store: Path, tmp_path: Path) -> None:
    s = Study(make_cfg(store, "subsets"), {}, {})
    whole = train_run(s, tmp_path, "whole", ["conv_term"], [NCBI], None)
    quick = train_run(s, tmp_path, "quick", ["multi_json"], [NCBI], None)
    dev_eval(s, whole, "conv_term", dev_score(0.5, 6.0), [True, False] * 20)
    dev_eval(s, quick, "multi_json", dev_score(0.9, 6.0), [True] * 9 + [False], subset=True)
    ranking = collect_results(s.cfg, "subsets", "dev_f1")
    assert [r.run_name for r in ranking] == ["whole"]
    assert [r.run_name for r in collect_results(s.cfg, "subsets", "dev_f1", corpus=NCBI)] == [
        "whole"
    ]
    assert select_champion(s.cfg, "subsets", model_name="biogner-subsets").champion.run_name == (
        "whole"
    )


def tied_study(
    store: Path, tmp_path: Path, experiment: str, better: TiedRun, other: TiedRun
) -> Study:
    """Two runs statistically tied on dev: 40 sentences, `better` (F1 0.62) gets one more
    right than `other` (0.60). Each side is (run name, format, tokens per entity)."""
    s = Study(make_cfg(store, experiment), {}, {})
    base = [True] * 24 + [False] * 16
    for (name, fmt, cost), f1, hits in ((better, 0.62, [*base[:-1], True]), (other, 0.60, base)):
        run = train_run(s, tmp_path, name, [fmt], [NCBI], None)
        dev_eval(s, run, fmt, dev_score(f1, cost), hits)
    return s


def test_a_statistical_tie_goes_to_the_cheaper_format(store: Path, tmp_path: Path) -> None:
    s = tied_study(
        store, tmp_path, "tie", ("costly", "conv_bio", 40.0), ("cheap", "conv_term", 6.0)
    )
    # a dry run shows what selecting would do, the tie rule included, and registers nothing
    dry = select_champion(s.cfg, "tie", model_name="biogner-tie", dry_run=True)
    assert dry.champion.run_name == "cheap" and dry.comparison is not None
    assert dry.comparison.cheaper_preferred and not dry.registered
    assert "dry run: nothing registered (models:/biogner-tie@champion points at nothing yet)" in (
        explain(dry)
    )
    assert client_for(s.cfg).search_model_versions("name = 'biogner-tie'") == []
    sel = select_champion(s.cfg, "tie", model_name="biogner-tie")
    assert sel.comparison is not None and sel.comparison.tie
    assert 0.5 < sel.comparison.p_better < 0.95 and sel.comparison.sentences == 40
    assert sel.champion.run_name == "cheap" and sel.comparison.cheaper_preferred
    text = explain(sel)
    assert "statistically tied" in text and "the cheaper one wins" in text
    tags = client_for(s.cfg).get_model_version("biogner-tie", sel.version).tags
    assert tags["tie_broken_by_cost"] == "true" and tags["metric"] == "dev_f1"


def test_a_clear_win_keeps_the_better_format_even_if_costlier(store: Path, tmp_path: Path) -> None:
    s = Study(make_cfg(store, "win"), {}, {})
    costly = train_run(s, tmp_path, "costly", ["conv_bio"], [NCBI], None)
    cheap = train_run(s, tmp_path, "cheap", ["conv_term"], [NCBI], None)
    dev_eval(s, costly, "conv_bio", dev_score(0.9, 40.0), [True] * 36 + [False] * 4)
    dev_eval(s, cheap, "conv_term", dev_score(0.5, 6.0), [True, False] * 20)
    sel = select_champion(s.cfg, "win", model_name="biogner-win")
    assert sel.champion.run_name == "costly"
    assert sel.comparison is not None and sel.comparison.p_better > 0.99
    assert not sel.comparison.tie and not sel.comparison.cheaper_preferred
    assert "P(champion better than the next) = 1.000" in explain(sel)


def test_report_reads_each_mix_format_against_its_single_format_model(
    store: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """The study's second question: per format the mix was scored in, the single-format
    model's F1 beside the mix's, the difference and the paired-bootstrap P(mix better)."""
    s = Study(make_cfg(store, "mixing"), {}, {})
    term = train_run(s, tmp_path, "term", ["conv_term"], [NCBI], None)
    triple = train_run(s, tmp_path, "triple", ["multi_triple"], [NCBI], None)
    mix = train_run(s, tmp_path, "mix", ["conv_term", "multi_triple", "multi_json"], [NCBI], None)
    # 40 sentences: in conv_term the mix finds every mention the single model finds and 16
    # more; in multi_triple the two differ on one sentence only
    half = [True, False] * 20
    dev_eval(s, term, "conv_term", score(0.5, 6.0), half, split="test")
    dev_eval(s, mix, "conv_term", score(0.9, 6.5), [True] * 36 + [False] * 4, split="test")
    dev_eval(s, triple, "multi_triple", score(0.61, 9.0), [*half[:-1], True], split="test")
    dev_eval(s, mix, "multi_triple", score(0.6, 9.5), half, split="test")
    dev_eval(s, mix, "multi_json", score(0.3, 12.0), half, split="test")  # no single model

    paths = build_report(s.cfg, "mixing", tmp_path / "r", data_dir=tiny_data, log_run=False)
    section = paths.markdown.read_text().partition("## Multi-format training vs one format")[2]
    assert "### `tiny-llama` mix(conv_term+multi_triple+multi_json) on NCBI-disease" in section
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    # in FORMATS order (multi_* first), the mix's own score beside the single model's
    assert [r.split("|")[1].strip() for r in rows] == [
        "`multi_triple`",
        "`multi_json`",
        "`conv_term`",
    ]
    term_row = table_row(section, "conv_term")
    triple_row = table_row(section, "multi_triple")
    json_row = table_row(section, "multi_json")
    assert term_row[:3] == ["0.5000", "0.9000", "+0.4000"]
    assert float(term_row[3]) > 0.975 and term_row[4] == "40" and term_row[5] == "6.0 / 6.5"
    assert triple_row[:3] == ["0.6100", "0.6000", "-0.0100"]
    assert 0.025 < float(triple_row[3]) < 0.5
    assert json_row[0] == "-" and json_row[1] == "0.3000" and json_row[3] == "-"
    summary = "Of 2 formats compared, the mix is clearly better in 1, clearly worse in 0"
    assert summary + ", and within the noise in 1." in section


def test_a_tie_with_no_real_cost_difference_keeps_the_better_score(
    store: Path, tmp_path: Path
) -> None:
    """Fewer tokens by a hair (40.0 vs 39.5: 1 %) is not cheaper to serve: on a statistical tie
    the better-scoring run stays champion, and the explanation says why."""
    s = tied_study(
        store, tmp_path, "costtie", ("better", "conv_inline", 40.0), ("hair", "multi_inline", 39.5)
    )
    sel = select_champion(s.cfg, "costtie", model_name="biogner-costtie", dry_run=True)
    assert sel.comparison is not None and sel.comparison.tie
    assert not sel.comparison.cheaper_preferred and sel.champion.run_name == "better"
    assert "the runner-up is not cheaper by 5% or more" in explain(sel)


def test_report_reads_conv_against_multi_for_each_writing(
    store: Path, tiny_data: Path, tmp_path: Path
) -> None:
    """The turn-style question: per corpus and writing, the conv cell beside its multi twin,
    the difference, P(conv better) on the same sentences and both costs."""
    s = Study(make_cfg(store, "turns"), {}, {})
    multi = train_run(s, tmp_path, "multi", ["multi_term"], [NCBI], None)
    conv = train_run(s, tmp_path, "conv", ["conv_term"], [NCBI], None)
    alone = train_run(s, tmp_path, "alone", ["multi_inline"], [NCBI], None)  # no conv twin
    half = [True, False] * 20
    dev_eval(s, multi, "multi_term", score(0.5, 6.0), half, split="test")
    dev_eval(s, conv, "conv_term", score(0.9, 9.0), [True] * 36 + [False] * 4, split="test")
    dev_eval(s, alone, "multi_inline", score(0.7, 30.0), half, split="test")
    paths = build_report(s.cfg, "turns", tmp_path / "r", data_dir=tiny_data, log_run=False)
    section = paths.markdown.read_text().partition("## Turn style: multi vs conv")[2]
    rows = [line for line in section.splitlines() if line.startswith(f"| {NCBI} |")]
    assert len(rows) == 1  # term only: inline has no conv cell
    cols = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cols[:2] == [NCBI, "term"]
    assert cols[2].startswith("0.5000") and cols[3].startswith("0.9000") and cols[4] == "+0.4000"
    assert float(cols[5]) > 0.975 and cols[6] == "40"
    assert cols[7] == "6.0 / 9.0" and cols[8] == "50.00 / 90.00"
