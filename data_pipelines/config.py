"""Configuration of the input pipelines: one ``ConfigDict`` with a default for every key.

``data_config(**overrides)`` returns the defaults below with ``overrides`` applied (nested keys by
passing a dict, e.g. ``audio=dict(num_clips=2)``). Every key is documented next to its default.
Experiment configs embed the result as ``config.data`` and change keys on it.
"""

from __future__ import annotations

from typing import Any

import ml_collections

#: Modalities the pipeline knows how to produce (the batch contract in docs/contracts.md).
KNOWN_MODALITIES = ("video", "audio", "text", "subtitle")
#: Text-like modalities: tokenized into ``<m>_ids`` / ``<m>_mask``.
TEXT_MODALITIES = ("text", "subtitle")
RESIZE_MODES = ("crop_flip", "resize")
CAPTION_MODES = ("all", "first")
#: data_pipelines.records.REPEATED_ID_MODES (repeated so that reading a config imports nothing).
REPEATED_ID_MODES = ("group", "error")
BAD_DATA_POLICIES = ("raise", "skip")
#: Filterbank implementations (media.audio.FBANK_BACKENDS; repeated here so that reading a config
#: does not import PyAV and kaldi-native-fbank; tests/test_pipeline.py checks they agree).
AUDIO_BACKENDS = ("auto", "kaldi_native", "numpy")
AUDIO_PADDINGS = ("fixed", "reference")
EMPTY_TEXT_POLICIES = ("absent", "encode")
#: Frame transforms (media.video.FRAME_TRANSFORMS; repeated so that reading a config needs no PyAV).
FRAME_TRANSFORMS = ("antialias", "released")


def data_config(**overrides: Any) -> ml_collections.ConfigDict:
    """Returns the data configuration with ``overrides`` applied.

    Raises:
      KeyError: an override names a key that does not exist (typos never pass silently).
      ValueError: a value is outside its documented range (see ``validate_config``).
    """
    c = ml_collections.ConfigDict()
    # Dataset layout name (annotations.load_records(dataset=...)): msrvtt, didemo, activitynet,
    # vatex, audiocaps, youcook, vast, tridigits, ...; None = no layout check (any VAST-style JSON).
    c.dataset = "msrvtt"
    # Annotation JSON per split name; the train iterator reads `train`, evaluation the split it is
    # given. A value may be None for a split the experiment does not use.
    c.annotations = ml_collections.ConfigDict({"train": None, "test": None})
    # Directories holding <id>.<ext> media files (exact id match, never a prefix match).
    c.video_dir = None
    c.audio_dir = None
    # Prefix of audio file stems; None = the dataset layout's (no prefix for every layout). Set
    # 'audio_' for DiDeMo audio extracted under the older VAST naming ``audio_<id>.mp3``.
    c.audio_prefix = None
    # Modalities that the batch carries, a subset of KNOWN_MODALITIES.
    c.modalities = ("video", "audio", "text")
    # Frames per video: train and evaluation (the reference trains some configs on fewer frames).
    c.num_frames = 8
    c.eval_num_frames = None  # None = num_frames
    # Square output side of the frames, pixels.
    c.image_size = 224
    # 'crop_flip': train random-resized-crop + flip, eval short-side resize + centre crop;
    # 'resize': plain resize to image_size x image_size (aspect distorted), the reference's 'none'.
    c.resize = "crop_flip"
    # How frames are cropped and resized (media.video): 'antialias' resizes uint8 frames with PIL's
    # anti-aliased bilinear filter and trains on random 80-100 % squares of the short side;
    # 'released' reproduces the released code (torchvision 0.15 on float tensors): bilinear
    # without anti-aliasing, evaluation resizes the whole frame then centre-crops, training draws
    # RandomResizedCrop(scale 0.8-1, ratio 1) over the full frame's area (the centre short-side
    # square whenever such a square cannot fit, i.e. for aspect ratios of about 1.25 and more).
    c.frame_transform = "antialias"
    c.audio = ml_collections.ConfigDict(
        {
            "mel_bins": 64,  # Kaldi log-mel bins (64 as released GRAM, 128 as BEATs' pre-training)
            "target_length": 1024,  # frames (10 ms) per filterbank slice
            "num_clips": 1,  # slices per sample (2 for DiDeMo and ActivityNet in the reference)
            # (fbank - norm_mean) / (2 * norm_std): the reference's AudioSet statistics.
            "norm_mean": 15.41663,
            "norm_std": 6.55582,
            # 'fixed': pad to the next multiple of target_length; 'reference': the released code's
            # padding, which can add an all-zero slice (media.audio.slice_fbank).
            "padding": "fixed",
            # Filterbank implementation (media.audio.fbank): 'kaldi_native' (kaldi-native-fbank,
            # C++), 'numpy' (the same definition in float64 NumPy), 'auto' (kaldi-native-fbank
            # unless it refuses the setting, e.g. 128 bins at 16 kHz, then NumPy).
            "backend": "auto",
        }
    )
    # Maximum token length (with [CLS]/[SEP]) per text-like modality.
    c.text_max_len = ml_collections.ConfigDict({"text": 40, "subtitle": 70})
    # WordPiece vocabulary of every text-like modality (media.text): one token per line, line
    # number = id. None = bert-base-uncased's, shipped in data_pipelines/vocab (what the
    # reference and the pretrained BERT/MiniLM text towers use). A dataset-specific file (e.g. the
    # one a TriDigits build writes) needs a text tower trained on its ids.
    c.vocab_file = None
    # An empty (or whitespace-only) caption or subtitle string: 'absent' marks the modality missing
    # (present_<m>=False, masked out of the Gram matrix); 'encode' tokenizes it as [CLS][SEP] and
    # keeps it present, as the released code does (MSR-VTT test: 238 of 1000 subtitles are empty).
    c.empty_text_policy = "absent"
    # 'all': one sample per (record, caption); 'first': only caption 0 of each annotation row (a
    # file with one row per caption keeps every row's caption: one sample per row, as released).
    c.caption_mode = "all"
    # Rows that repeat an id: 'group' reads them as one video with the rows' captions (MSR-VTT
    # training files commonly hold one row per caption, 20 per video); 'error' refuses them.
    c.repeated_ids = "group"
    # True keeps only records whose audio file exists (the reference's filter: MSR-VTT 884 of 1000);
    # False keeps the full set and marks missing audio with present_audio=False.
    c.filter_audio = False
    # Classes of a labelled dataset (records with a `label` field: an int, or a list of ints for
    # multi-label sets such as AudioSet, which become bool[C] multi-hot rows); None = 1 + the
    # largest class id in the split. Set it when a split may lack the last classes.
    c.num_classes = None
    # Global batch sizes (all processes together); a process gets batch_size / process_count rows.
    c.batch_size = 32
    c.eval_batch_size = 64
    c.seed = 0
    # Shuffle the training order (a new permutation per epoch, derived from seed and epoch).
    c.shuffle = True
    # Training epochs; None repeats forever (the trainer stops at total_steps).
    c.num_epochs = None
    # Worker processes decoding batches (grain mp_prefetch); 0 decodes in this process.
    c.worker_count = 0
    # Batches each worker keeps ready.
    c.worker_buffer_size = 2
    # Threads decoding samples inside each process (PyAV releases the GIL while decoding).
    c.read_threads = 2
    # Samples read ahead by those threads.
    c.prefetch_buffer_size = 16
    # Threads of numpy's BLAS in a process that decodes (its audio resampling is one small matmul
    # per clip); None leaves BLAS as it is. Parallelism comes from read_threads and workers: a
    # multi-threaded BLAS under them only contends (2 cores: 0.49 instead of 0.92 CPU s per
    # TriDigits batch, bench/tridigits_pipeline.py). Set process-wide, once, by the first sample
    # decoded (transforms.py).
    c.blas_threads = 1
    # What a missing or undecodable media file does: 'raise' stops with an error naming the file;
    # 'skip' fills that modality with zeros, sets present_<m>=False, counts it and logs the id.
    c.bad_data = "raise"
    # Output of `gram-data prepare` (ArrayRecord shards + manifest.json); None = decode the
    # raw media. Training reads either through the same interface.
    c.prepared_dir = None
    for key, value in overrides.items():
        if key not in c:
            raise KeyError(f"data_config: unknown key {key!r}; known keys: {sorted(c.keys())}")
        if key == "annotations":
            # Split names are free-form (train, val, test, test_1k, ...): replace the whole mapping.
            c.annotations = ml_collections.ConfigDict(dict(value))
        elif isinstance(value, dict) and isinstance(c[key], ml_collections.ConfigDict):
            for sub, sub_value in value.items():
                if sub not in c[key]:
                    raise KeyError(f"data_config: unknown key {key}.{sub}; known: {sorted(c[key])}")
                c[key][sub] = sub_value
        else:
            with c.ignore_type():
                c[key] = value
    c.lock()
    validate_config(c)
    return c


def validate_config(c: ml_collections.ConfigDict) -> None:
    """Checks a data config's values; raises ValueError naming the key and what was expected."""
    unknown = [m for m in c.modalities if m not in KNOWN_MODALITIES]
    if unknown or not c.modalities:
        raise ValueError(
            f"data config key 'modalities': expected a non-empty subset of {KNOWN_MODALITIES}, "
            f"got {tuple(c.modalities)}"
        )
    choices = {
        "resize": RESIZE_MODES,
        "frame_transform": FRAME_TRANSFORMS,
        "caption_mode": CAPTION_MODES,
        "repeated_ids": REPEATED_ID_MODES,
        "bad_data": BAD_DATA_POLICIES,
        "empty_text_policy": EMPTY_TEXT_POLICIES,
    }
    for key, allowed in choices.items():
        if c[key] not in allowed:
            raise ValueError(f"data config key {key!r}: expected one of {allowed}, got {c[key]!r}")
    positive = {
        "num_frames": c.num_frames,
        "image_size": c.image_size,
        "batch_size": c.batch_size,
        "eval_batch_size": c.eval_batch_size,
        "audio.mel_bins": c.audio.mel_bins,
        "audio.target_length": c.audio.target_length,
        "audio.num_clips": c.audio.num_clips,
        "read_threads": c.read_threads,
        "prefetch_buffer_size": c.prefetch_buffer_size,
        "worker_buffer_size": c.worker_buffer_size,
    }
    if c.eval_num_frames is not None:
        positive["eval_num_frames"] = c.eval_num_frames
    if c.num_epochs is not None:
        positive["num_epochs"] = c.num_epochs
    for m in TEXT_MODALITIES:
        if m in c.modalities:
            positive[f"text_max_len.{m}"] = c.text_max_len[m]
    for key, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"data config key {key!r}: expected a positive int, got {value!r}")
    if c.blas_threads is not None and (
        not isinstance(c.blas_threads, int)
        or isinstance(c.blas_threads, bool)
        or c.blas_threads < 1
    ):
        raise ValueError(
            f"data config key 'blas_threads': expected None or an int >= 1, got {c.blas_threads!r}"
        )
    if not isinstance(c.worker_count, int) or c.worker_count < 0:
        raise ValueError(
            f"data config key 'worker_count': expected an int >= 0, got {c.worker_count}"
        )
    if not 0 <= c.seed < 2**32:
        raise ValueError(f"data config key 'seed': expected 0 <= seed < 2**32, got {c.seed}")
    audio_choices = {"audio.padding": AUDIO_PADDINGS, "audio.backend": AUDIO_BACKENDS}
    for key, allowed in audio_choices.items():
        value = c.audio[key.split(".")[1]]
        if value not in allowed:
            raise ValueError(f"data config key {key!r}: expected one of {allowed}, got {value!r}")
    if c.num_classes is not None and (
        not isinstance(c.num_classes, int) or isinstance(c.num_classes, bool) or c.num_classes <= 0
    ):
        raise ValueError(
            f"data config key 'num_classes': expected None or a positive int, got {c.num_classes!r}"
        )
    if c.vocab_file is not None and not isinstance(c.vocab_file, str):
        raise ValueError(
            f"data config key 'vocab_file': expected None or the path (str) of a vocab.txt, "
            f"got {c.vocab_file!r}"
        )
    if c.audio_prefix is not None and not isinstance(c.audio_prefix, str):
        raise ValueError(
            f"data config key 'audio_prefix': expected None or a str, got {c.audio_prefix!r}"
        )
    if c.frame_transform == "released" and c.prepared_dir is not None:
        # Prepared shards hold frames already resized by the default transform.
        raise ValueError(
            "data config key 'frame_transform': 'released' resizes while decoding raw media, but "
            f"prepared_dir={c.prepared_dir!r} holds frames resized at prepare time; unset "
            "prepared_dir to decode the raw files"
        )
    if c.audio.norm_std <= 0:
        raise ValueError(f"data config key 'audio.norm_std': expected > 0, got {c.audio.norm_std}")
