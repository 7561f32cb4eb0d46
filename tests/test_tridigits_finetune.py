"""The TriDigits fine-tuning experiment: stage 2 really starts from stage 1 (config.model_init in
the seed-vmapped runner), the one command writes its run files (real small TriDigits build), and
the paired table's statistics and ``aggregate --check`` (on a committed tiny example)."""

from __future__ import annotations

import json
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "golden" / "tridigits_finetune"
TINY = "--folds 1 --seeds 0 --stage1_steps 2 --stage2_steps 2 --eval_points 2 --batch_size 8"
TINY += " --frames 2 --small --arms none,volume"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """finetune.main at tiny size (stage 1 + the volume arm): (args, out dir)."""
    from data_pipelines.datasets import tridigits

    if not (tridigits.default_cache_dir() / "sources" / ".unpacked").exists() and not (
        shutil.which("apt-get") and shutil.which("dpkg-deb")
    ):
        pytest.skip("apt-get/dpkg-deb absent and no unpacked TriDigits sources in the cache")
    from experiments.tridigits import finetune

    out = tmp_path_factory.mktemp("finetune")
    argv = [*TINY.split(), "--out", str(out)]
    assert finetune.main(argv) == 0
    return finetune.parse_args(argv), out


@pytest.mark.media
def test_finetune_writes_one_run_file_per_arm_fold_seed(tiny_run):
    _, out = tiny_run
    assert sorted(p.name for p in (out / "runs").glob("*.json")) == [
        "none_fold1_seed0.json",
        "volume_fold1_seed0.json",
    ]
    volume = json.loads((out / "runs" / "volume_fold1_seed0.json").read_text())
    none = json.loads((out / "runs" / "none_fold1_seed0.json").read_text())
    assert none["selected_step"] == 0 and volume["selected_step"] in (1, 2)
    assert [p["step"] for p in volume["curve"]] == [1, 2]
    for key in ("video+audio->text/volume", "text->video+audio/cosine", "audio->text"):
        m = volume["test"][key]
        assert 0 <= m["class@1"] <= 1 and 0 <= m["text@1"] <= 1
        assert volume["queries"][key] == m["queries"]
    # Text queries are the distinct texts (fewer than the test records); tuples are all distinct.
    records = _records(tiny_run, "test")
    texts = {r["desc"] for r in records}
    assert volume["queries"]["text->video+audio/volume"] == len(texts) < len(records)
    assert volume["queries"]["video+audio->text/volume"] == len(records)
    assert "text@1" not in volume["test"]["text->video"]
    assert 0 <= volume["test"]["positive_share"] <= 1
    # The stage-1 parameters are written where config.model_init reads them.
    assert (out / "stage1_params" / "fold1_seed0" / "params").is_dir()


def _records(tiny_run, split):
    from data_pipelines.datasets import tridigits
    from experiments.tridigits import finetune

    args, _ = tiny_run
    config = finetune.arm_config(finetune.STAGE1, 1, 1e-3, args)
    root = pathlib.Path(config.data.video_dir).parent
    return json.loads(tridigits.annotation_path(root, 1, split).read_text())


@pytest.mark.media
def test_stage2_at_lr0_from_saved_params_reproduces_stage1(tiny_run):
    """config.model_init in the seed-vmapped runner: a stage 2 at learning rate ~0 from stage 1's
    saved parameters embeds exactly as stage 1 did (its metrics equal the 'none' arm's)."""
    from experiments.tridigits import finetune
    from experiments.tridigits.arrays import TriDigitsArrays
    from experiments.tridigits.runner import SeedBatchRunner
    from gram_jax.evaluators import distinct

    args, out = tiny_run
    # Learning rate "0": the config refuses 0, and 1e-30 moves no float32 parameter (each update
    # is far below half a unit in the last place).
    config = finetune.arm_config(finetune.STAGE1, 1, 1e-30, args)
    config.model_init = str(out / "stage1_params" / "fold1_seed0" / "params")
    data = TriDigitsArrays(
        pathlib.Path(config.data.video_dir).parent, frames=2, size=28, cache_dir=out / "cache"
    )
    runner = SeedBatchRunner(config)
    table = data.split(1, "test")
    ids = {"text": table["desc"], "video": table["image_row"], "audio": table["clip_row"]}

    def test_metrics(**kwargs):
        (result,) = runner.train(data, [(1, 0)], train_split="fit", **kwargs)
        emb = result["splits"]["test"]["embeddings"]
        return result, distinct.split_metrics(emb, table["label"], ids)

    result, loaded = test_metrics()
    assert result["init"] == config.model_init
    stage1 = json.loads((out / "runs" / "none_fold1_seed0.json").read_text())["test"]
    assert loaded == stage1
    _, scratch = test_metrics(init_files=[None])  # the same runner, its seed's random init
    assert scratch != stage1


def test_paired_statistics_and_holm():
    from experiments.tridigits import finetune_table

    r = finetune_table.paired([0.1, 0.2, 0.3])
    assert r["n"] == 3 and r["mean"] == pytest.approx(0.2)
    # t(0.975, 2) = 4.303; sd = 0.1
    assert r["half"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert r["p"] == pytest.approx(0.0742, abs=5e-4)  # t = 3.464 on 2 df, two-sided
    assert finetune_table.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    adjusted = finetune_table.holm([math.nan, 0.02])
    assert math.isnan(adjusted[0]) and adjusted[1] == pytest.approx(0.02)  # a family of one


def test_check_passes_on_the_committed_example_and_fails_on_a_change(tmp_path):
    from experiments.tridigits import aggregate

    runs, results = EXAMPLE / "runs", EXAMPLE / "results.md"
    argv = ["--check", str(results), "--finetune-runs", str(runs)]
    assert aggregate.main(argv) == 0
    changed = tmp_path / "results.md"
    text = results.read_text(encoding="utf-8")
    start, _ = aggregate.markers("finetune")
    head, block = text.split(start)
    first = next(c for c in block if c.isdigit())
    changed.write_text(head + start + block.replace(first, str((int(first) + 1) % 10), 1))
    assert aggregate.main(["--check", str(changed), "--finetune-runs", str(runs)]) == 1


def test_docs_results_check_command_as_written():
    """The command docs/results.md gives, run verbatim from the repository root."""
    doc = (REPO / "docs" / "results.md").read_text(encoding="utf-8")
    command = "python -m experiments.tridigits.aggregate --check docs/results.md"
    assert command in doc
    done = subprocess.run(
        [sys.executable, *command.split()[1:]], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_table_lists_distinct_query_counts():
    from experiments.tridigits import finetune_table

    text = finetune_table.table(finetune_table.load_runs(EXAMPLE / "runs"))
    record = json.loads(next((EXAMPLE / "runs").glob("*.json")).read_text())
    assert f"text->video+audio/volume {record['queries']['text->video+audio/volume']}" in text
    assert np.isfinite(record["test"]["positive_share"])


def test_val_voices_keep_every_language_in_fit():
    """The "kept_language" validation split, like the test folds, never holds out the last
    training voice of a language (its words would then be unread by the fit runs, and every
    direction with a text would measure chance); "every_fourth" (the committed runs' rule)
    can, and is reproduced as it was."""
    from experiments.tridigits.arrays import val_voices

    voices = ["a_de_1", "a_de_2", "b_en_1", "b_en_GB_2", "b_en_3", "c_it_1", "d_ja_1", "e_zh_1"]
    languages = ["de", "de", "en", "en_GB", "en", "it", "ja", "zh"]
    kept = val_voices(voices, languages)
    fit = [lang for v, lang in zip(voices, languages, strict=True) if v not in kept]
    fit_languages = {lang.split("_")[0] for lang in fit}
    assert kept and all(lang.split("_")[0] in fit_languages for lang in languages)
    assert kept <= {"a_de_1", "a_de_2", "b_en_1", "b_en_GB_2", "b_en_3"}
    # Sorted by name, every 4th: a_de_1 and b_en_GB_2.
    assert val_voices(voices, languages, "every_fourth") == {"a_de_1", "b_en_GB_2"}
    with pytest.raises(ValueError, match="val rule 'random'"):
        val_voices(voices, languages, "random")
