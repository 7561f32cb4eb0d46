"""TriDigits: a real tri-modal (text, video, audio) dataset built offline from Debian packages.

Every record is (a short video of one real handwritten digit d, one real human recording of the
word for d, the written word for d in that recording's language). The digit is the only thing all
three share; language ties speech to text but not to the image. The video motion is synthetic
(``motion: "synthetic"`` in every record); the pixels and the voices are real. Modules:
``sources`` (the packages), ``splits`` (folds and pairs), ``media`` (MP4/WAV writers),
``captions`` (the caption variant's texts), ``layout`` (layout, options, config overrides),
``build`` (the builder and ``gram-data build tridigits``), ``verify`` (the sources' content against
the committed ``manifest.json``, on Debian or Ubuntu).

On-disk layout (the VAST-style layout of the other datasets)::

    <out>/annotations/fold{k}_{split}.json        split: train, test (unseen voices), test_seen,
                                                  train_sample (splits.py); records: id, desc,
                                                  label, language, voice, split, fold,
                                                  image_index, audio_source, motion; a caption
                                                  build (``text="caption"``, captions.py) also
                                                  ``word``, its desc being the word + motion
    <out>/videos/<id>.mp4                         H.264, F frames of S x S RGB
    <out>/audios/<id>.wav                         16-bit PCM, the clip's own rate and channels
    <out>/media/{images,clips}/...                one file per image / clip; the two folders above
                                                  hold hard links to these, one per record id
    <out>/manifest.json                           build options, sha256 of every written file with
                                                  its label, language, voice, split and fold

Command line: ``gram-data build tridigits [--out DIR] [--cache-dir DIR] [--source-dir DIR] ...``
(``build_main``). Default cache: ``$GRAM_JAX_TRIDIGITS_DIR`` or ``~/.cache/gram_jax/tridigits``.
"""

from data_pipelines.datasets.tridigits.build import (
    FORMAT_VERSION,
    build,
    build_main,
    default_out_dir,
    ensure_built,
    is_built,
    reference_manifest,
    source_checksums,
)
from data_pipelines.datasets.tridigits.layout import (
    AUDIO_FRAMES,
    DEFAULT_OPTIONS,
    LAYOUT,
    TEXT_MAX_LEN,
    BuildOptions,
    annotation_path,
    data_overrides,
    default_cache_dir,
)
from data_pipelines.datasets.tridigits.verify import (
    REFERENCE_MANIFEST,
    source_content,
    verify_content,
)

__all__ = [
    "AUDIO_FRAMES",
    "DEFAULT_OPTIONS",
    "FORMAT_VERSION",
    "LAYOUT",
    "REFERENCE_MANIFEST",
    "TEXT_MAX_LEN",
    "BuildOptions",
    "annotation_path",
    "build",
    "build_main",
    "data_overrides",
    "default_cache_dir",
    "default_out_dir",
    "ensure_built",
    "is_built",
    "reference_manifest",
    "source_checksums",
    "source_content",
    "verify_content",
]
