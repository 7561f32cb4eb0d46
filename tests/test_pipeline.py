"""The Grain graph on real data: the 4 real clips and the real MSR-VTT annotations.

Covers the plans (seeded per-epoch order, drop remainder, disjoint process shards), the batch
contract, exact iterator restore mid-epoch (in-process and with 2 worker processes), evaluation
(every sample exactly once, padded with valid=False) and the bad-data policy.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import threadpoolctl
from absl import flags
from pipeline_fixtures import clip_dataset, small_config

from data_pipelines import pipeline
from data_pipelines.config import data_config
from data_pipelines.media import MediaError

pytestmark = pytest.mark.media

# Grain's worker processes read absl flags (grain 0.2.18): pytest never parses them.
if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


@pytest.fixture
def clips(tmp_path):
    return clip_dataset(tmp_path)


def _take(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_batches_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert sorted(x) == sorted(y)
        for key in x:
            np.testing.assert_array_equal(np.asarray(x[key]), np.asarray(y[key]), err_msg=key)


# ---- config -------------------------------------------------------------------------------------


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(KeyError, match="batch_sise"):
        data_config(batch_sise=4)
    with pytest.raises(KeyError, match="audio.bins"):
        data_config(audio=dict(bins=64))
    with pytest.raises(ValueError, match="'resize'"):
        data_config(resize="squash")
    with pytest.raises(ValueError, match="'modalities'"):
        data_config(modalities=("video", "depthh"))
    with pytest.raises(ValueError, match="'bad_data'"):
        data_config(bad_data="ignore")
    c = data_config(annotations={"val": "x.json"}, audio=dict(num_clips=2))
    assert c.annotations.val == "x.json" and c.audio.num_clips == 2 and c.audio.mel_bins == 64


# ---- plans (index bookkeeping, no media) --------------------------------------------------------


@pytest.mark.parametrize("num_samples,global_batch,processes", [(10, 4, 2), (37, 8, 4), (9, 3, 1)])
def test_train_plan_epochs_are_fresh_permutations_split_disjointly(
    num_samples, global_batch, processes
):
    plans = [
        pipeline.TrainPlan(
            num_samples, global_batch, p, processes, seed=7, shuffle=True, num_epochs=3
        )
        for p in range(processes)
    ]
    steps = num_samples // global_batch
    per_epoch = steps * global_batch // processes
    orders = []
    for epoch in range(3):
        seen = []
        for plan in plans:
            items = [plan[epoch * per_epoch + j] for j in range(per_epoch)]
            assert all(int(it[1]) == epoch for it in items)
            seen.append([int(it[0]) for it in items])
        flat = [s for shard in seen for s in shard]
        assert len(set(flat)) == len(flat) == steps * global_batch  # disjoint, remainder dropped
        orders.append(plans[0].permutation(epoch))
    assert not np.array_equal(orders[0], orders[1])  # a new order each epoch
    assert len(plans[0]) == 3 * per_epoch
    # Same seed, same order; other seed, other order.
    again = pipeline.TrainPlan(num_samples, global_batch, 0, processes, 7, True, 3)
    assert np.array_equal(again.permutation(2), orders[2])
    other = pipeline.TrainPlan(num_samples, global_batch, 0, processes, 8, True, 3)
    assert not np.array_equal(other.permutation(0), orders[0])


@pytest.mark.parametrize("num_samples,global_batch,processes", [(10, 4, 2), (8, 8, 4), (1, 6, 3)])
def test_eval_plan_covers_every_sample_once_in_order(num_samples, global_batch, processes):
    plans = [pipeline.EvalPlan(num_samples, global_batch, p, processes) for p in range(processes)]
    local = global_batch // processes
    assert len({len(p) for p in plans}) == 1  # same number of batches on every process
    rows = []
    for step in range(plans[0].num_batches):
        for plan in plans:  # process order = row order of the global batch
            rows += [int(plan[step * local + r][0]) for r in range(local)]
    valid = [r for r in rows if r != pipeline.PAD]
    assert valid == list(range(num_samples))
    assert rows[num_samples:] == [pipeline.PAD] * (len(rows) - num_samples)


# ---- real clips ---------------------------------------------------------------------------------


def test_train_batch_follows_the_contract(clips):
    config = small_config(clips, modalities=("video", "audio", "text"), num_epochs=1)
    batches = list(pipeline.make_train_iterator(config, process_index=0, process_count=1))
    assert len(batches) == 4  # 4 records x 2 captions / batch 2
    b = batches[0]
    assert b["video"].dtype == np.uint8 and b["video"].shape == (2, 2, 32, 32, 3)
    assert b["audio"].dtype == np.float32 and b["audio"].shape == (2, 1, 1024, 64)
    assert b["text_ids"].dtype == np.int32 and b["text_ids"].shape == (2, 40)
    assert b["text_mask"].dtype == np.int32 and b["text_mask"].shape == (2, 40)
    for key in ("present_video", "present_audio", "present_text", "valid"):
        assert b[key].dtype == np.bool_ and b[key].all()
    assert b["index"].dtype == np.int32 and b["caption_index"].dtype == np.int32
    assert "label" not in b
    assert b["video"].std() > 5  # real pictures, not blank frames
    # One epoch visits each (record, caption) once.
    pairs = {
        (int(i), int(c))
        for x in batches
        for i, c in zip(x["index"], x["caption_index"], strict=True)
    }
    assert pairs == {(i, c) for i in range(4) for c in range(2)}
    # [CLS] ... [SEP] of the real caption.
    cls_id, sep_id = 101, 102
    row = batches[0]["text_ids"][0]
    n = int(batches[0]["text_mask"][0].sum())
    assert row[0] == cls_id and row[n - 1] == sep_id and not row[n:].any()


def test_decoding_limits_blas_threads_once_per_process(clips):
    """blas_threads: the decoding process's BLAS runs single-threaded after the first sample
    (the resampler's small matmuls under read_threads only contend otherwise)."""
    with pytest.raises(ValueError, match="'blas_threads'"):
        data_config(blas_threads=0)
    config = small_config(clips, modalities=("audio",), num_epochs=1)
    assert config.blas_threads == 1
    next(iter(pipeline.make_train_iterator(config, process_index=0, process_count=1)))
    blas = threadpoolctl.threadpool_info()
    blas = [i for i in blas if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)


def test_restore_mid_epoch_continues_with_the_same_samples(clips):
    # 8 samples, batch 2: 4 steps per epoch; restoring at step 3 crosses into epoch 2.
    config = small_config(clips, num_epochs=2)
    it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    _take(it, 3)
    state = it.get_state()
    expected = _take(it, 3)
    restored = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    restored.set_state(json.loads(json.dumps(state)))  # states survive a JSON round trip
    _assert_batches_equal(expected, _take(restored, 3))
    # The epochs differ in order and in random draws (frames, crops) of the same sample.
    first = _take(pipeline.make_train_iterator(config, process_index=0, process_count=1), 8)
    by_sample = collections.defaultdict(list)
    for b in first:
        for r in range(2):
            by_sample[(int(b["index"][r]), int(b["caption_index"][r]))].append(b["video"][r])
    assert all(len(v) == 2 for v in by_sample.values())
    assert any(not np.array_equal(a, b) for a, b in by_sample.values())


def test_random_draws_do_not_depend_on_the_process_layout(clips):
    config = small_config(clips, modalities=("video",), batch_size=4, num_epochs=1)
    single = next(pipeline.make_train_iterator(config, process_index=0, process_count=1))
    halves = [
        next(pipeline.make_train_iterator(config, process_index=p, process_count=2)) for p in (0, 1)
    ]
    for key in single:
        np.testing.assert_array_equal(single[key], np.concatenate([h[key] for h in halves]))


def test_restore_with_worker_processes(clips):
    config = small_config(clips, modalities=("audio", "text"), num_epochs=2, worker_count=2)
    in_process = small_config(clips, modalities=("audio", "text"), num_epochs=2)
    it = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    head = _take(it, 3)
    state = it.get_state()
    assert state["step"] == 3
    expected = _take(it, 2)
    it.close()
    restored = pipeline.make_train_iterator(config, process_index=0, process_count=1)
    restored.set_state(state)
    got = _take(restored, 2)
    restored.close()
    _assert_batches_equal(expected, got)
    # Workers produce exactly what the in-process pipeline produces.
    _assert_batches_equal(
        head + expected,
        _take(pipeline.make_train_iterator(in_process, process_index=0, process_count=1), 5),
    )
    # The state holds for another worker count and another process count: 2 processes of one
    # row each resume on the same global batches.
    halves = []
    for p in range(2):
        it = pipeline.make_train_iterator(in_process, process_index=p, process_count=2)
        it.set_state(state)
        halves.append(_take(it, 2))
    for step in range(2):
        for key in expected[step]:
            np.testing.assert_array_equal(
                expected[step][key], np.concatenate([h[step][key] for h in halves]), err_msg=key
            )


def test_restore_refuses_a_state_of_another_order(clips):
    it = pipeline.make_train_iterator(small_config(clips, seed=1), process_index=0, process_count=1)
    state = it.get_state()
    other = pipeline.make_train_iterator(
        small_config(clips, seed=2), process_index=0, process_count=1
    )
    with pytest.raises(ValueError, match="seed: saved 1, now 2"):
        other.set_state(state)
    bigger = small_config(clips, batch_size=4)
    with pytest.raises(ValueError, match="global_batch: saved 2, now 4"):
        pipeline.make_train_iterator(bigger, process_index=0, process_count=1).set_state(state)


def test_eval_sees_every_sample_once_padded(clips):
    config = small_config(clips, eval_batch_size=3)
    batches = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    assert len(batches) == 3 == pipeline.num_eval_batches(config, "test")
    valid = np.concatenate([b["valid"] for b in batches])
    assert valid.tolist() == [True] * 8 + [False]
    index = np.concatenate([b["index"] for b in batches])[:8]
    caption = np.concatenate([b["caption_index"] for b in batches])[:8]
    assert list(zip(index.tolist(), caption.tolist(), strict=True)) == [
        (i, c) for i in range(4) for c in range(2)
    ]
    pad = batches[-1]
    assert pad["index"][-1] == -1 and not pad["present_video"][-1] and not pad["video"][-1].any()
    assert not pad["present_audio"][-1] and not pad["text_mask"][-1].any()
    # Evaluation is deterministic: the middle frames, the centre crop, the middle audio slice.
    again = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    _assert_batches_equal(batches, again)


def test_caption_mode_first_and_labels(tmp_path):
    layout = clip_dataset(tmp_path)
    records = json.loads(open(layout["annotations"]["train"]).read())
    for digit, record in enumerate(records):
        record["label"] = digit
    labelled = tmp_path / "labelled.json"
    labelled.write_text(json.dumps(records))
    layout["annotations"] = {"test": str(labelled)}
    config = small_config(layout, modalities=("text",), caption_mode="first", eval_batch_size=4)
    (batch,) = list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))
    assert batch["label"].tolist() == [0, 1, 2, 3] and batch["caption_index"].tolist() == [0] * 4


def test_batch_not_divisible_by_processes_is_an_error(clips):
    with pytest.raises(ValueError, match="batch_size.*not divisible by the process count 2"):
        pipeline.make_train_iterator(
            small_config(clips, batch_size=3), process_index=0, process_count=2
        )


# ---- bad data -----------------------------------------------------------------------------------


def test_missing_and_broken_media_follow_the_policy(clips, tmp_path):
    audio_dir = tmp_path / "audios"
    (audio_dir / "video3.mp3").unlink()  # missing file
    (audio_dir / "video2.mp3").unlink()
    (audio_dir / "video2.mp3").write_bytes(b"")  # zero-length file: fails when decoded
    raising = small_config(clips, modalities=("audio",), eval_batch_size=8)
    with pytest.raises(MediaError, match=r"no audio file .*video3"):
        pipeline.make_eval_iterator(raising, "test", process_index=0, process_count=1)
    skipping = small_config(clips, modalities=("audio",), eval_batch_size=8, bad_data="skip")
    (batch,) = list(pipeline.make_eval_iterator(skipping, "test", process_index=0, process_count=1))
    present = dict(zip(batch["index"].tolist(), batch["present_audio"].tolist(), strict=True))
    assert present == {0: True, 1: False, 2: False, 3: True}
    assert not batch["audio"][~batch["present_audio"]].any()
    assert batch["audio"][batch["present_audio"]].std() > 0.1
    # The audio filter drops records whose audio file is missing (video3) or does not decode
    # (video2's empty file, which the released code kept: it only checks that a file exists);
    # index keeps the file position.
    filtered = small_config(clips, modalities=("text",), eval_batch_size=8, filter_audio=True)
    (batch,) = list(pipeline.make_eval_iterator(filtered, "test", process_index=0, process_count=1))
    assert batch["index"][batch["valid"]].tolist() == [0, 0, 3, 3]
    # 'raise' on a file that exists but does not decode names it when it is read.
    (audio_dir / "video3.mp3").symlink_to(audio_dir / "video4.mp3")
    it = pipeline.make_eval_iterator(raising, "test", process_index=0, process_count=1)
    with pytest.raises(MediaError, match=r"video2\.mp3.*record id 'video2'"):
        next(it)


def test_real_msrvtt_annotations_two_process_eval_shards(reference_data):
    ann = reference_data / "annotations" / "msrvtt" / "descs_ret_test.json"
    config = data_config(
        dataset="msrvtt",
        annotations={"test": str(ann)},
        modalities=("text", "subtitle"),
        caption_mode="first",
        eval_batch_size=128,
    )
    shards = []
    for p in range(2):
        batches = list(
            pipeline.make_eval_iterator(config, "test", process_index=p, process_count=2)
        )
        shards.append(batches)
    assert len(shards[0]) == len(shards[1]) == 8  # ceil(1000 / 128), the last one padded
    index = [np.concatenate([b["index"][b["valid"]] for b in s]) for s in shards]
    assert not set(index[0].tolist()) & set(index[1].tolist())
    assert sorted(np.concatenate(index).tolist()) == list(range(1000))
    subtitles = sum(int(b["present_subtitle"][b["valid"]].sum()) for s in shards for b in s)
    assert subtitles == 762  # the README: 238 of the 1000 subtitles are empty
    assert all(b["present_text"][b["valid"]].all() for s in shards for b in s)
