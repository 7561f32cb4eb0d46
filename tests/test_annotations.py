"""Annotations (every real file), dataset layouts, protocol switches and exact media lookup."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from data_pipelines import annotations as ann
from data_pipelines.datasets import LAYOUT_NAMES, DatasetLayout, didemo, get_layout, msrvtt
from data_pipelines.media import MediaError, find_media, media_index

# file -> (records, captions with caption_mode='all'), from the fixtures' README.
REAL_FILES = {
    "msrvtt/descs_ret_test.json": (1000, 1000),
    "msrvtt/unique_descs_ret_train.json": (9000, 9000),
    "msrvtt/descs_ret_test_audcap_with_audio_captions.json": (1000, 1000),
    "didemo/descs_ret_train.json": (8363, 8363),
    "didemo/descs_ret_test.json": (1003, 1003),
    "activitynet/descs_ret_train.json": (10009, 10009),
    "activitynet/descs_ret_test.json": (4917, 4917),
    "vatex/descs_ret_test.json": (1500, 15000),
    "audiocaps/descs_ret_test.json": (729, 3645),
    "youcook/descs_cap_test.json": (3216, 3216),
}


@pytest.mark.parametrize("name", sorted(REAL_FILES))
def test_every_real_annotation_file(reference_data, name):
    dataset = name.split("/")[0]
    path = reference_data / "annotations" / name
    records = ann.load_records(path, dataset=dataset)
    num_records, num_captions = REAL_FILES[name]
    assert len(records) == num_records
    assert sum(len(r.captions) for r in records) == num_captions
    assert len(ann.caption_pairs(records)) == num_captions
    first = ann.load_records(path, dataset=dataset, caption_mode="first")
    assert all(len(r.captions) == 1 for r in first)
    assert [r.captions[0] for r in first] == [r.captions[0] for r in records]
    raw = json.loads(path.read_text())
    assert [r.id for r in records] == [x["video_id"] for x in raw]
    assert all(isinstance(c, str) and c.strip() for r in records for c in r.captions)
    assert all(
        (r.subtitle is None) == ("subtitle" not in x) for r, x in zip(records, raw, strict=True)
    )


def test_real_field_details(reference_data):
    root = reference_data / "annotations"
    test = ann.load_records(root / "msrvtt/descs_ret_test.json", dataset="msrvtt")
    assert test[0].id == "video9770" and test[0].captions == (
        "a person is connecting something to system",
    )
    assert sum(r.subtitle == "" for r in test) == 238  # empty subtitles are kept, not dropped
    vatex = ann.load_records(root / "vatex/descs_ret_test.json", dataset="vatex")
    assert sum(r.subtitle == "" for r in vatex) == 730
    audio = ann.load_records(root / "msrvtt/descs_ret_test_audcap_with_audio_captions.json")
    assert sum("audio_caption" in r.extra for r in audio) == 884


def test_reference_audio_filter_keeps_884_of_1000(reference_data):
    root = reference_data / "annotations" / "msrvtt"
    records = ann.load_records(root / "descs_ret_test.json", dataset="msrvtt")
    with_audio = msrvtt.reference_audio_ids(root)
    kept, dropped = ann.filter_by_media(records, {"audio": with_audio})
    assert len(kept) == 884 and len(dropped["audio"]) == 116
    assert [r.id for r in kept] == [r.id for r in records if r.id in with_audio]  # order kept
    full, none = ann.filter_by_media(records, {})
    assert len(full) == 1000 and none == {}


def test_didemo_corrupted_list(reference_data):
    ids = didemo.corrupted_ids(reference_data / "annotations" / "didemo")
    assert len(ids) == 3 and "18126407@N00_2819653811_28523093f2" in ids


def _write(tmp_path, data, name="a.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_id_and_caption_precedence(tmp_path):
    path = _write(
        tmp_path,
        [
            {"id": "c", "clip_id": "a", "video_id": "b", "caption": "x", "desc": "first"},
            {"image": 17, "vast_cap": ["v1", "v2"], "subtitle": "s", "begin_s": 3.5},
            {"image_id": "i", "id": "j", "caption": ["c1"], "vast_cap": "ignored"},
        ],
    )
    records = ann.load_records(path)
    assert [r.id for r in records] == ["a", "17", "i"]
    assert records[0].captions == ("first",)
    assert records[1].captions == ("v1", "v2") and records[1].subtitle == "s"
    assert records[1].extra == {"begin_s": 3.5}
    assert records[2].captions == ("c1",) and records[2].extra == {"id": "j", "vast_cap": "ignored"}
    assert records[0].subtitle is None


@pytest.mark.parametrize(
    "content, pattern",
    [
        ("[{", r"a\.json: invalid JSON at line 1, column 3"),
        ({"video_id": "a"}, "expected a JSON list of records, got dict"),
        (["x"], "record 0: expected a JSON object, got str"),
        ([{"desc": "x"}], "record 0: no id field: expected one of clip_id, video_id"),
        ([{"video_id": ["a"], "desc": "x"}], "record 0, field 'video_id': expected a string"),
        ([{"video_id": "a"}], "record 0: no caption field"),
        ([{"video_id": "a", "desc": []}], "record 0, field 'desc': expected a caption string"),
        ([{"video_id": "a", "desc": ["ok", 3]}], r"field 'desc\[1\]': expected a string caption"),
        ([{"video_id": "a", "desc": "  "}], "field 'desc': the caption is empty"),
        ([{"video_id": "a", "desc": "x", "subtitle": 1}], "field 'subtitle': expected a string"),
        (
            [{"video_id": "a", "desc": "x", "subtitle": "s"}, {"video_id": "a", "desc": "y"}],
            "record 1, field 'subtitle': id 'a' repeats record 0 with another subtitle",
        ),
    ],
)
def test_bad_annotations_name_file_record_and_field(tmp_path, content, pattern):
    path = _write(tmp_path, content)
    with pytest.raises(ann.AnnotationError, match=pattern) as info:
        ann.load_records(path)
    assert str(path) in str(info.value)


def test_errors_pickle_with_their_fields():
    err = pickle.loads(pickle.dumps(ann.AnnotationError("f.json", "bad", index=3, field="desc")))
    assert (err.path, err.index, err.field) == ("f.json", 3, "desc")
    assert str(err) == "f.json, record 3, field 'desc': bad"
    media_err = pickle.loads(pickle.dumps(MediaError("v.mp4", "no video stream")))
    assert (media_err.path, media_err.reason) == ("v.mp4", "no video stream")


def test_other_load_errors(tmp_path, reference_data):
    with pytest.raises(ann.AnnotationError, match="does not exist"):
        ann.load_records(tmp_path / "absent.json")
    # A VATEX file read with the AudioCaps layout fails on the layout's required field.
    vatex = reference_data / "annotations" / "vatex" / "descs_ret_test.json"
    with pytest.raises(ann.AnnotationError, match="record 0, field 'caption': missing"):
        ann.load_records(vatex, dataset="audiocaps")
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        ann.load_records(vatex, dataset="nope")
    with pytest.raises(ValueError, match="caption_mode"):
        ann.load_records(vatex, caption_mode="some")
    no_caps = _write(tmp_path, [{"video_id": "a"}])
    assert ann.load_records(no_caps, require_captions=False)[0].captions == ()
    dup = _write(tmp_path, [{"video_id": "a", "desc": "x"}] * 2, "dup.json")
    assert [r.captions for r in ann.load_records(dup)] == [("x", "x")]
    with pytest.raises(ann.AnnotationError, match=r"dup.json, record 1: duplicate id 'a'"):
        ann.load_records(dup, repeated_ids="error")


def test_layouts_are_complete():
    for name in LAYOUT_NAMES:
        layout = get_layout(name)
        assert isinstance(layout, DatasetLayout) and layout.name == name
        assert layout.resize in ("crop_flip", "resize")
        assert layout.protocol("reference")["caption_mode"] == "first"
        assert layout.protocol("standard") == {"caption_mode": "all", "require": ()}
    assert get_layout("didemo").max_caption_len == 70 == get_layout("activitynet").max_caption_len
    assert get_layout("msrvtt").max_caption_len == 40 and get_layout("msrvtt").train_frames == 4
    assert get_layout("didemo").audio_clips == 2 and get_layout("vast").train_frames == 2
    with pytest.raises(KeyError, match="no split 'val'"):
        get_layout("msrvtt").annotation_path("/x", "val")


def _touch(directory, *names):
    directory.mkdir(exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def test_find_media_is_exact(tmp_path):
    videos = tmp_path / "videos"
    _touch(videos, "video10.mp4", "video11.mp4", "video1_extra.mp4", "video100.mkv")
    # The reference's prefix match would load video10.mp4 for video1.
    assert find_media(videos, "video1", (".mp4", ".mkv")) is None
    assert find_media(videos, "video10", (".mp4",)) == videos / "video10.mp4"
    _touch(videos, "video1.mkv", "video1.mp4")
    # The index sees files added later (directory mtime) and honours the extension order.
    assert find_media(videos, "video1", (".mp4", ".mkv")) == videos / "video1.mp4"
    assert find_media(videos, "video1", ("mkv", ".mp4")) == videos / "video1.mkv"
    assert find_media(videos, "video100", (".mp4",)) is None
    assert len(media_index(videos)) == 5  # stems
    with pytest.raises(MediaError, match="does not exist"):
        find_media(tmp_path / "absent", "video1", (".mp4",))


def test_layout_media_naming(tmp_path):
    audio = tmp_path / "audio"
    _touch(audio, "audio_vid1.mp3", "vid1.mp3", "GOD8Bt5LfDE_100.wav")
    # DiDeMo audio is <id>.mp3 as released; the older upstream name through audio_prefix.
    assert get_layout("didemo").find("vid1", "audio", audio) == audio / "vid1.mp3"
    older = get_layout("didemo", audio_prefix="audio_")
    assert older.find("vid1", "audio", audio) == audio / "audio_vid1.mp3"
    assert get_layout("msrvtt").find("vid1", "audio", audio) == audio / "vid1.mp3"
    found = get_layout("audiocaps").find("GOD8Bt5LfDE_100.000_110.000", "audio", audio)
    assert found == audio / "GOD8Bt5LfDE_100.wav"
    ids = get_layout("didemo").available_ids(["vid1", "vid2"], "audio", audio)
    assert ids == {"vid1"}
    assert os.path.basename(get_layout("didemo").stem("x", "video")) == "x"
