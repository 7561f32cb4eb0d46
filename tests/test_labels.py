"""Class labels in annotations: single-label ids and multi-label lists (multi-hot rows).

Built on the 4 real reference clips' captions (dog, dog, cat, cat); only the text modality is
decoded, so the test reads no media.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from absl import flags

from data_pipelines import pipeline, samples
from data_pipelines.config import data_config

if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()

CAPTIONS = [
    "A dog is barking",
    "A dog is howling",
    "A red cat is meowing",
    "A black cat is meowing",
]


def _config(tmp_path, labels, **overrides):
    records = [
        {"video_id": f"v{i}", "desc": caption, "label": label}
        for i, (caption, label) in enumerate(zip(CAPTIONS, labels, strict=True))
    ]
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(records))
    kwargs = dict(
        dataset=None, annotations={"test": str(ann)}, modalities=("text",), eval_batch_size=3
    )
    return data_config(**{**kwargs, **overrides})


def _batches(config):
    return list(pipeline.make_eval_iterator(config, "test", process_index=0, process_count=1))


def test_single_label_ids(tmp_path):
    first, second = _batches(_config(tmp_path, [0, 0, 1, 1]))
    assert first["label"].dtype == np.int32
    assert first["label"].tolist() == [0, 0, 1] and second["label"].tolist() == [1, -1, -1]


def test_multi_label_lists_become_multi_hot_rows(tmp_path):
    labels = [[0, 2], [0], [1, 2], [1]]  # dog/cat plus an "animal sound" class 2
    first, second = _batches(_config(tmp_path, labels))
    assert first["label"].dtype == bool and first["label"].shape == (3, 3)
    expected = np.array([[1, 0, 1], [1, 0, 0], [0, 1, 1], [0, 1, 0]], bool)
    np.testing.assert_array_equal(first["label"], expected[:3])
    np.testing.assert_array_equal(second["label"][0], expected[3])
    assert not second["label"][~second["valid"]].any()  # padding rows: all False
    # num_classes widens the rows for classes this split lacks.
    wide, _ = _batches(_config(tmp_path, labels, num_classes=5))
    assert wide["label"].shape == (3, 5) and not wide["label"][:, 3:].any()


def test_bad_labels_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"record 1 .*field 'label': expected a class index"):
        samples.load_split(_config(tmp_path, [0, "dog", 1, 1]), "test")
    with pytest.raises(ValueError, match=r"record 2 .*field 'label'"):
        samples.load_split(_config(tmp_path, [0, 0, [], 1]), "test")
    with pytest.raises(ValueError, match="holds class 3, but data config key 'num_classes' is 2"):
        samples.load_split(_config(tmp_path, [0, 0, 1, 3], num_classes=2), "test")
    with pytest.raises(ValueError, match="num_classes"):
        data_config(num_classes=0)
