"""Issue 14, trainer probes on the real reference clips with tiny towers (runlocal).

The divergence probe: lr 1e6 under keep_checkpoints=1. One update at that rate moves the weights by
~1e6 while its own loss is still normal; the next step's loss is ~1e12 and a NaN follows. Before,
the run saved those states and retention deleted the last good one, so no resume could work.

Every run here has the shapes of tests/test_train.py's runlocal run (mesh data=4 x model=2, 4
steps, batch 4), so the default-lr programs come from the shared compilation cache and only the
lr=1e6 step is compiled here (once; the rollback test reuses it).
"""

import json
import logging
import pathlib

import jax
import jax_cache
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import base_config
from gram_jax.train import train_and_evaluate
from gram_jax.train.guard import DivergenceError

# lr 1e6 after one warm-up step at lr 0: state 1 is healthy, update 1 is the first at 1e6.
HUGE_LR = {"optim.lr": 1e6, "schedule.warmup_steps": 1}


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache():
    with jax_cache.in_process_cache():
        yield


def _config(**changes):
    config = base_config.get_config("runlocal")
    config.mesh.update(dict(data=4, fsdp=1, model=2))
    config.keep_checkpoints = 1  # the TriDigits and quickstart setting of the probe
    config.checkpoint_steps = 1
    for key, value in changes.items():
        node = config
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return config


def _params(step_dir: pathlib.Path) -> list[np.ndarray]:
    meta = ocp.PyTreeCheckpointer().metadata(step_dir / "state")
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = ocp.PyTreeCheckpointer().restore(step_dir / "state", restore_args=args)
    return [np.asarray(x) for x in jax.tree.leaves(state["params"])]


def _steps(workdir: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_divergence_keeps_the_last_good_state_and_a_resume_with_a_sane_lr_finishes(
    tmp_path, caplog
):
    command = [
        "gram-train",
        "--config=experiments/base_config.py:runlocal",
        f"--workdir={tmp_path}",
    ]
    with pytest.raises(DivergenceError) as info:
        train_and_evaluate(_config(**HUGE_LR), tmp_path, command=command)
    error = info.value
    # The loss of step 3 (computed on state 2) is ~1e12. State 1 is the last one a healthy step
    # was computed on.
    assert error.step == 3 and error.last_good == 1, str(error)
    message = str(error)
    assert message.startswith("training diverged at step 3: loss ")
    assert f"The last good checkpoint is {tmp_path / 'checkpoints'}/1." in message
    assert f"--workdir={tmp_path} --config.optim.lr=1e+05" in message
    # keep_checkpoints=1 did not delete it; the unconfirmed state 2 was moved aside, not deleted.
    assert _steps(tmp_path) == [1]
    assert (tmp_path / "checkpoints_set_aside" / "2.diverged" / "state").is_dir()
    assert max(float(np.abs(p).max()) for p in _params(tmp_path / "checkpoints" / "1")) < 100
    assert not (tmp_path / "metrics.jsonl").exists()

    # Resume in the same workdir at the runlocal lr, keeping the best state by an eval metric.
    config = _config(best_metric="reference_clips/t2d/R@1")
    with caplog.at_level(logging.INFO):
        state = train_and_evaluate(config, tmp_path)
    assert int(state["step"]) == 4
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    logs = [r.getMessage() for r in caplog.records]
    assert any(line.startswith("starting at step 1 from workdir:1") for line in logs)
    changed = [line for line in logs if line.startswith("resuming with changed settings: ")]
    assert changed and "optim.lr (saved 1000000.0, now 2e-05)" in changed[0]
    # The best state is kept apart from the final one, and the summary names both.
    best = json.loads((tmp_path / "best" / "best.json").read_text())
    assert best["metric"] == "reference_clips/t2d/R@1" and best["step"] == 4
    assert (tmp_path / "best" / "checkpoints" / "4" / "state").is_dir()
    assert f"finished at step 4: final state {tmp_path / 'checkpoints'}/4" in logs
    assert any(line.startswith("best reference_clips/t2d/R@1 (max) = ") for line in logs)


def test_rollback_restores_the_good_state_skips_the_batch_and_caps_retries(tmp_path, caplog):
    config = _config(**HUGE_LR, on_nonfinite="rollback", max_rollbacks=1)
    config.evals = {}
    with caplog.at_level(logging.WARNING), pytest.raises(DivergenceError) as info:
        train_and_evaluate(config, tmp_path)
    (rollback,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rollback")]
    assert rollback.startswith("rollback 1 of 1: training diverged at step 3 (loss ")
    assert rollback.endswith("restored checkpoint 1, skipping batch 2")
    # lr 1e6 diverges again on the next batches; the cap turns it into the stop error.
    assert "(after 1 rollbacks, the limit)" in str(info.value)
    assert info.value.last_good == 1 and _steps(tmp_path) == [1]


def _clips_with_broken_videos(root: pathlib.Path, data) -> pathlib.Path:
    """The 4 reference clips (linked) plus 4 records whose video files are not videos."""
    from data_pipelines.datasets.reference_clips import LAYOUT

    records = json.loads(pathlib.Path(data.annotations.train).read_text())
    for sub in ("video", "audio"):
        (root / f"{sub}s").mkdir(parents=True)
        for src in pathlib.Path(data[f"{sub}_dir"]).iterdir():
            (root / f"{sub}s" / src.name).symlink_to(src.resolve())
    for i, record in enumerate(list(records)):
        new_id = f"broken{i}"
        records.append({"video_id": new_id, "desc": record["desc"]})
        (root / "videos" / f"{LAYOUT.video_prefix}{new_id}.mp4").write_bytes(b"\x00no video" * 99)
        audio = root / "audios" / f"{LAYOUT.audio_prefix}{record['video_id']}.mp3"
        (root / "audios" / f"{LAYOUT.audio_prefix}{new_id}.mp3").symlink_to(audio.resolve())
    (root / "annotations.json").write_text(json.dumps(records))
    return root


def test_skipped_bad_items_are_counted_in_metrics_and_summary_and_warned_once(tmp_path, caplog):
    config = _config(**{"data.bad_data": "skip", "checkpoint_steps": 4})
    config.evals = {}
    root = _clips_with_broken_videos(tmp_path / "data", config.data)
    with config.data.unlocked():
        config.data.annotations = {"train": str(root / "annotations.json")}
        config.data.video_dir = str(root / "videos")
        config.data.audio_dir = str(root / "audios")
    with caplog.at_level(logging.INFO):
        train_and_evaluate(config, tmp_path / "run")
    logs = [r.getMessage() for r in caplog.records]
    # 8 samples at batch 4: 4 steps are 2 epochs, each masking the 4 broken videos.
    assert "bad_data='skip': 8 bad media items masked in training (video 8)" in logs
    warned = [line for line in logs if line.startswith("bad_data='skip': video of id")]
    assert len(warned) == 1 and "further masked video items are counted" in warned[0]
    progress = [line for line in logs if line.startswith("step 4/4: ")]
    assert progress and "data/skipped_video 8" in progress[0]
