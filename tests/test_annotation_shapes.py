"""The two shapes of a released training file read alike, and the run length counts as released.

Fixtures are derived from real annotations
(``reference_data/annotations/vatex/descs_ret_test.json``: videos with 10 captions and a subtitle
each): the *caption-list* file keeps the first videos as
they are (one row per video, ``desc`` a list of 10), the *repeated-ids* file has one row per
caption (the video id and subtitle repeated on each of its 10 rows), the shape MSR-VTT training
files commonly have. The released dataset trains one sample per row (a list row: its first
caption) and runs ``int(rows // batch * epochs)`` steps.
"""

from __future__ import annotations

import json

import ml_collections
import pytest

from data_pipelines import annotations as ann
from data_pipelines import validate
from data_pipelines.config import data_config
from data_pipelines.pipeline import steps_per_epoch
from gram_jax.config import resolve_run_length

VIDEOS = 6
BATCH = 4
EPOCHS = 2.5


@pytest.fixture
def shapes(reference_data, tmp_path):
    source = reference_data / "annotations" / "vatex" / "descs_ret_test.json"
    videos = json.loads(source.read_text())[:VIDEOS]
    assert all(len(v["desc"]) == 10 and "subtitle" in v for v in videos)
    lists = tmp_path / "caption_lists.json"
    lists.write_text(json.dumps(videos))
    rows = tmp_path / "repeated_ids.json"
    rows.write_text(json.dumps([{**v, "desc": caption} for v in videos for caption in v["desc"]]))
    return lists, rows, videos


def test_both_shapes_give_the_same_videos(shapes):
    lists, rows, videos = shapes
    a = ann.load_records(lists, dataset="vatex")
    b = ann.load_records(rows, dataset="vatex")
    assert [r.id for r in a] == [r.id for r in b] == [v["video_id"] for v in videos]
    assert [r.captions for r in a] == [r.captions for r in b]
    assert [r.subtitle for r in a] == [r.subtitle for r in b]
    assert all(len(r.captions) == 10 for r in b)
    with pytest.raises(ann.AnnotationError, match=r"repeated_ids.json, record 1: duplicate id"):
        ann.load_records(rows, dataset="vatex", repeated_ids="error")


def test_first_caption_is_per_row_as_released(shapes):
    lists, rows, _ = shapes
    first_of_lists = ann.load_records(lists, dataset="vatex", caption_mode="first")
    first_of_rows = ann.load_records(rows, dataset="vatex", caption_mode="first")
    assert [len(r.captions) for r in first_of_lists] == [1] * VIDEOS
    # A row-per-caption file keeps every row's caption: the released dataset trains each row.
    assert [len(r.captions) for r in first_of_rows] == [10] * VIDEOS


def _released_steps(path) -> int:
    """The released count: int(len(rows) // batch_size * epochs) (no audio filter here)."""
    return int(len(json.loads(path.read_text())) // BATCH * EPOCHS)


@pytest.mark.parametrize("shape", ["lists", "rows"])
def test_run_length_counts_as_released(shapes, shape):
    path = shapes[0] if shape == "lists" else shapes[1]
    data = data_config(
        dataset="vatex",
        annotations={"train": str(path)},
        modalities=("text",),
        caption_mode="first",
        batch_size=BATCH,
    )
    config = ml_collections.ConfigDict(dict(num_epochs=EPOCHS, total_steps=1, data=data))
    resolve_run_length(config)
    assert config.total_steps == _released_steps(path)
    assert steps_per_epoch(data) == (VIDEOS if shape == "lists" else 10 * VIDEOS) // BATCH


def test_validate_reports_records_videos_and_captions(shapes, capsys):
    lists, rows, _ = shapes
    assert validate.main(["--annotations", str(lists), str(rows), "--dataset", "vatex"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{lists}: {VIDEOS} records, {VIDEOS} distinct videos, {10 * VIDEOS} captions: no problems",
        f"{rows}: {10 * VIDEOS} records, {VIDEOS} distinct videos, {10 * VIDEOS} captions: "
        "no problems",
    ]
