"""Media as users have it: phone rotation, any or variable frame rate, 10-bit and odd sizes, MP3/AAC
stereo at 48 kHz, and files that cannot be used (clear errors, no output left behind). Every clip
is made here with PyAV."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest
from conftest import BOX

from lipforce_sdk.cli import _video_schedule, run_clip
from lipforce_sdk.media import _matrix_transform, probe, read_audio, read_video, write_wav
from lipforce_sdk.video_source import VideoFrames

BITS = 8  # index-coded frames: bar b is white when bit b of the frame's index is set
SR = 16000


def has_encoder(name: str) -> bool:
    try:
        av.codec.Codec(name, "w")
        return True
    except Exception:
        return False


def encode(path, frames, *, rate=25, pts_ms=None, codec="libx264", pix_fmt="yuv420p", rotate=None,
           keyint=None, audio=None):
    """Write RGB ``frames`` [F, H, W, 3] with PyAV at ``rate`` fps, or at variable rate: ``pts_ms`` [F + 1],
    when each frame starts and the last one ends, in milliseconds. ``rotate``: a display matrix, degrees
    counter-clockwise, as a phone writes it; ``keyint``: frames between keyframes (x264); ``audio``:
    ``(codec, stereo float32 [2, N] at 48 kHz)`` muxed beside."""
    h, w = frames.shape[1:3]
    tb = Fraction(1, 1000) if pts_ms is not None else Fraction(1, rate)
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=rate)
        s.width, s.height, s.pix_fmt = w, h, pix_fmt
        s.codec_context.time_base = tb
        if pts_ms is not None:
            s.time_base = tb
        if rotate is not None:
            s.set_display_rotation(rotate)
        if codec == "libx264" and keyint:
            s.options = {"x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0"}
        elif codec == "libx265":
            s.options = {"x265-params": "log-level=error"}
        if audio is not None:
            mux_audio(c, *audio)
        lasts = {} if pts_ms is None else {int(a): int(b - a) for a, b in zip(pts_ms[:-1], pts_ms[1:])}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            f.pts, f.time_base = (i if pts_ms is None else int(pts_ms[i])), tb
            for p in s.encode(f):
                p.duration = lasts.get(p.pts, p.duration)
                c.mux(p)
        for p in s.encode(None):
            p.duration = lasts.get(p.pts, p.duration)
            c.mux(p)
    return path


def mux_audio(c, codec: str, stereo: np.ndarray, sr: int = 48000) -> None:
    a = c.add_stream(codec, rate=sr)
    a.layout, a.bit_rate = "stereo", 128000
    for i in range(0, stereo.shape[1], 1000):  # chunks unrelated to the codec's frame size
        f = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, i:i + 1000]), format="fltp", layout="stereo")
        f.sample_rate, f.pts, f.time_base = sr, i, Fraction(1, sr)
        for p in a.encode(f):
            c.mux(p)
    for p in a.encode(None):
        c.mux(p)


def coded(n, h=48):
    """Frames that show their index in binary, one 8-pixel bar per bit: [n, h, 8 * BITS, 3] uint8."""
    bits = ((np.arange(n)[:, None] >> np.arange(BITS)) & 1).astype(np.uint8) * 255  # [n, BITS]
    return np.broadcast_to(np.repeat(bits, 8, axis=1)[:, None, :, None], (n, h, 8 * BITS, 3)).copy()


def index_of(frame) -> int:
    bars = frame[4:-4].reshape(frame.shape[0] - 8, BITS, 8, 3)[:, :, 2:6].mean(axis=(0, 2, 3))  # [BITS]
    return int(((bars > 128) << np.arange(BITS)).sum())


def psnr(a, b) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def gradient(n=4, h=48, w=64):
    """Smooth colour ramps (no edges for chroma subsampling to blur): [n, h, w, 3] uint8."""
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([40 + 3 * x, 30 + 3 * y, 200 - 2 * x - y], -1).clip(0, 255).astype(np.uint8)
    return np.stack([img] * n)


# -- rotation ------------------------------------------------------------------------------------

def marked(h=48, w=64):
    """Grey, a white square top-left, a red bar top-right, a blue bar bottom-left: [h, w, 3] uint8."""
    img = np.full((h, w, 3), 40, np.uint8)
    img[:8, :8] = 255
    img[:8, -16:] = (255, 0, 0)
    img[-8:, :16] = (0, 0, 255)
    return img


@pytest.mark.parametrize("deg", [0, 90, 180, 270])
@pytest.mark.parametrize("hflip", [False, True])
def test_display_matrix_gives_the_frame_a_player_shows(deg, hflip):
    """The display matrix FFmpeg writes for a counter-clockwise rotation, mirrored after it
    (av_display_rotation_set(-deg), av_display_matrix_flip), turns the coded frame into np.rot90 of
    it (ffmpeg's own autorotate gives the same for all eight; checked by hand)."""
    r = math.radians(deg)
    m = np.array([math.cos(r), -math.sin(r), 0, math.sin(r), math.cos(r), 0, 0, 0, 0]) * 65536
    if hflip:
        m[[0, 3]] *= -1
    img = marked()
    want = np.rot90(img, deg // 90)[:, ::-1] if hflip else np.rot90(img, deg // 90)
    t = _matrix_transform(np.rint(m).astype(np.int32))
    got = img
    if t is not None:
        transpose, flip_x, flip_y = t
        got = got.transpose(1, 0, 2) if transpose else got
        got = got[:, ::-1] if flip_x else got
        got = got[::-1] if flip_y else got
    assert np.array_equal(got, want), f"rotate {deg}, hflip {hflip}: transform {t}"
    tilted = np.rint(np.array([0.7071, -0.7071, 0, 0.7071, 0.7071, 0, 0, 0, 1]) * 65536)
    assert _matrix_transform(tilted) is None  # 45 degrees: left as coded


@pytest.mark.skipif(not hasattr(av.VideoStream, "set_display_rotation"),
                    reason=f"PyAV {av.__version__} cannot write a display matrix (VideoStream.set_display_rotation)")
@pytest.mark.parametrize("deg", [90, 180, 270])
def test_rotated_phone_clip_decodes_upright(tmp_path, deg):
    img = marked()
    clip = encode(tmp_path / "phone.mp4", np.stack([img] * 6), rotate=deg)
    want = np.rot90(img, deg // 90)  # what a player shows
    info = probe(clip)
    assert (info.height, info.width) == want.shape[:2], f"rotate {deg}: probe says {info.width}x{info.height}"
    frames, _ = read_video(clip)
    bounded = VideoFrames(clip, budget_bytes=1)
    for f in (*frames, bounded.frame(5), bounded.frame(0)):
        assert f.shape == want.shape and psnr(f, want) > 30, \
            f"rotate {deg}: frame {f.shape} is not upright (PSNR {psnr(f, want):.1f} dB)"
    white = {90: np.s_[-8:, :8], 180: np.s_[-8:, -8:], 270: np.s_[:8, -8:]}[deg]  # where a player shows it
    assert frames[0][white].min() > 200, f"rotate {deg}: the white corner is not where a player shows it"


def test_display_matrix_is_read_once_per_decoder(tmp_path, monkeypatch):
    """PyAV keeps every frame whose side data is read (a 1080p decode grew by 0.8 GB in 500
    frames): the rotation is read from a stream's first frame only."""
    from lipforce_sdk import media

    calls = []
    real = media._display_transform
    monkeypatch.setattr(media, "_display_transform", lambda f: calls.append(1) or real(f))
    clip = encode(tmp_path / "phone.mp4", np.stack([marked()] * 12), rotate=90)
    frames, _ = read_video(clip)
    assert len(frames) == 12 and len(calls) <= 2  # probe's first frame and the decoder's


# -- frame rates ---------------------------------------------------------------------------------

def on_screen(starts, end, t) -> int:
    """Reference: the frame on screen at ``t`` (exact seconds) when a clip whose frames start at
    ``starts`` (ending at ``end``) plays forward, then back from its last-but-one frame to its second,
    each frame for its own duration, and again."""
    bounds = [*starts, end]
    shows = [(i, bounds[i + 1] - bounds[i]) for i in (*range(len(starts)), *range(len(starts) - 2, 0, -1))]
    u, at = t % sum(d for _, d in shows), Fraction(0)
    for i, d in shows:
        if at <= u < at + d:
            return i
        at += d
    raise AssertionError(u)


VFR_MS = np.cumsum([0] + [33, 17, 50, 33, 40, 25, 66, 33, 33, 10, 80, 40, 40, 20, 60] * 2)  # 30 frames, 1.16 s


@pytest.mark.parametrize("kind", ["24fps", "30fps", "60fps", "vfr"])
def test_output_frame_k_shows_the_source_frame_on_screen_at_k_over_25(tmp_path, kind):
    """By the decoded frames' own timestamps, in memory and decoded as it goes (seeking back), 3.2 s
    of output from a ~1 s clip: forward, back and forward again."""
    if kind == "vfr":
        starts, end = [Fraction(int(ms), 1000) for ms in VFR_MS[:-1]], Fraction(int(VFR_MS[-1]), 1000)
        clip = encode(tmp_path / "vfr.mp4", coded(len(starts)), pts_ms=VFR_MS, rate=30, keyint=8)
    else:
        rate = int(kind[:2])
        starts, end = [Fraction(i, rate) for i in range(rate)], Fraction(1)
        clip = encode(tmp_path / f"{kind}.mp4", coded(rate), rate=rate, keyint=8)
    for budget in (1 << 30, 6 * 48 * 8 * BITS * 3):  # the whole clip in memory; 6 frames held
        src = VideoFrames(clip, budget_bytes=budget)
        assert len(src) == len(starts) and src.in_memory == (budget > len(starts) * 48 * 8 * BITS * 3)
        order = _video_schedule(len(src), src.fps, 25, 80, times=src.times, end=src.duration)
        if kind == "vfr":  # frame indices at the average rate would show other frames
            assert not np.array_equal(_video_schedule(len(src), src.fps, 25, 80), order)
        for k, (i, f) in enumerate(zip(order, src.frames_in_order(order))):
            want = on_screen(starts, end, Fraction(k, 25))
            assert index_of(f) == i == want, \
                f"{kind}, {budget} B of frames: output {k} ({k / 25:.2f} s) shows frame {index_of(f)} " \
                f"(scheduled {i}); on screen then: {want}"
        src.close()


def test_constant_rate_schedule_is_the_index_schedule():
    """For a constant frame rate the timestamp schedule is the one of frame indices at the average rate."""
    for n, rate in [(2, 25), (7, 24), (150, 25), (171, 30000 / 1001), (60, 60), (31, 12.5)]:
        t = np.arange(n) / rate
        by_time = _video_schedule(n, rate, 25, 1000, times=t + 0.5, end=0.5 + n / rate)
        k = np.floor(np.arange(1000) / 25 * rate + 1e-6).astype(np.int64) % (2 * (n - 1))
        assert np.array_equal(by_time, np.where(k < n, k, 2 * (n - 1) - k)), f"{n} frames at {rate} fps"


# -- 10-bit, odd sizes ---------------------------------------------------------------------------

@pytest.mark.parametrize("codec, pix_fmt", [("libx264", "yuv420p10le"), ("libx264", "yuv422p10le"),
                                            ("libx265", "yuv420p10le")])
def test_ten_bit_clip_decodes_to_8bit_rgb(tmp_path, codec, pix_fmt):
    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    frames = gradient()
    clip = encode(tmp_path / f"{pix_fmt}.mp4", frames, codec=codec, pix_fmt=pix_fmt)
    with av.open(str(clip)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    got, _ = read_video(clip)
    assert got.dtype == np.uint8 and got.shape == frames.shape
    err = np.abs(got.astype(int) - frames).mean()
    assert err < 3 and psnr(got, frames) > 35, f"{codec} {pix_fmt}: mean error {err:.2f}, PSNR {psnr(got, frames):.1f}"


def test_odd_size_rotated_clip_goes_through_run(tiny_engine, tmp_path):
    """A 161x97 clip (4:4:4: H.264 4:2:0 has no odd sizes), shown rotated by 90: decoded 97x161 and
    upright; lipforce run writes it 98x162 (4:2:0 needs even sizes: a row and a column of edge pixels
    added, see media.VideoWriter)."""
    frames = np.stack([marked(97, 161)] * 25)
    clip = encode(tmp_path / "odd.mp4", frames, pix_fmt="yuv444p", rotate=90)
    got, _ = read_video(clip)
    want = np.rot90(frames[0])
    assert got.shape == (25, 161, 97, 3) and psnr(got[0], want) > 35, f"{got.shape}, PSNR {psnr(got[0], want):.1f}"
    wav = tmp_path / "speech.wav"
    write_wav(wav, (0.1 * np.random.default_rng(0).standard_normal(SR * 3 // 25)).astype(np.float32))  # 3 frames
    run_clip(tiny_engine, clip, wav, tmp_path / "out.mp4", box=BOX, progress=False)
    out = probe(tmp_path / "out.mp4")
    assert (out.width, out.height, out.num_frames) == (98, 162, 3)


def test_run_writes_the_same_file_every_time(tiny_engine, tmp_path):
    """The bundled photo clip through lipforce run twice (face mesh, default session): the same bytes.
    Before the writer went without x264's macroblock tree, the same frames gave different files."""
    import os

    from lipforce_sdk import media

    photo = os.path.join(os.path.dirname(media.__file__), "assets", "photo")
    for k in range(2):
        run_clip(tiny_engine, os.path.join(photo, "face.mp4"), os.path.join(photo, "speech.wav"),
                 tmp_path / f"{k}.mp4", progress=False)
    assert (tmp_path / "0.mp4").read_bytes() == (tmp_path / "1.mp4").read_bytes()


# -- audio ---------------------------------------------------------------------------------------

def stereo(seconds=2.0, sr=48000):
    """Left: a 200 -> 3000 Hz sweep; right: a 330 Hz tone, slowly swelling. float32 [2, N]."""
    t = np.arange(int(seconds * sr)) / sr
    left = 0.5 * np.sin(2 * np.pi * (200 * t + 2800 * t * t / (2 * seconds)))
    right = 0.3 * np.sin(2 * np.pi * 330 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t))
    return np.stack([left, right]).astype(np.float32)


AUDIO_FILES = [("mp3", "libmp3lame"), ("m4a", "aac"), ("mp4", "aac")]  # mp4: the sound track of a video


@pytest.mark.parametrize("ext, codec", AUDIO_FILES)
def test_stereo_48k_audio_is_mono_16k_in_time(tmp_path, ext, codec):
    """``read_audio`` against the generated signal's channel mean computed at 16 kHz: within 40 ms of its
    length, shifted by at most 1 ms (the encoder's priming samples are removed: measured 0), level within
    5 % (LAME decodes ~3 % quieter), SNR > 15 dB (the codec's own loss at 128 kbit/s: AAC ~20 dB, MP3
    ~30 dB); and against the file's decoded 48 kHz stereo, mixed and resampled by scipy: SNR > 40 dB
    (~62 dB), i.e. read_audio adds nothing to the codec's loss. SNRs away from the first and last 50 ms."""
    from scipy.signal import resample_poly

    if not has_encoder(codec):
        pytest.skip(f"this PyAV build has no {codec} encoder")
    path = tmp_path / f"speech.{ext}"
    if ext == "mp4":
        encode(path, gradient(50, 32, 32), audio=(codec, stereo()))
    else:
        with av.open(str(path), "w") as c:
            mux_audio(c, codec, stereo())
    got = read_audio(path, SR)
    ref = stereo(sr=SR).mean(axis=0)
    assert abs(len(got) - len(ref)) <= SR // 25, f"{ext}: {len(got)} samples, {len(ref)} expected"
    n = min(len(got), len(ref))
    lags = np.arange(-SR // 25, SR // 25 + 1)
    score = [np.dot(got[max(0, k):n + min(0, k)], ref[max(0, -k):n - max(0, k)]) for k in lags]
    lag = int(lags[int(np.argmax(score))])
    assert abs(lag) <= SR // 1000, f"{ext}: audio shifted by {lag} samples ({lag / SR * 1000:.1f} ms)"
    mid = slice(SR // 20, n - SR // 20)

    def snr(x, r):
        return 10 * np.log10(np.sum(r**2) / np.sum((x - r) ** 2))

    gain = float(np.dot(got[mid], ref[mid]) / np.dot(ref[mid], ref[mid]))
    assert 0.95 < gain < 1.02 and snr(got[mid] / gain, ref[mid]) > 15, \
        f"{ext}: gain {gain:.3f}, SNR {snr(got[mid] / gain, ref[mid]):.1f} dB against the generated signal"
    with av.open(str(path)) as c:
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1).mean(axis=0)  # 48 kHz
    own = resample_poly(decoded.astype(np.float64), 1, 3)[:n]
    assert snr(got[mid], own[mid]) > 40, f"{ext}: SNR {snr(got[mid], own[mid]):.1f} dB against the file's own signal"


# -- errors --------------------------------------------------------------------------------------

@pytest.fixture
def inputs(tmp_path):
    """A silent video, a 1 s WAV, an audio-only M4A, random bytes named .mp4, a video with a broken packet
    in the middle."""
    d = tmp_path / "in"
    d.mkdir()
    encode(d / "silent.mp4", coded(25))
    write_wav(d / "speech.wav", (0.1 * np.random.default_rng(0).standard_normal(SR)).astype(np.float32))
    with av.open(str(d / "speech.m4a"), "w") as c:
        mux_audio(c, "aac", stereo(1.0))
    (d / "garbage.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes())
    noise = np.random.default_rng(2).integers(0, 256, (60, 120, 160, 3), np.uint8)  # 58 kB a frame
    b = bytearray(encode(d / "damaged.mp4", noise).read_bytes())
    with av.open(str(d / "damaged.mp4")) as c:
        pos = [p.pos for p in c.demux(video=0) if p.size][6]
    b[pos:pos + 4] = b"\xff" * 4  # the length of the 7th packet's first NAL unit: far past its end
    (d / "damaged.mp4").write_bytes(bytes(b))
    return d


ERRORS = [  # --video, --audio, what is raised, the message
    ("speech.m4a", "speech.wav", ValueError, r"speech.m4a' has no video stream; pass a video file"),
    ("silent.mp4", "silent.mp4", ValueError, r"silent.mp4' has no audio stream .*pass a WAV file or a video with"),
    ("garbage.mp4", "speech.wav", ValueError, r"could not open .*garbage.mp4' as a media file .*copy/download"),
    ("silent.mp4", "garbage.mp4", ValueError, r"could not open .*garbage.mp4' as a media file"),
    ("damaged.mp4", "speech.wav", ValueError, r"damaged.mp4' is damaged: decoding failed after \d+ frames .*re-encode"),
    ("missing.mp4", "speech.wav", FileNotFoundError, r"missing.mp4' does not exist .*check the path"),
    ("silent.mp4", "missing.wav", FileNotFoundError, r"missing.wav' does not exist"),
    (".", "speech.wav", FileNotFoundError, r"is a folder, not a file"),
]


@pytest.mark.parametrize("video, audio, exc, message", ERRORS, ids=[f"{v}+{a}" for v, a, *_ in ERRORS])
def test_unusable_input_is_a_clear_error_and_leaves_no_output(tiny_engine, tmp_path, inputs, video, audio, exc,
                                                              message):
    """``run_clip`` as ``lipforce run`` calls it; the damaged video is decoded as it goes (1 MB: 18
    frames held), so its error comes mid-run, after the output file was opened and frames pushed."""
    before = sorted(p.name for p in tmp_path.rglob("*"))
    with pytest.raises(exc, match=message):
        run_clip(tiny_engine, inputs / video, inputs / audio, tmp_path / "out.mp4", box=BOX, progress=False,
                 frame_memory_mb=1)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a file was left behind"
