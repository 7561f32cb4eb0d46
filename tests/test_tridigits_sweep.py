"""The TriDigits reproduction: every method config is valid, and the sweep runs end to end
(real small TriDigits build, the trainer's step vmapped over 2 seeds, run JSON, results table)."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRIDIGITS = REPO / "experiments" / "tridigits"
pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def sweep_module():
    from data_pipelines.datasets import tridigits

    if not (tridigits.default_cache_dir() / "sources" / ".unpacked").exists() and not (
        shutil.which("apt-get") and shutil.which("dpkg-deb")
    ):
        pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")
    from experiments.tridigits import sweep

    return sweep


def test_every_method_config_is_valid(sweep_module):
    from experiments.tridigits import tridigits_common
    from gram_jax.config.loading import load_config_module
    from gram_jax.config.validation import validate_config
    from gram_jax.losses import LOSSES

    for method, loss in sweep_module.METHODS.items():
        module = load_config_module(TRIDIGITS / f"{method}.py")
        config = module.get_config("runlocal,fold=3,seed=4")
        validate_config(config)
        assert config.loss.name == loss and loss in LOSSES
        assert config.data.annotations.test.endswith("fold3_test.json") and config.seed == 4
        # GRAM's recipe has the matching loss (unless its config drops it); baselines train
        # their own loss alone.
        matching = method.startswith("gram") and getattr(module, "MATCHING", True)
        assert (config.loss.matching_weight > 0) == matching
        assert config.model.matching.enabled == matching
        # GRAM + a symmetry breaker: the breaker's keys on top of GRAM's recipe.
        if method.startswith("gram"):
            for key, value in tridigits_common.BREAKERS[getattr(module, "BREAKER", "none")].items():
                steps = config.total_steps
                want = round(value * steps) if key in tridigits_common.STEP_KEYS else value
                assert config.loss[key] == want, (method, key)
        # The MiniLM warm start: the real text tower, loaded by model_init, at its own rate.
        assert (config.model.text.size == "minilm") == (method == "gram_minilm")
        assert bool(config.model_init) == (method == "gram_minilm")
    with pytest.raises(ValueError, match="unknown key 'folds'"):
        module.get_config("folds=2")


def test_sweep_runs_end_to_end(sweep_module, tmp_path):
    results = tmp_path / "results.md"
    argv = ["--workdir", str(tmp_path), "--methods", "cosine_anchor", "--folds", "1"]
    argv += ["--seeds", "0,1", "--steps", "2", "--batch-size", "8", "--results", str(results)]
    argv += ["--small"]  # the small TriDigits variant keeps this test short
    assert sweep_module.main(argv) == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert [p.name for p in runs] == [
        "cosine_anchor_fold1_seed0.json",
        "cosine_anchor_fold1_seed1.json",
    ]
    records = [json.loads(p.read_text()) for p in runs]
    for r in records:
        assert r["scoring"] == "cosine" and r["fold"] == 1
        assert set(r["collapse"]) == {"text", "video", "audio"}
        assert r["final_train"]["loss"] > 0
    # Seeds differ in initialisation and data order, so their embeddings (and losses) differ.
    assert records[0]["final_train"]["loss"] != records[1]["final_train"]["loss"]
    assert "| cosine_anchor | 2 |" in results.read_text()
    assert sweep_module.main(argv) == 0  # resumable: finished runs are skipped
