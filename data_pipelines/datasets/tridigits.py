"""TriDigits: a real tri-modal (text, video, audio) dataset built offline from Debian packages.

Every record is (a short video of one real handwritten digit d, one real human recording of the
word for d, the written word for d in that recording's language). The digit is the only thing all
three share; language ties speech to text but not to the image. The video motion is synthetic
(``motion: "synthetic"`` in every record); the pixels and the voices are real. See
``tridigits_sources.py`` for the packages and ``tridigits_splits.py`` for the splits.

On-disk layout (the VAST-style layout of the other datasets)::

    <out>/annotations/fold{k}_{split}.json        split: train, test (unseen voices), test_seen,
                                                  train_sample (tridigits_splits.py); records: id,
                                                  desc, label, language, voice, split, fold,
                                                  image_index, audio_source, motion
    <out>/videos/<id>.mp4                         H.264, F frames of S x S RGB
    <out>/audios/<id>.wav                         16-bit PCM, the clip's own rate and channels
    <out>/media/{images,clips}/...                one file per image / clip; the two folders above
                                                  hold hard links to these, one per record id
    <out>/manifest.json                           build options, sha256 of every written file with
                                                  its label, language, voice, split and fold

Command line: ``gram-data build tridigits [--out DIR] [--cache-dir DIR] [--source-dir DIR] ...``
(``build_main``). Default cache: ``$GRAM_JAX_TRIDIGITS_DIR`` or ``~/.cache/gram_jax/tridigits``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import sys
import time

import numpy as np

from data_pipelines.datasets import DatasetLayout
from data_pipelines.datasets import tridigits_media as media
from data_pipelines.datasets import tridigits_sources as sources
from data_pipelines.datasets import tridigits_splits as splits

REFERENCE_MANIFEST = pathlib.Path(__file__).with_name("tridigits_manifest.json")
# 2: TriDigits v2 held-out sets (500 records per fold; seen/unseen voices; a train sample).
FORMAT_VERSION = 2
# Clips last 0.22-1.45 s: one 160-frame (1.6 s) filterbank slice holds any of them whole.
AUDIO_FRAMES = 160
# The longest number word is 7 WordPieces (Belarusian "Дзевяць"); 9 with [CLS] and [SEP].
TEXT_MAX_LEN = 12

LAYOUT = DatasetLayout(
    name="tridigits",
    annotations={
        f"fold{k}_{s}" if k else s: f"fold{k}_{s}.json" for k in range(4) for s in splits.SPLITS
    },
    required_fields=("label", "language", "voice", "split", "fold"),
    max_caption_len=TEXT_MAX_LEN,
    resize="resize",
    reference_requires=(),
)


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What a build depends on; a dataset is rebuilt when any of these changes."""

    seed: int = 0
    folds: int = 4
    images_per_class: int = 500
    test_images_per_class: int = 50
    frames: int = 8
    # 28x28 frames with the 20x20 digit centred: MNIST's own geometry.
    size: int = 28
    fps: int = 8


def data_overrides(
    root: pathlib.Path, fold: int = 0, options: BuildOptions = BuildOptions()
) -> dict:
    """Keyword arguments of ``data_pipelines.config.data_config`` reading fold ``fold`` of a build.

    Frames are read at the built size (no crop: the digit must stay whole), audio as one 1.6 s
    slice, text up to ``TEXT_MAX_LEN`` WordPieces; splits ``splits.SPLITS``.
    """
    if not 0 <= fold < options.folds:
        raise ValueError(f"tridigits: fold must be in [0, {options.folds}), got {fold}")
    root = pathlib.Path(root)
    return dict(
        dataset="tridigits",
        annotations={s: str(annotation_path(root, fold, s)) for s in splits.SPLITS},
        video_dir=str(root / "videos"),
        audio_dir=str(root / "audios"),
        modalities=("video", "audio", "text"),
        num_frames=options.frames,
        image_size=options.size,
        resize="resize",
        audio=dict(mel_bins=64, target_length=AUDIO_FRAMES),
        text_max_len=dict(text=TEXT_MAX_LEN),
        caption_mode="first",
    )


def default_cache_dir() -> pathlib.Path:
    """``$GRAM_JAX_TRIDIGITS_DIR`` or ``~/.cache/gram_jax/tridigits``."""
    env = os.environ.get("GRAM_JAX_TRIDIGITS_DIR")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "gram_jax" / "tridigits"


def annotation_path(root: pathlib.Path, fold: int, split: str) -> pathlib.Path:
    """Path of one fold's annotation file; ``split`` is ``train`` or ``test``."""
    return pathlib.Path(root) / "annotations" / f"fold{fold}_{split}.json"


def _link(src: pathlib.Path, dst: pathlib.Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def source_checksums(source_dir: pathlib.Path, clips: list[sources.SpeechClip]) -> dict[str, str]:
    """{path relative to the source root: sha256} of every source file TriDigits reads."""
    files = [source_dir / sources.DIGITS_PNG]
    files += [source_dir / sources.TUXPAINT_MATH / f"{d}.txt" for d in range(10)]
    files += [c.path for c in clips]
    return {str(f.relative_to(source_dir)): sources.sha256_file(f) for f in sorted(files)}


def verify_sources(checksums: dict[str, str], reference: pathlib.Path = REFERENCE_MANIFEST) -> None:
    """Compare source checksums with the committed manifest; raise naming every differing file."""
    expected = json.loads(reference.read_text())["sources"]
    problems = [f"missing {k}" for k in expected if k not in checksums]
    problems += [f"unexpected {k}" for k in checksums if k not in expected]
    problems += [
        f"{k}: sha256 {checksums[k]} != expected {v}"
        for k, v in expected.items()
        if k in checksums and checksums[k] != v
    ]
    if problems:
        raise ValueError(
            f"TriDigits sources differ from {reference} ({len(problems)} problems; other package "
            "versions?): " + "; ".join(problems[:10]) + ". Pass --no-verify to build anyway."
        )


def _write_json(path: pathlib.Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _record(pair: splits.Pair, fold: int, words, source_dir: pathlib.Path) -> dict:
    clip = pair.clip
    return {
        "id": pair.record_id,
        "desc": sources.word_for(words, clip.label, clip.language),
        "label": clip.label,
        "language": clip.language,
        "voice": clip.voice,
        "split": pair.split,
        "fold": fold,
        "image_index": pair.image_index,
        "audio_source": str(clip.path.relative_to(source_dir)),
        "motion": "synthetic",
    }


def build(
    out: pathlib.Path,
    options: BuildOptions = BuildOptions(),
    *,
    cache_dir: pathlib.Path | None = None,
    source_dir: pathlib.Path | None = None,
    verify: bool = True,
    log=print,
) -> dict:
    """Build TriDigits into ``out`` (replacing what is there); returns the written manifest.

    Args:
      out: output root (layout in the module docstring).
      options: splits, sizes and seed.
      cache_dir: where .debs are downloaded and unpacked (default ``default_cache_dir()``).
      source_dir: an already unpacked root holding ``usr/share/...``; skips apt entirely.
      verify: check source sha256s against the committed ``tridigits_manifest.json``.
    """
    start = time.time()
    out = pathlib.Path(out)
    if source_dir is None:
        source_dir = sources.fetch_sources(pathlib.Path(cache_dir or default_cache_dir()))
    source_dir = pathlib.Path(source_dir)
    images, image_labels = sources.load_digit_images(source_dir)
    words = sources.load_number_words(source_dir)
    clips = sources.find_speech_clips(source_dir)
    checksums = source_checksums(source_dir, clips)
    if verify:
        verify_sources(checksums)
    log(
        f"tridigits: {len(images)} images, {len(clips)} clips "
        f"(sources read in {time.time() - start:.1f} s)"
    )

    image_split = splits.split_images(
        image_labels, options.images_per_class, options.test_images_per_class, options.seed
    )
    voice_fold = splits.assign_voice_folds(clips, options.folds, options.seed)
    folds = {
        k: splits.fold_pairs(k, image_split, image_labels, clips, voice_fold, options.seed)
        for k in range(options.folds)
    }

    if out.exists():
        shutil.rmtree(out)
    for sub in ("annotations", "videos", "audios", "media/images", "media/clips"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    items = {"videos": {}, "audios": {}}
    split_of_image = {int(i): s for s, idx in image_split.items() for i in idx}
    for image in sorted(split_of_image):
        rng = np.random.default_rng([options.seed, 4, image])
        poses = media.motion_path(rng, options.frames, options.size)
        path = out / "media" / "images" / f"img{image:04d}.mp4"
        media.write_mp4(path, media.animate_digit(images[image], poses, options.size), options.fps)
        items["videos"][path.relative_to(out).as_posix()] = {
            "sha256": sources.sha256_file(path),
            "label": int(image_labels[image]),
            "image_index": image,
            "split": split_of_image[image],
        }
    log(f"tridigits: {len(split_of_image)} videos written ({time.time() - start:.1f} s)")
    for clip in clips:
        samples, rate = media.decode_clip(clip.path, clip.container)
        path = out / "media" / "clips" / f"{clip.voice}_{clip.label}.wav"
        media.write_wav(path, samples, rate)
        fold = voice_fold[clip.voice]
        items["audios"][path.relative_to(out).as_posix()] = {
            "sha256": sources.sha256_file(path),
            "label": clip.label,
            "language": clip.language,
            "voice": clip.voice,
            "fold": fold,
            "split": "train" if fold == splits.ALWAYS_TRAIN else f"test in fold {fold}",
            "source": str(clip.path.relative_to(source_dir)),
            "sample_rate": rate,
            "channels": int(samples.shape[1]),
        }
    log(f"tridigits: {len(clips)} clips converted ({time.time() - start:.1f} s)")

    annotations = {}
    for k, pairs in folds.items():
        for split, fold_list in pairs.items():
            records = []
            for pair in fold_list:
                rid = pair.record_id
                video = out / "videos" / f"{rid}.mp4"
                if not video.exists():
                    _link(out / "media" / "images" / f"img{pair.image_index:04d}.mp4", video)
                    _link(
                        out / "media" / "clips" / f"{pair.clip.voice}_{pair.clip.label}.wav",
                        out / "audios" / f"{rid}.wav",
                    )
                records.append(_record(pair, k, words, source_dir))
            path = annotation_path(out, k, split)
            _write_json(path, records)
            annotations[path.relative_to(out).as_posix()] = {
                "sha256": sources.sha256_file(path),
                "records": len(records),
            }
    manifest = {
        "dataset": "tridigits",
        "format_version": FORMAT_VERSION,
        "options": dataclasses.asdict(options),
        "note": "real digit images with synthetic motion; real speech; Tux Paint number words",
        "sources": checksums,
        # One sha256 per 20x20 cell (its raw uint8 bytes): the per-item checksum of the images.
        "image_sha256": [hashlib.sha256(cell.tobytes()).hexdigest() for cell in images],
        "image_split": {s: [int(i) for i in idx] for s, idx in image_split.items()},
        "voice_fold": dict(sorted(voice_fold.items())),
        "annotations": annotations,
        **items,
        "seconds": round(time.time() - start, 1),
    }
    _write_json(out / "manifest.json", manifest)  # written last: its presence marks a whole build
    log(f"tridigits: built {out} in {manifest['seconds']} s")
    return manifest


def is_built(out: pathlib.Path, options: BuildOptions = BuildOptions()) -> bool:
    """True when ``out`` holds a complete build with these options."""
    path = pathlib.Path(out) / "manifest.json"
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text())
    return manifest.get("format_version") == FORMAT_VERSION and manifest.get(
        "options"
    ) == dataclasses.asdict(options)


def default_out_dir(options: BuildOptions = BuildOptions()) -> pathlib.Path:
    """``<cache>/dataset`` for the default options, ``<cache>/dataset-<hash>`` for others."""
    if options == BuildOptions():
        return default_cache_dir() / "dataset"
    key = json.dumps(dataclasses.asdict(options), sort_keys=True).encode()
    return default_cache_dir() / f"dataset-{hashlib.sha256(key).hexdigest()[:10]}"


def ensure_built(
    out: pathlib.Path | None = None, options: BuildOptions = BuildOptions(), **kwargs
) -> pathlib.Path:
    """Build TriDigits into ``out`` (default ``default_out_dir``) unless it is already there."""
    out = pathlib.Path(out) if out else default_out_dir(options)
    if not is_built(out, options):
        build(out, options, **kwargs)
    return out


def reference_manifest(manifest: dict) -> dict:
    """The committed subset of a default build's manifest: sources, splits, per-item metadata.

    Encoded media bytes depend on the FFmpeg build, so the committed file holds the sha256 of the
    sources (and of each image cell) rather than of the written MP4/WAV files.
    """
    return {
        "dataset": "tridigits",
        "packages": sorted(sources.PACKAGES),
        "options": manifest["options"],
        "sources": manifest["sources"],
        "image_sha256": manifest["image_sha256"],
        "image_labels": [i // 500 for i in range(len(manifest["image_sha256"]))],
        "image_split": manifest["image_split"],
        "voice_fold": manifest["voice_fold"],
        "clips": sorted(
            (
                {k: v[k] for k in ("source", "label", "language", "voice", "fold", "split")}
                for v in manifest["audios"].values()
            ),
            key=lambda c: c["source"],
        ),
    }


def _one_item_per_line(obj: dict) -> str:
    """JSON with one entry of each large list or mapping per line: readable diffs, small file."""
    lines = []
    for key, value in obj.items():
        if isinstance(value, dict) and len(value) > 8:
            inner = [
                f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in value.items()
            ]
            lines.append(f" {json.dumps(key)}: {{\n" + ",\n".join(inner) + "\n }")
        elif isinstance(value, list) and len(value) > 8 and not isinstance(value[0], int):
            inner = [f"  {json.dumps(v, ensure_ascii=False)}" for v in value]
            lines.append(f" {json.dumps(key)}: [\n" + ",\n".join(inner) + "\n ]")
        else:
            lines.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(lines) + "\n}\n"


def build_main(argv: list[str] | None = None) -> int:
    """``gram-data build tridigits`` entry point; ``argv`` excludes the program and dataset name."""
    parser = argparse.ArgumentParser(
        prog="gram-data build tridigits", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--out", type=pathlib.Path, help="output root (default <cache-dir>/dataset)"
    )
    parser.add_argument(
        "--cache-dir",
        type=pathlib.Path,
        help="where .debs go (default $GRAM_JAX_TRIDIGITS_DIR or ~/.cache/gram_jax/tridigits)",
    )
    parser.add_argument(
        "--source-dir", type=pathlib.Path, help="an unpacked root holding usr/share/...; skips apt"
    )
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="accept sources whose sha256 differs from the manifest",
    )
    parser.add_argument(
        "--force", action="store_true", help="rebuild even when a matching build exists"
    )
    parser.add_argument(
        "--write-reference-manifest",
        type=pathlib.Path,
        help="also write the committed manifest here",
    )
    defaults = BuildOptions()
    for field in dataclasses.fields(BuildOptions):
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", type=int, default=getattr(defaults, field.name)
        )
    args = parser.parse_args(argv)
    options = BuildOptions(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildOptions)}
    )
    cache = args.cache_dir or default_cache_dir()
    out = args.out or (cache / default_out_dir(options).name)
    if args.force or not is_built(out, options):
        build(out, options, cache_dir=cache, source_dir=args.source_dir, verify=not args.no_verify)
    else:
        print(f"tridigits: {out} is already built with these options (--force rebuilds)")
    if args.write_reference_manifest:
        manifest = json.loads((out / "manifest.json").read_text())
        text = _one_item_per_line(reference_manifest(manifest))
        args.write_reference_manifest.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(build_main(sys.argv[1:]))
