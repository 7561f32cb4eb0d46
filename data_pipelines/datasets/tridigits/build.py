"""Builds TriDigits from its sources into a folder (layout in the package docstring).

A build is written into a private sibling folder and renamed into place whole
(``data_pipelines.atomic_dir``): a reader sees a complete build or none, a killed build leaves no
half-written dataset under the final name, and two concurrent builders both succeed.
Command line: ``gram-data build tridigits`` (``build_main``).
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

from data_pipelines.atomic_dir import publish_dir, staging_dir
from data_pipelines.datasets.tridigits import captions, media, sources, splits
from data_pipelines.datasets.tridigits import vocab as tridigits_vocab
from data_pipelines.datasets.tridigits.layout import (
    DEFAULT_OPTIONS,
    TEXTS,
    BuildOptions,
    annotation_path,
    default_cache_dir,
)
from data_pipelines.datasets.tridigits.verify import (
    committed_words,
    source_content,
    verify_content,
)

# 2: TriDigits v2 held-out sets (500 records per fold; seen/unseen voices; a train sample).
FORMAT_VERSION = 2


def _link(src: pathlib.Path, dst: pathlib.Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # a file system without hard links
        shutil.copyfile(src, dst)


def source_checksums(source_dir: pathlib.Path, clips: list[sources.SpeechClip]) -> dict[str, str]:
    """{path relative to the source root: sha256} of every source file TriDigits reads.

    Recorded in a build's manifest; the build is verified on content (``verify.py``) instead,
    since the word files' and the image sheet's bytes may differ between package versions."""
    files = [source_dir / sources.DIGITS_PNG]
    files += [source_dir / sources.TUXPAINT_MATH / f"{d}.txt" for d in range(10)]
    files += [c.path for c in clips]
    return {str(f.relative_to(source_dir)): sources.sha256_file(f) for f in sorted(files)}


def _write_json(path: pathlib.Path, obj) -> None:
    # Only ever called inside a private staging folder, so a plain write is safe.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _record(
    pair: splits.Pair, fold: int, words: dict[str, str], source_dir: pathlib.Path, options, poses
) -> dict:
    """One annotation record; ``poses``: float[F, 4] of the pair's image (its motion path)."""
    clip = pair.clip
    word = words[f"{clip.label}/{clip.language}"]
    text = {"desc": word}
    if options.text == "caption":
        # The word stays beside the caption: it is what a recording alone fixes (evaluation).
        text = {"desc": captions.caption(word, poses), "word": word}
    return {
        "id": pair.record_id,
        **text,
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
    options: BuildOptions = DEFAULT_OPTIONS,
    *,
    cache_dir: pathlib.Path | None = None,
    source_dir: pathlib.Path | None = None,
    verify: bool = True,
    keep_complete: bool = False,
    log=print,
) -> dict:
    """Build TriDigits into ``out`` (replacing what is there); returns the written manifest.

    The files are written into a private folder beside ``out`` and renamed into place whole.

    Args:
      out: output root (layout in the package docstring).
      options: splits, sizes and seed.
      cache_dir: where .debs are downloaded and unpacked (default ``default_cache_dir()``).
      source_dir: an already unpacked root holding ``usr/share/...``; skips apt entirely.
      verify: check the content read from the sources (image pixels, clip files, the words used)
        against the committed ``manifest.json`` and write the committed words (``verify.py``).
      keep_complete: if another process finished a build with the same options at ``out`` while
        this one ran, keep that one (ours is discarded) instead of replacing it.
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
    content = source_content(images, words, clips, source_dir)
    if verify:
        differing = verify_content(content)
        if differing:
            log(
                f"tridigits: {len(differing)} number words of the package differ from the "
                f"committed ones; the committed words are used: {'; '.join(differing)}"
            )
        content["words"] = committed_words()
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

    # Everything below writes into the private folder `out`; `final` receives it whole.
    final, out = out, staging_dir(out)
    try:
        for sub in ("annotations", "videos", "audios", "media/images", "media/clips"):
            (out / sub).mkdir(parents=True, exist_ok=True)

        items = {"videos": {}, "audios": {}}
        split_of_image = {int(i): s for s, idx in image_split.items() for i in idx}
        poses_of = {}
        for image in sorted(split_of_image):
            rng = np.random.default_rng([options.seed, 4, image])
            poses = poses_of[image] = media.motion_path(rng, options.frames, options.size)
            path = out / "media" / "images" / f"img{image:04d}.mp4"
            media.write_mp4(
                path, media.animate_digit(images[image], poses, options.size), options.fps
            )
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
                    poses = poses_of[pair.image_index]
                    records.append(_record(pair, k, content["words"], source_dir, options, poses))
                path = annotation_path(out, k, split)
                _write_json(path, records)
                annotations[path.relative_to(out).as_posix()] = {
                    "sha256": sources.sha256_file(path),
                    "records": len(records),
                }
        vocab_file = tridigits_vocab.write_vocab(out)
        manifest = {
            "dataset": "tridigits",
            "format_version": FORMAT_VERSION,
            "options": dataclasses.asdict(options),
            "note": "real digit images with synthetic motion; real speech; Tux Paint number words",
            "sources": checksums,
            # One sha256 per 20x20 cell (its raw uint8 bytes): the per-item checksum of the images.
            "image_sha256": content["image_sha256"],
            "words": content["words"],
            "image_split": {s: [int(i) for i in idx] for s, idx in image_split.items()},
            "voice_fold": dict(sorted(voice_fold.items())),
            "annotations": annotations,
            "vocab": {
                "path": vocab_file.relative_to(out).as_posix(),
                "sha256": sources.sha256_file(vocab_file),
                "tokens": sum(1 for _ in vocab_file.open(encoding="utf-8")),
            },
            **items,
            "seconds": round(time.time() - start, 1),
        }
        # Written last: its presence marks a whole build.
        _write_json(out / "manifest.json", manifest)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    complete = (lambda path: is_built(path, options)) if keep_complete else (lambda _: False)
    if publish_dir(out, final, is_complete=complete):
        log(f"tridigits: built {final} in {manifest['seconds']} s")
    else:
        log(f"tridigits: {final} was built meanwhile by another process; kept that build")
    return manifest


def is_built(out: pathlib.Path, options: BuildOptions = DEFAULT_OPTIONS) -> bool:
    """True when ``out`` holds a complete build with these options."""
    path = pathlib.Path(out) / "manifest.json"
    if not path.is_file():
        return False
    manifest = json.loads(path.read_text())
    return manifest.get("format_version") == FORMAT_VERSION and manifest.get(
        "options"
    ) == dataclasses.asdict(options)


def default_out_dir(options: BuildOptions = DEFAULT_OPTIONS) -> pathlib.Path:
    """``<cache>/dataset`` for the default options, ``<cache>/dataset-<hash>`` for others."""
    if options == DEFAULT_OPTIONS:
        return default_cache_dir() / "dataset"
    key = json.dumps(dataclasses.asdict(options), sort_keys=True).encode()
    return default_cache_dir() / f"dataset-{hashlib.sha256(key).hexdigest()[:10]}"


def ensure_built(
    out: pathlib.Path | None = None, options: BuildOptions = DEFAULT_OPTIONS, **kwargs
) -> pathlib.Path:
    """Build TriDigits into ``out`` (default ``default_out_dir``) unless it is already there."""
    out = pathlib.Path(out) if out else default_out_dir(options)
    if not is_built(out, options):
        build(out, options, keep_complete=True, **kwargs)
    elif not tridigits_vocab.vocab_path(out).is_file():
        # A build from before the vocabulary existed: its texts are the same, derive it from them.
        tridigits_vocab.write_vocab(out)
    return out


def reference_manifest(manifest: dict) -> dict:
    """The committed subset of a default build's manifest: sources, splits, per-item metadata.

    Encoded media bytes depend on the FFmpeg build, so the committed file holds what is read from
    the sources (each image cell's sha256, each clip file's sha256, the words used: ``verify.py``)
    rather than the sha256 of the written MP4/WAV files.
    """
    clips = sorted(
        (
            {k: v[k] for k in ("source", "label", "language", "voice", "fold", "split")}
            for v in manifest["audios"].values()
        ),
        key=lambda c: c["source"],
    )
    return {
        "dataset": "tridigits",
        "packages": sorted(sources.PACKAGES),
        "options": manifest["options"],
        "clip_sha256": {c["source"]: manifest["sources"][c["source"]] for c in clips},
        "words": manifest["words"],
        "image_sha256": manifest["image_sha256"],
        "image_labels": [i // 500 for i in range(len(manifest["image_sha256"]))],
        "image_split": manifest["image_split"],
        "voice_fold": manifest["voice_fold"],
        "clips": clips,
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
        kind = dict(choices=TEXTS, type=str) if field.name == "text" else dict(type=int)
        parser.add_argument(
            f"--{field.name.replace('_', '-')}", default=getattr(defaults, field.name), **kind
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
