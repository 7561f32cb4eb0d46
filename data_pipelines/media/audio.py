"""Audio through PyAV (FFmpeg) -> mono 16 kHz -> Kaldi log-mel filterbank -> 1024-frame slices.

The released code (reference section 4.3) loads with ``librosa.load(sr=None)`` (mean of the
channels), resamples with ``torchaudio.transforms.Resample`` (windowed sinc), multiplies by 2**15,
runs ``torchaudio.compliance.kaldi.fbank(num_mel_bins=64, frame_length=25, frame_shift=10)`` (povey
window, dither 0, preemphasis 0.97, DC removal, log mel with a float-epsilon floor), normalises with
``(fbank - 15.41663) / (2 * 6.55582)`` (BEATs' statistics) and cuts 1024-frame slices.

Here FFmpeg decodes whatever the container really is (two of the real ``.mp3`` fixtures are
MP4/AAC), channels are averaged as librosa does (FFmpeg's own downmix scales stereo by 1/sqrt(2)
per channel instead, which would shift every log-mel value), the resampler is the same
windowed-sinc definition computed in float64 NumPy, and the filterbank comes from
kaldi-native-fbank (its agreement with an independent float64 implementation of the torchaudio
algorithm is in tests/test_media_audio.py).
"""

from __future__ import annotations

import functools
import math
import os

import av
import kaldi_native_fbank as knf
import numpy as np

from data_pipelines.media import MediaError

SAMPLE_RATE = 16000
# BEATs' filterbank statistics as the reference uses them (audio_mapper.py); AST's would be
# -4.2677393 and 4.5689974.
FBANK_MEAN = 15.41663
FBANK_STD = 6.55582
# The reference scales [-1, 1] samples to the int16 range before the Kaldi filterbank.
WAVEFORM_SCALE = 2.0**15
PADDING_MODES = ("fixed", "reference")
# A stream may end a little before its announced duration (encoder delay, edit lists); one that
# ends before this fraction of it is reported as truncated.
_MIN_DECODED_FRACTION = 0.9


def _planar_float(frame: av.AudioFrame, resampler: av.AudioResampler) -> list[np.ndarray]:
    """float32[channels, samples] blocks of one decoded frame, whatever its sample format."""
    return [f.to_ndarray() for f in resampler.resample(frame)]


def _open_audio(path: str):
    """The opened container of ``path`` (use it with ``with``), checked to hold an audio stream.

    Raises MediaError for a missing or empty file, a file FFmpeg cannot open, or no audio stream.
    """
    if not os.path.exists(path):
        raise MediaError(path, "audio file does not exist")
    if os.path.getsize(path) == 0:
        raise MediaError(path, "audio file is empty (0 bytes)")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError(path, f"FFmpeg cannot open the file as a media container ({err})") from err
    if not container.streams.audio:
        kinds = ", ".join(s.type for s in container.streams) or "none"
        container.close()
        raise MediaError(path, f"no audio stream in the container (streams: {kinds})")
    return container


def decode_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float32[channels, samples] in [-1, 1], sample rate) of the first audio stream at ``path``.

    Raises:
      MediaError: missing or empty file, not a media container, no audio stream, a decoder error,
        or no samples at all.
    """
    path = os.fspath(path)
    with _open_audio(path) as container:
        stream = container.streams.audio[0]
        # Seconds the container announces (MP4 headers do; MP3 estimates from the file size).
        announced = float(stream.duration * stream.time_base) if stream.duration else 0.0
        # Planar float keeps every channel apart at the native rate; the downmix and the
        # resampling are done below, as the reference does them.
        resampler = av.AudioResampler(format="fltp")
        blocks: list[np.ndarray] = []
        rate = stream.codec_context.sample_rate
        try:
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                blocks.extend(_planar_float(frame, resampler))
            blocks.extend(f.to_ndarray() for f in resampler.resample(None))
        except av.error.FFmpegError as err:
            raise MediaError(path, f"audio stream fails to decode: {err}") from err
    blocks = [b for b in blocks if b.size]
    if not blocks:
        raise MediaError(path, "audio stream decodes to no samples")
    if not rate or rate <= 0:
        raise MediaError(path, f"audio stream has no valid sample rate (got {rate})")
    wave = np.concatenate(blocks, axis=1).astype(np.float32, copy=False)
    if announced and wave.shape[1] < _MIN_DECODED_FRACTION * announced * rate:
        raise MediaError(
            path,
            f"audio is truncated: the container announces {announced:.2f} s, "
            f"{wave.shape[1] / rate:.2f} s decode",
        )
    return wave, int(rate)


@functools.lru_cache(maxsize=32)
def _sinc_kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float):
    """(width, float64[new, 2 * width + orig] read-only kernel) of ``sinc_resample``; cached: a
    dataset has a handful of rates, and building the kernel costs as much as applying it."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    offsets = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (offsets[None, :] - np.arange(new, dtype=np.float64)[:, None] / new) * base
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    kernel = np.sinc(t) * window * (base / orig)  # np.sinc(x) = sin(pi x) / (pi x)
    kernel.flags.writeable = False
    return width, kernel


def sinc_resample(
    wave: np.ndarray,
    orig_rate: int,
    new_rate: int,
    *,
    lowpass_filter_width: int = 6,
    rolloff: float = 0.99,
) -> np.ndarray:
    """float32[N'] resampled with a Hann-windowed sinc (torchaudio's default resampling definition).

    Both rates are reduced by their gcd to ``orig``/``new``; output sample ``k = m * new + j`` is
    the dot product of input samples ``m * orig + [-w, w + orig)`` with the kernel of phase ``j``,
    where the cutoff is ``min(orig, new) * rolloff``, the sinc is clipped to
    ``lowpass_filter_width`` zero crossings and windowed by ``cos(pi * t / (2 * width)) ** 2``.
    ``N' = ceil(N * new / orig)``. Computed in float64 in blocks to bound memory.
    """
    if int(orig_rate) != orig_rate or int(new_rate) != new_rate or orig_rate <= 0 or new_rate <= 0:
        raise ValueError(f"sample rates must be positive integers, got {orig_rate} -> {new_rate}")
    wave = np.asarray(wave, dtype=np.float64)
    if orig_rate == new_rate:
        return wave.astype(np.float32)
    g = math.gcd(int(orig_rate), int(new_rate))
    orig, new = int(orig_rate) // g, int(new_rate) // g
    width, kernel = _sinc_kernel(orig, new, lowpass_filter_width, rolloff)
    padded = np.pad(wave, (width, width + orig))
    taps = kernel.shape[1]
    num_blocks = (padded.shape[0] - taps) // orig + 1
    out = np.empty((num_blocks, new), dtype=np.float64)
    windows = np.lib.stride_tricks.sliding_window_view(padded, taps)[::orig]
    step = 8192
    for start in range(0, num_blocks, step):
        out[start : start + step] = windows[start : start + step] @ kernel.T
    target = math.ceil(new * wave.shape[0] / orig)
    return out.reshape(-1)[:target].astype(np.float32)


def probe_audio(path: str | os.PathLike) -> None:
    """Raises MediaError unless ``path`` opens, has an audio stream and its first packet decodes.

    A cheap check (one packet) of what training will read: ``filter_audio`` and
    ``gram-data validate --mode probe`` use it, so a file that exists but holds no audio (e.g. a
    video without a sound track used as the audio folder) is not counted as audio.
    """
    path = os.fspath(path)
    with _open_audio(path) as container:
        try:
            for _ in container.decode(container.streams.audio[0]):
                return
        except av.error.FFmpegError as err:
            raise MediaError(path, f"audio stream fails to decode: {err}") from err
    raise MediaError(path, "audio stream decodes to no samples")


def load_waveform(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float32[N] mono waveform in [-1, 1] at ``sample_rate`` Hz.

    Any container/codec FFmpeg reads, whatever the file extension says; any channel count
    (mono .. 5.1 and more) is averaged to mono; any rate is resampled (:func:`sinc_resample`).
    """
    wave, rate = decode_audio(path)
    mono = wave.mean(axis=0, dtype=np.float64)
    return sinc_resample(mono, rate, sample_rate)


def fbank_options(
    mel_bins: int = 64,
    *,
    sample_rate: int = SAMPLE_RATE,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
) -> knf.FbankOptions:
    """kaldi-native-fbank options equal to torchaudio.compliance.kaldi.fbank's defaults + these."""
    opts = knf.FbankOptions()
    frame = opts.frame_opts
    frame.samp_freq = float(sample_rate)
    frame.frame_length_ms = float(frame_length_ms)
    frame.frame_shift_ms = float(frame_shift_ms)
    frame.dither = 0.0  # kaldi-native-fbank defaults to a small dither; torchaudio's fbank to 0
    frame.preemph_coeff = 0.97
    frame.remove_dc_offset = True
    frame.window_type = "povey"
    frame.round_to_power_of_two = True
    frame.snip_edges = True
    mel = opts.mel_opts
    mel.num_bins = int(mel_bins)
    mel.low_freq = 20.0
    mel.high_freq = 0.0  # 0 = Nyquist
    mel.is_librosa = False  # Kaldi's 1127 ln(1 + f / 700) mel scale with triangular bins
    mel.htk_mode = False
    opts.use_energy = False
    opts.use_log_fbank = True
    opts.use_power = True
    return opts


def _mel_banks(mel_bins: int, n_fft: int, sample_rate: int, low_freq: float) -> np.ndarray:
    """float64[mel_bins, n_fft // 2]: Kaldi's triangular filters on the 1127 ln(1 + f/700) scale.

    Filters narrower than one FFT bin come out all zero (their log energy is the floor), which is
    what torchaudio returns; Kaldi and kaldi-native-fbank refuse such settings instead.
    """
    to_mel = lambda f: 1127.0 * np.log1p(np.asarray(f, np.float64) / 700.0)  # noqa: E731
    low, high = to_mel(low_freq), to_mel(sample_rate / 2)
    step = (high - low) / (mel_bins + 1)
    edges = low + step * np.arange(mel_bins + 2)
    fft_mel = to_mel(np.arange(n_fft // 2) * sample_rate / n_fft)[None, :]
    rising = (fft_mel - edges[:-2, None]) / step
    falling = (edges[2:, None] - fft_mel) / step
    return np.clip(np.minimum(rising, falling), 0.0, None)


def _numpy_fbank(wave: np.ndarray, *, mel_bins, sample_rate, window, shift) -> np.ndarray:
    """The same definition as kaldi-native-fbank's, vectorised in float64 (any bin count)."""
    n_fft = 1 << (window - 1).bit_length()
    count = 1 + (wave.shape[0] - window) // shift
    frames = np.lib.stride_tricks.sliding_window_view(wave.astype(np.float64), window)[::shift]
    frames = frames[:count] - frames[:count].mean(axis=1, keepdims=True)
    frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
    frames[:, 0] *= 1 - 0.97  # the first sample is its own predecessor
    povey = np.power(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(window) / (window - 1)), 0.85)
    spectrum = np.fft.rfft(frames * povey, n=n_fft, axis=1)
    power = spectrum.real**2 + spectrum.imag**2
    energies = power[:, : n_fft // 2] @ _mel_banks(mel_bins, n_fft, sample_rate, 20.0).T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps)).astype(np.float32)


FBANK_BACKENDS = ("auto", "kaldi_native", "numpy")


def fbank(
    wave: np.ndarray,
    *,
    mel_bins: int = 64,
    sample_rate: int = SAMPLE_RATE,
    frame_length_ms: float = 25.0,
    frame_shift_ms: float = 10.0,
    waveform_scale: float = WAVEFORM_SCALE,
    backend: str = "auto",
) -> np.ndarray:
    """float32[T, mel_bins] Kaldi log-mel filterbank of a float32[N] waveform in [-1, 1].

    ``T = 1 + (N - window) // shift`` (Kaldi's snip_edges), window = 400 and shift = 160 samples at
    16 kHz. The waveform is multiplied by ``waveform_scale`` (2**15, as the reference does) first.

    ``backend``: ``'kaldi_native'`` (kaldi-native-fbank, C++), ``'numpy'`` (the same definition in
    float64 NumPy), or ``'auto'``: kaldi-native-fbank unless it rejects the setting. It rejects
    mel filters narrower than one FFT bin, e.g. 128 bins at 16 kHz (BEATs' pre-training setting),
    which torchaudio accepts, giving those bins the log floor; the NumPy path does the same.
    Raises ValueError when the waveform is shorter than one window.
    """
    if backend not in FBANK_BACKENDS:
        raise ValueError(f"backend must be one of {FBANK_BACKENDS}, got {backend!r}")
    wave = np.asarray(wave, dtype=np.float32).reshape(-1) * np.float32(waveform_scale)
    window = int(sample_rate * frame_length_ms / 1000)
    shift = int(sample_rate * frame_shift_ms / 1000)
    if wave.shape[0] < window:
        raise ValueError(
            f"waveform has {wave.shape[0]} samples, fewer than one {frame_length_ms} ms window "
            f"({window} samples at {sample_rate} Hz)"
        )
    if backend != "numpy":
        options = fbank_options(
            mel_bins,
            sample_rate=sample_rate,
            frame_length_ms=frame_length_ms,
            frame_shift_ms=frame_shift_ms,
        )
        try:
            computer = knf.OnlineFbank(options)
        except ValueError as err:
            if backend == "kaldi_native":
                # A refused setting, not a bad file: say which one and what works instead.
                raise ValueError(
                    f"kaldi-native-fbank refuses mel_bins={mel_bins} at {sample_rate} Hz ({err}); "
                    "use backend 'numpy' or 'auto' for this setting"
                ) from err
        else:
            computer.accept_waveform(float(sample_rate), wave)
            computer.input_finished()
            rows = [computer.get_frame(i) for i in range(computer.num_frames_ready)]
            return np.stack(rows).astype(np.float32, copy=False)
    return _numpy_fbank(
        wave, mel_bins=mel_bins, sample_rate=sample_rate, window=window, shift=shift
    )


def normalize_fbank(
    features: np.ndarray, *, mean: float = FBANK_MEAN, std: float = FBANK_STD
) -> np.ndarray:
    """float32, same shape: ``(features - mean) / (2 * std)`` (the reference's normalisation)."""
    return ((features - np.float32(mean)) / np.float32(2 * std)).astype(np.float32)


def slice_indices(
    num_slices: int, num_clips: int, *, train: bool, rng: np.random.Generator | None
) -> np.ndarray:
    """int64[num_clips] slice indices: groups of ``np.array_split``; random / middle per group.

    With fewer slices than clips the slices at ``num_clips`` uniform positions are reused (the
    reference pads the audio instead, so a clip can be all padding).
    """
    if num_slices < num_clips:
        positions = (np.arange(num_clips) + 0.5) * num_slices / num_clips
        return np.minimum(positions.astype(np.int64), num_slices - 1)
    groups = np.array_split(np.arange(num_slices), num_clips)
    if train:
        if rng is None:
            raise ValueError("training slice selection needs rng (a numpy Generator)")
        return np.array([g[rng.integers(len(g))] for g in groups], dtype=np.int64)
    return np.array([g[(len(g) + 1) // 2 - 1] for g in groups], dtype=np.int64)


def padding_frames(length: int, *, num_clips: int, target_length: int, mode: str) -> int:
    """Zero frames appended to ``length`` filterbank frames before slicing (int >= 0).

    ``'fixed'``: up to the next multiple of ``target_length`` (a whole slice for empty input).
    ``'reference'``: the released rule ``max(T * n - L, T - L % T)`` with ``T = target_length``,
    ``n = num_clips``: always at least one frame, a whole zero slice when ``L`` is a multiple of
    ``T``, and enough for ``n`` slices, so audio shorter than ``n - 1`` slices yields all-zero ones.
    """
    if mode not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {mode!r}")
    if mode == "reference":
        return max(target_length * num_clips - length, target_length - length % target_length)
    return (-length) % target_length if length > 0 else target_length


def slice_fbank(
    features: np.ndarray,
    *,
    num_clips: int,
    target_length: int = 1024,
    train: bool,
    rng: np.random.Generator | None = None,
    padding: str = "fixed",
) -> np.ndarray:
    """float32[num_clips, target_length, M] slices of normalised features float32[L, M].

    Frames past the end are 0 (padding happens after normalisation, as in the reference).
    ``padding='fixed'``: pad only to the next multiple of ``target_length``, so every slice holds
    audio; audio shorter than ``num_clips`` slices reuses slices. ``padding='reference'``: the
    released code's ``max(T * n - L, T - L % T)`` frames, which appends a whole all-zero slice when
    ``L`` is a multiple of ``T`` (and that slice can be drawn in training); for exact reproduction.
    """
    length, mel_bins = features.shape
    pad = padding_frames(length, num_clips=num_clips, target_length=target_length, mode=padding)
    padded = np.zeros((length + pad, mel_bins), dtype=np.float32)
    padded[:length] = features
    num_slices = padded.shape[0] // target_length
    chosen = slice_indices(num_slices, num_clips, train=train, rng=rng)
    slices = padded[: num_slices * target_length].reshape(num_slices, target_length, mel_bins)
    return slices[chosen]


def load_fbank_slices(
    path: str | os.PathLike,
    *,
    num_clips: int = 1,
    target_length: int = 1024,
    mel_bins: int = 64,
    train: bool,
    rng: np.random.Generator | None = None,
    mean: float = FBANK_MEAN,
    std: float = FBANK_STD,
    padding: str = "fixed",
    backend: str = "auto",
) -> np.ndarray:
    """float32[num_clips, target_length, mel_bins]: normalised log-mel slices of ``path``.

    Decode (:func:`load_waveform`, 16 kHz mono) -> :func:`fbank` -> :func:`normalize_fbank` ->
    :func:`slice_fbank` (random slice per group in training, the middle one in evaluation).
    ``backend`` picks the filterbank implementation (see :func:`fbank`).

    Raises:
      MediaError: as :func:`decode_audio`, or audio shorter than one 25 ms window.
      ValueError: an unknown ``backend``, or ``'kaldi_native'`` with a ``mel_bins`` that
        kaldi-native-fbank refuses (128 at 16 kHz).
    """
    if train and rng is None:
        raise ValueError("load_fbank_slices(train=True) needs rng (a numpy Generator)")
    if backend not in FBANK_BACKENDS:
        raise ValueError(f"backend must be one of {FBANK_BACKENDS}, got {backend!r}")
    wave = load_waveform(path, sample_rate=SAMPLE_RATE)
    window = SAMPLE_RATE * 25 // 1000  # fbank's 25 ms window
    if wave.shape[0] < window:
        # Checked here so that only a property of the file becomes a MediaError (the bad-data
        # policy may skip it); a setting that the backend refuses stays a ValueError.
        raise MediaError(
            path,
            f"audio too short for a filterbank: {wave.shape[0]} samples at {SAMPLE_RATE} Hz, "
            f"fewer than one 25 ms window ({window} samples)",
        )
    features = fbank(wave, mel_bins=mel_bins, sample_rate=SAMPLE_RATE, backend=backend)
    features = normalize_fbank(features, mean=mean, std=std)
    return slice_fbank(
        features,
        num_clips=num_clips,
        target_length=target_length,
        train=train,
        rng=rng,
        padding=padding,
    )
