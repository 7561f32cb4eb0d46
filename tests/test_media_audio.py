"""Audio: decoding any container, downmix, resampling, Kaldi filterbank parity, slicing.

Filterbank parity: :func:`kaldi_fbank_float64` is an independent float64 NumPy implementation of
the ``torchaudio.compliance.kaldi.fbank`` algorithm, written from its documented definition. It is
compared with kaldi-native-fbank on the soundtracks of all 8 real streams (4 audio files and 4
videos, 16 kHz, waveform times 2**15 as in the reference; 6,428 frames; values from -15.9 to 27.2).
Max |difference| measured: 1.2e-3 (23 bins), 5.3e-3 (64 bins), 7.7e-3 (80 bins); at 64 bins the
99.9th percentile is 1.4e-3 and the mean is 1e-5. The largest differences are in low-energy bins
(log value near 2) and come from kaldi-native-fbank's float32 FFT. kaldi-native-fbank rejects 128
bins at 16 kHz, which torchaudio accepts; there the library's float64 NumPy backend is used. It
matches the reference to 9.5e-7, the float32 rounding of its output.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from media_fixtures import sine, write_audio, write_index_video

from data_pipelines.media import MediaError, audio

pytestmark = pytest.mark.media

# (file, seconds) from the fixtures' README; audio1/3 are MP4/AAC named .mp3, audio2/4 real MP3.
REAL_AUDIO = {
    "audios/audio1.mp3": 4.4,
    "audios/audio2.mp3": 14.7,
    "audios/audio3.mp3": 5.9,
    "audios/audio4.mp3": 6.7,
    "videos/video1.mp4": 4.4,
    "videos/video2.mp4": 14.8,
    "videos/video3.mp4": 5.8,
    "videos/video4.mp4": 6.7,
}


def kaldi_fbank_float64(
    wave: np.ndarray, *, mel_bins: int, rate: int = 16000, low_freq: float = 20.0
) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank defaults (snip_edges, dither 0, povey), in float64."""
    window_size, shift = int(rate * 0.025), int(rate * 0.010)
    n_fft = 1 << (window_size - 1).bit_length()  # round_to_power_of_two
    num_frames = 1 + (len(wave) - window_size) // shift
    starts = np.arange(num_frames)[:, None] * shift
    frames = np.asarray(wave, np.float64)[starts + np.arange(window_size)[None, :]]
    frames = frames - frames.mean(axis=1, keepdims=True)  # remove_dc_offset
    # Preemphasis 0.97 with the first sample of each frame as its own predecessor.
    previous = np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    frames = frames - 0.97 * previous
    n = np.arange(window_size)
    povey = (0.5 - 0.5 * np.cos(2 * np.pi * n / (window_size - 1))) ** 0.85
    frames = frames * povey
    padded = np.zeros((num_frames, n_fft))
    padded[:, :window_size] = frames
    power = np.abs(np.fft.rfft(padded, axis=1)) ** 2  # use_power
    # Triangular mel bins on Kaldi's mel scale 1127 ln(1 + f / 700), up to Nyquist.
    mel = lambda f: 1127.0 * np.log(1.0 + np.asarray(f, np.float64) / 700.0)  # noqa: E731
    mel_low, mel_high = mel(low_freq), mel(rate / 2)
    delta = (mel_high - mel_low) / (mel_bins + 1)
    bin_mel = mel(np.arange(n_fft // 2) * rate / n_fft)
    left = mel_low + np.arange(mel_bins)[:, None] * delta
    center, right = left + delta, left + 2 * delta
    up = (bin_mel[None, :] - left) / (center - left)
    down = (right - bin_mel[None, :]) / (right - center)
    banks = np.maximum(0.0, np.minimum(up, down))  # [mel_bins, n_fft // 2]; Nyquist bin unused
    energies = power[:, : n_fft // 2] @ banks.T
    return np.log(np.maximum(energies, np.finfo(np.float32).eps))


@pytest.fixture(scope="module")
def real_waves(reference_data):
    return {
        name: audio.load_waveform(reference_data / "media" / name) for name in sorted(REAL_AUDIO)
    }


def test_real_files_decode_whatever_the_extension(real_waves):
    for name, seconds in REAL_AUDIO.items():
        wave = real_waves[name]
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert abs(len(wave) / audio.SAMPLE_RATE - seconds) < 0.1, name
        assert 0.01 < np.abs(wave).max() <= 1.1
    # The soundtrack of video1 and the MP4/AAC "audio1.mp3" are the same recording.
    a, v = real_waves["audios/audio1.mp3"], real_waves["videos/video1.mp4"]
    n = min(len(a), len(v))
    best = max(np.corrcoef(a[s : s + n - 800], v[: n - 800])[0, 1] for s in range(0, 800, 8))
    assert best > 0.9


@pytest.mark.parametrize("mel_bins", [23, 64, 80])
def test_kaldi_native_fbank_matches_independent_float64_kaldi(real_waves, mel_bins):
    worst = 0.0
    for name, wave in real_waves.items():
        ours = audio.fbank(wave, mel_bins=mel_bins, backend="kaldi_native")
        ref = kaldi_fbank_float64(wave.astype(np.float64) * 2.0**15, mel_bins=mel_bins)
        assert ours.shape == ref.shape == (1 + (len(wave) - 400) // 160, mel_bins), name
        assert ours.dtype == np.float32
        worst = max(worst, float(np.abs(ours - ref).max()))
    assert worst < 1e-2  # measured 1.2e-3 / 5.3e-3 / 7.7e-3, see the module docstring


@pytest.mark.parametrize("mel_bins", [64, 128])
def test_numpy_backend_matches_independent_float64_kaldi(real_waves, mel_bins):
    for wave in real_waves.values():
        ref = kaldi_fbank_float64(wave.astype(np.float64) * 2.0**15, mel_bins=mel_bins)
        ours = audio.fbank(wave, mel_bins=mel_bins, backend="numpy")
        np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    if mel_bins == 128:
        with pytest.raises(ValueError):
            audio.fbank(wave, mel_bins=128, backend="kaldi_native")
        np.testing.assert_array_equal(audio.fbank(wave, mel_bins=128), ours)  # auto falls back


@pytest.mark.parametrize("mel_bins", [64, 128])
def test_fbank_matches_torchaudio_when_installed(real_waves, mel_bins):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")  # GPU machines have torchaudio
    torch = pytest.importorskip("torch")
    for wave in real_waves.values():
        theirs = kaldi.fbank(
            torch.from_numpy(wave * 2.0**15)[None],
            num_mel_bins=mel_bins,
            sample_frequency=16000,
            frame_length=25,
            frame_shift=10,
        ).numpy()
        np.testing.assert_allclose(audio.fbank(wave, mel_bins=mel_bins), theirs, atol=1e-2)


def test_resampler_matches_torchaudio_when_installed():
    functional = pytest.importorskip("torchaudio.functional")
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal(44100).astype(np.float32)
    theirs = functional.resample(torch.from_numpy(x)[None], 44100, 16000).numpy()[0]
    np.testing.assert_allclose(audio.sinc_resample(x, 44100, 16000), theirs, atol=1e-5)


@pytest.mark.parametrize("orig", [8000, 11025, 22050, 44100, 48000])
def test_sinc_resample_keeps_a_tone(orig):
    x = sine(1000, 1.0, orig)
    y = audio.sinc_resample(x, orig, 16000)
    assert len(y) == math.ceil(len(x) * 16000 / orig)
    expected = sine(1000, len(y) / 16000, 16000)[: len(y)]
    # Away from the edges (the filter sees zeros there) the tone survives to 1e-3.
    assert np.abs(y - expected)[200:-200].max() < 2e-3
    np.testing.assert_array_equal(audio.sinc_resample(x, orig, orig), x)
    with pytest.raises(ValueError, match="positive integers"):
        audio.sinc_resample(x, 0, 16000)


def test_downmix_and_resample_of_real_formats(tmp_path):
    # 5.1 (six distinct tones) as lossless PCM: the mono signal is their mean, as librosa does.
    tones = np.stack([sine(200 * (k + 1), 1.0, 48000, 0.1) for k in range(6)])
    wav51 = write_audio(tmp_path / "six.wav", tones, rate=48000, codec="pcm_s16le", layout="5.1")
    decoded, rate = audio.decode_audio(wav51)
    assert decoded.shape == (6, 48000) and rate == 48000
    mono = audio.load_waveform(wav51)
    expected = audio.sinc_resample(tones.mean(axis=0), 48000, 16000)
    np.testing.assert_allclose(mono, expected, atol=2e-4)
    # 5.1 AAC in MP4 (a real encoder's output, with its priming delay): decodes to 6 channels.
    aac51 = write_audio(tmp_path / "six.m4a", tones, rate=48000, codec="aac", layout="5.1")
    assert audio.decode_audio(aac51)[0].shape[0] == 6
    assert abs(len(audio.load_waveform(aac51)) - 16000) < 1200
    # 8 kHz mono PCM is upsampled; the tone keeps its frequency.
    wav8 = write_audio(
        tmp_path / "m8.wav",
        sine(1000, 0.5, 8000)[None],
        rate=8000,
        codec="pcm_s16le",
        layout="mono",
    )
    up = audio.load_waveform(wav8)
    assert len(up) == 8000
    assert np.argmax(np.abs(np.fft.rfft(up))) * 16000 / len(up) == pytest.approx(1000, abs=4)
    # Stereo MP3 at 44.1 kHz saved under a .wav name: sniffed by FFmpeg, not by the name.
    mp3 = write_audio(
        tmp_path / "stereo.wav",
        np.stack([sine(300, 1.0, 44100)] * 2),
        rate=44100,
        codec="libmp3lame",
        layout="stereo",
        container_format="mp3",
    )
    assert abs(len(audio.load_waveform(mp3)) - 16000) < 1200


def test_broken_audio_raises_media_error(tmp_path, reference_data):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(MediaError, match="empty"):
        audio.load_waveform(empty)
    with pytest.raises(MediaError, match="does not exist"):
        audio.load_waveform(tmp_path / "absent.wav")
    silent_video = write_index_video(tmp_path / "silent.mp4", 10)
    with pytest.raises(MediaError, match="no audio stream"):
        audio.load_fbank_slices(silent_video, train=False)
    garbage = tmp_path / "noise.mp3"
    garbage.write_bytes(np.random.default_rng(1).bytes(2048))
    with pytest.raises(MediaError) as info:
        audio.load_waveform(garbage)
    assert str(garbage) in str(info.value)
    tiny = write_audio(
        tmp_path / "tiny.wav",
        sine(440, 0.01, 16000)[None],
        rate=16000,
        codec="pcm_s16le",
        layout="mono",
    )
    with pytest.raises(MediaError, match="too short"):
        audio.load_fbank_slices(tiny, train=False)
    # A truncated real MP3: its header announces 14.74 s, half of that decodes.
    src = (reference_data / "media" / "audios" / "audio2.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(src[: len(src) // 2])
    with pytest.raises(MediaError, match="truncated: the container announces 14.74 s"):
        audio.load_waveform(cut)


def test_slices_fixed_padding_never_adds_an_all_zero_slice():
    feats = np.random.default_rng(0).standard_normal((2048, 8)).astype(np.float32) + 5
    fixed = audio.slice_fbank(feats, num_clips=1, train=False, target_length=1024)
    np.testing.assert_array_equal(fixed[0], feats[:1024])  # middle of 2 slices = the first
    for seed in range(20):
        drawn = audio.slice_fbank(
            feats, num_clips=1, train=True, rng=np.random.default_rng(seed), target_length=1024
        )
        assert np.abs(drawn).min() > 0  # never the padding
    # The reference pads a whole extra zero slice when L is a multiple of T, and draws it.
    ref = [
        audio.slice_fbank(
            feats,
            num_clips=1,
            train=True,
            rng=np.random.default_rng(seed),
            target_length=1024,
            padding="reference",
        )
        for seed in range(20)
    ]
    assert any(not s.any() for s in ref)


def test_slices_groups_middle_and_short_audio():
    length = 5 * 100 + 30  # 6 slices of 100 frames, the last one mostly padding
    feats = np.arange(length, dtype=np.float32)[:, None].repeat(4, axis=1) + 1
    out = audio.slice_fbank(feats, num_clips=2, train=False, target_length=100)
    # groups [0, 1, 2], [3, 4, 5] -> middles 1 and 4 (seg[(len + 1) // 2 - 1])
    assert out.shape == (2, 100, 4) and out[0, 0, 0] == 101 and out[1, 0, 0] == 401
    last = audio.slice_fbank(feats[:530], num_clips=6, train=False, target_length=100)[5]
    assert last[29, 0] == 530 and not last[30:].any()
    # Shorter than num_clips slices: real slices are reused, none is all padding.
    short = audio.slice_fbank(feats[:150], num_clips=4, train=False, target_length=100)
    assert [int(s[0, 0]) for s in short] == [1, 1, 101, 101]
    with pytest.raises(ValueError, match="padding"):
        audio.slice_fbank(feats, num_clips=1, train=False, padding="zeros")


@pytest.mark.parametrize("clips,mel_bins", [(1, 64), (2, 128)])
def test_load_fbank_slices_on_real_clips(reference_data, clips, mel_bins):
    path = reference_data / "media" / "audios" / "audio2.mp3"  # 14.7 s: two slices of 1024
    out = audio.load_fbank_slices(path, num_clips=clips, mel_bins=mel_bins, train=False)
    assert out.shape == (clips, 1024, mel_bins) and out.dtype == np.float32
    raw = audio.fbank(audio.load_waveform(path), mel_bins=mel_bins)
    np.testing.assert_allclose(out[0], (raw[:1024] - 15.41663) / (2 * 6.55582), rtol=1e-5)
    custom = audio.load_fbank_slices(
        path, num_clips=clips, mel_bins=mel_bins, train=False, mean=0.0, std=0.5
    )
    np.testing.assert_allclose(custom[0], raw[:1024], rtol=1e-5, atol=1e-5)
    train = audio.load_fbank_slices(
        path, num_clips=clips, mel_bins=mel_bins, train=True, rng=np.random.default_rng(0)
    )
    assert train.shape == out.shape
    with pytest.raises(ValueError, match="rng"):
        audio.load_fbank_slices(path, train=True)
