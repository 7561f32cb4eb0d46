"""The quickstart config end to end (runlocal: the small real TriDigits variant, 2 steps), and the
sweep's in-memory arrays against the real pipeline."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.media


def _load(relative: str):
    from gram_jax.config.loading import load_config_module

    return load_config_module(REPO / "experiments" / relative)


@pytest.fixture(scope="module")
def runlocal_config():
    from data_pipelines.datasets import tridigits

    if not (tridigits.default_cache_dir() / "sources" / ".unpacked").exists() and not (
        shutil.which("apt-get") and shutil.which("dpkg-deb")
    ):
        pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")
    return _load("quickstart.py").get_config("runlocal")


def test_quickstart_config_keys(runlocal_config):
    from gram_jax.config.validation import validate_config

    config = runlocal_config
    validate_config(config)  # unknown keys / wrong types fail here, before any compilation
    # GRAM + the hybrid symmetry breaker (volume + 1.0 x cosine InfoNCE over all pairs).
    assert config.loss.name == "volume" and config.loss.cosine_weight == 1.0
    assert config.loss.cosine_pairs == "all_pairs" and config.loss.matching_weight == 0.0
    assert config.model.temperature.learnable
    assert {e.split for e in config.evals.values()} == {"test", "train_sample"}
    assert config.data.dataset == "tridigits" and config.total_steps == 2


def test_quickstart_trains_and_reports(runlocal_config, tmp_path):
    from gram_jax.config import prepare
    from gram_jax.evaluators.report import report_run
    from gram_jax.train import Trainer, train_and_evaluate

    config = runlocal_config
    state = train_and_evaluate(config, tmp_path)
    assert int(np.asarray(state["step"])) == 2
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {x["eval"] for x in lines} == {"test", "train_sample"}
    test_line = next(x for x in lines if x["eval"] == "test")
    for key in ("sign/t_v/neg_positive_fraction", "abs_class/v2a/R@1", "collapse/video/mean_cos"):
        assert key in test_line, key  # the diagnostics reach metrics.jsonl (and TensorBoard)
    assert list(tmp_path.glob("events.out.tfevents.*"))
    printed = []
    model = Trainer(prepare(config)).eval_model
    out = report_run(config, model, state, tmp_path, log=printed.append)
    assert "text->video+audio/volume" in printed[0] and "video->audio" in printed[0]
    # The printed table: class@1 and text identity over distinct queries, no instance recall.
    assert "text@1" in printed[0] and "queries" in printed[0] and "R@1" not in printed[0]
    assert "test_seen (held-out images, training recordings)" in "\n".join(printed)
    test_records = json.loads(pathlib.Path(config.data.annotations.test).read_text())
    assert set(out["retrieval"]) == {
        "text->video+audio",
        "video->audio",
        "audio->video",
        "text->video",
        "text->audio",
    }
    for metrics in out["retrieval"].values():
        assert 0.0 <= metrics["R@1"] <= 1.0 and 1 <= metrics["MdR"] <= len(test_records)
    assert (tmp_path / "embeddings.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["scoring"] == "volume" and set(report["collapse"]) == {"text", "video", "audio"}
    assert set(report["diagnostics"]) == {"text-video", "text-audio", "video-audio"}
    assert 0.0 <= report["diagnostics"]["video-audio"]["neg_positive_fraction"] <= 1.0
    assert set(report["other_splits"]) == {"test_seen", "train_sample"}
    assert "text->video" in report["other_splits"]["train_sample"]["retrieval"]
    texts = {r["desc"] for r in test_records}
    assert report["distinct"]["text->video"]["queries"] == len(texts) < len(test_records)
    assert report["retrieval"]["text->video"]["class@1"] >= 0.0


def test_sweep_arrays_equal_the_pipeline(runlocal_config, tmp_path):
    """The sweep's decoded-once arrays are exactly the pipeline's evaluation batches."""
    from data_pipelines.config import data_config
    from data_pipelines.datasets import tridigits
    from data_pipelines.pipeline import make_eval_iterator

    arrays = _load("tridigits/arrays.py")
    root = pathlib.Path(runlocal_config.data.video_dir).parent
    data = arrays.TriDigitsArrays(root, frames=4, size=28, cache_dir=tmp_path)
    overrides = tridigits.data_overrides(
        root,
        2,
        tridigits.BuildOptions(**json.loads((root / "manifest.json").read_text())["options"]),
    )
    config = data_config(**{**overrides, "num_frames": 4, "image_size": 28}, eval_batch_size=16)
    batch = next(iter(make_eval_iterator(config, "test", process_index=0, process_count=1)))
    valid = batch["valid"]
    rows = batch["index"][valid]
    mine = data.batch(2, "test", rows)
    for key in ("video", "audio", "text_ids", "text_mask", "label"):
        np.testing.assert_array_equal(mine[key], batch[key][valid], err_msg=key)


def test_quickstart_budget_table_and_choice_follow_the_committed_runs():
    """docs/results.md holds the budget table the committed validation runs generate, and the
    quickstart trains the budget the rule chose (the largest measured when none passed)."""
    from experiments import quickstart
    from experiments.tridigits import quickstart_budget

    records = quickstart_budget.load_records(
        REPO / "experiments" / "tridigits" / "runs" / "quickstart_budget"
    )
    assert [r["steps"] for r in records] == [300, 450, 600]
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    assert quickstart_budget.table(records) in doc
    chosen = quickstart_budget.chosen_budget(records)
    assert quickstart.STEPS == (chosen or max(r["steps"] for r in records))
