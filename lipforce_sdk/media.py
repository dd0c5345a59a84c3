"""Video and audio file I/O for lipforce (PyAV, no torch).

Conventions used throughout the SDK:

- video frames are RGB ``uint8`` arrays ``[H, W, 3]``; a clip is ``[F, H, W, 3]``;
- audio is mono ``float32`` in ``[-1, 1]`` at a given sample rate (16 kHz inside the model);
- audio and video share one clock from 0: frame ``i`` covers ``[i / fps, (i + 1) / fps)``.

Decoded frames come out as a player shows them: a display matrix (phone clips: rotate
90/180/270, possibly mirrored) is applied, and ``probe`` reports the displayed size. Any pixel
format FFmpeg decodes (10-bit 4:2:0/4:2:2 included) is converted to 8-bit RGB.

Written files are MP4: H.264 (``libx264``, or ``mpeg4`` where the PyAV build has no x264)
in ``yuv420p`` plus, optionally, one mono AAC audio stream; both streams start at 0.
``yuv420p`` needs an even width and height: frames of odd size are padded by one row and/or
column (edge pixels repeated) to the next even size, so the file is at most one pixel
larger than the frames given. ``VideoWriter.padded_size`` says when this happened.

Written files are repeatable: the same frames give the same bytes, run after run. libx264's
macroblock tree is off for that (``mbtree=0``): with it on (x264's default) and B-frames, this
build's bitstream for the same frames changed from one encode to the next (a face clip of 150
frames: 6 different files in 6 encodes), and decoded pixels moved by up to 30-38 levels. Off, at
crf 17 instead of 18, the encoder's PSNR stays within 0.5 dB of before at 10-30 % more bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterable, Iterator

import av
import numpy as np

__all__ = [
    "MediaInfo",
    "probe",
    "read_video",
    "iter_video_frames",
    "read_audio",
    "write_video",
    "write_wav",
    "VideoWriter",
    "default_video_codec",
]

@dataclass(frozen=True)
class MediaInfo:
    """What a media file holds (from the container headers and the first video frame).

    ``width``/``height`` are as displayed (after the display matrix: a portrait phone clip
    stored landscape reports its portrait size); ``num_frames`` is the count the container
    declares (0 when it does not say); ``duration_s`` is the longest stream duration in
    seconds (0.0 when unknown).
    """

    path: str
    width: int
    height: int
    fps: float
    num_frames: int
    duration_s: float
    has_video: bool
    has_audio: bool
    audio_sample_rate: int  # 0 when there is no audio stream
    audio_channels: int  # 0 when there is no audio stream


def _check_exists(path: str | os.PathLike) -> str:
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileNotFoundError(f"media path {path!r} is a folder, not a file; pass a file in it")
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"media file {path!r} does not exist (cwd: {os.getcwd()!r}); "
            "check the path, or use lipforce_sdk's bundled sample under "
            "lipforce_sdk/assets/sample/"
        )
    return path


def _open(path: str) -> "av.container.InputContainer":
    try:
        return av.open(path)
    except av.error.FFmpegError as e:  # not a media file, truncated, unknown format
        raise ValueError(
            f"could not open {path!r} as a media file ({e}): it is not audio or video FFmpeg "
            "can read, or it is damaged or cut short; pass an audio/video file (e.g. .mp4, "
            ".mov, .mkv, .wav, .mp3, .m4a), or copy/download it again"
        ) from e


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _no_video(path: str) -> ValueError:
    return ValueError(
        f"{path!r} has no video stream; pass a video file with a face as --video / video "
        "(for audio alone use read_audio)"
    )


def _display_transform(frame: "av.VideoFrame") -> tuple[bool, bool, bool] | None:
    """``(transpose, flip_x, flip_y)`` that shows ``frame`` upright, from its display matrix."""
    side = frame.side_data
    for item in side:
        sd = item if hasattr(item, "type") else side[item]  # PyAV < 19 iterates the side data, 19 its types
        if getattr(sd.type, "name", str(sd.type)).endswith("DISPLAYMATRIX"):
            return _matrix_transform(np.frombuffer(bytes(sd), "<i4"))
    return None


def _matrix_transform(m: np.ndarray) -> tuple[bool, bool, bool] | None:
    """``(transpose, flip_x, flip_y)`` for an FFmpeg display matrix (9 int32: 3x3, row-major,
    16.16 fixed point; a player shows coded pixel ``(x, y)`` at ``(a*x + c*y, b*x + d*y)``
    with ``a, b, c, d = m[0], m[1], m[3], m[4]``). ``None``: nothing to do, or a rotation that
    is not a multiple of 90 degrees (left as coded)."""
    abcd = np.asarray(m, np.float64)[[0, 1, 3, 4]] / 65536.0
    a, b, c, d = q = np.rint(abcd)
    axes = a != 0 and d != 0 and b == c == 0
    swapped = b != 0 and c != 0 and a == d == 0
    if np.abs(abcd - q).max() > 0.01 or not (axes or swapped):
        return None
    if swapped:  # rotated by 90 or 270: x' = c*y, y' = b*x
        t = (True, bool(c < 0), bool(b < 0))
    else:
        t = (False, bool(a < 0), bool(d < 0))
    return t if any(t) else None


def _upright(img: np.ndarray, t: tuple[bool, bool, bool] | None) -> np.ndarray:
    if t is None:
        return img
    transpose, flip_x, flip_y = t
    if transpose:
        img = img.transpose(1, 0, 2)
    if flip_x:
        img = img[:, ::-1]
    if flip_y:
        img = img[::-1]
    return np.ascontiguousarray(img)


_UNSET = object()


class _VideoDecoder:
    """The first video stream of ``path``, decoded to upright RGB frames with their
    presentation timestamps (``pts``, in the stream's time base); ``seek`` goes back or forward to a
    keyframe. Decoding errors become a ``ValueError`` naming the file."""

    def __init__(self, path: str):
        self.path = path
        self._c = _open(path)
        if not self._c.streams.video:
            self._c.close()
            raise _no_video(path)
        self.stream = self._c.streams.video[0]
        self.stream.thread_type = "AUTO"
        self.decoded = 0
        self._turn = _UNSET  # the display matrix's transform, from the first frame

    def frames(self) -> Iterator[tuple[int | None, np.ndarray]]:
        """``(pts, RGB uint8 [H, W, 3])`` from the current position to the end."""
        it = self._c.decode(self.stream)
        while True:
            try:
                frame = next(it, None)
            except av.error.FFmpegError as e:
                raise ValueError(
                    f"{self.path!r} is damaged: decoding failed after {self.decoded} frames "
                    f"({e}); copy or download it again, or re-encode it (e.g. ffmpeg -i IN "
                    "-c:v libx264 OUT.mp4)"
                ) from e
            if frame is None:
                return
            self.decoded += 1
            img = frame.to_ndarray(format="rgb24")
            if self._turn is _UNSET:  # read once: PyAV keeps every frame whose side data is read
                self._turn = _display_transform(frame)
            yield frame.pts, _upright(img, self._turn)

    def seek(self, pts: int) -> None:
        """Go to the last keyframe at or before ``pts``; the next ``frames()`` start there."""
        self._c.seek(int(pts), stream=self.stream, backward=True, any_frame=False)

    def close(self) -> None:
        self._c.close()


@dataclass(frozen=True)
class _VideoTimeline:
    """Presentation timestamps of a video stream's frames, read from its packets (no decoding).

    ``pts``: int64 ``[F]``, ascending, in ``time_base``; ``keyframe``: bool ``[F]``; ``end``:
    where the last frame ends (its pts plus its duration).
    """

    pts: np.ndarray
    keyframe: np.ndarray
    end: int
    time_base: Fraction

    @property
    def times(self) -> np.ndarray:
        """Seconds from the first frame, float64 ``[F]``."""
        return (self.pts - self.pts[0]) * float(self.time_base)

    @property
    def duration_s(self) -> float:
        return float((self.end - self.pts[0]) * self.time_base)


def _scan_video(path: str) -> "_VideoTimeline | None":
    """One demux pass over the first video stream. ``None`` when the packets do not carry
    distinct timestamps (the caller then numbers frames in decoding order), or hold none."""
    with _open(path) as c:
        if not c.streams.video:
            raise _no_video(path)
        s = c.streams.video[0]
        pts, key, dur = [], [], []
        try:
            for p in c.demux(s):
                if p.size == 0 or getattr(p, "is_discard", False):
                    continue
                if p.pts is None:
                    return None
                pts.append(p.pts)
                key.append(p.is_keyframe)
                dur.append(p.duration or 0)
        except av.error.FFmpegError:
            pass  # cut short: the caller compares the count with the container's
        time_base, rate = s.time_base, _stream_fps(s)  # read while the container is open
        if not pts or time_base is None:
            return None
    pts_a = np.asarray(pts, np.int64)
    order = np.argsort(pts_a, kind="stable")
    pts_a = pts_a[order]
    if np.any(np.diff(pts_a) <= 0):
        return None
    last = int(np.asarray(dur, np.int64)[order][-1])
    if last <= 0:  # the last frame lasts as long as the typical one
        last = int(np.median(np.diff(pts_a))) if len(pts_a) > 1 else 0
    if last <= 0:
        last = max(1, int(round(1 / ((rate or 25.0) * float(time_base)))))
    return _VideoTimeline(pts_a, np.asarray(key, bool)[order], int(pts_a[-1]) + last, time_base)


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read a media file's headers: size (as displayed), fps, frame count, duration, audio.

    The first video frame is decoded for its display matrix (rotation)."""
    path = _check_exists(path)
    with _open(path) as c:
        vs = c.streams.video[0] if c.streams.video else None
        au = c.streams.audio[0] if c.streams.audio else None
        durations = [
            float(s.duration * s.time_base)
            for s in (vs, au)
            if s is not None and s.duration is not None and s.time_base is not None
        ]
        if not durations and c.duration is not None:
            durations = [c.duration / av.time_base]
        width = height = 0
        if vs is not None:
            width, height = vs.codec_context.width, vs.codec_context.height
            try:
                t = _display_transform(next(c.decode(vs)))
            except (av.error.FFmpegError, StopIteration):
                t = None  # no decodable frame: reported when the frames are read
            if t is not None and t[0]:
                width, height = height, width
        return MediaInfo(
            path=path,
            width=width,
            height=height,
            fps=_stream_fps(vs) if vs else 0.0,
            num_frames=int(vs.frames or 0) if vs else 0,
            duration_s=max(durations) if durations else 0.0,
            has_video=vs is not None,
            has_audio=au is not None,
            audio_sample_rate=au.codec_context.sample_rate if au else 0,
            audio_channels=au.codec_context.channels if au else 0,
        )


def iter_video_frames(path: str | os.PathLike) -> Iterator[np.ndarray]:
    """Decode a video file frame by frame.

    Yields:
        RGB ``uint8`` frames ``[H, W, 3]`` in presentation order, upright (display matrix
        applied). The file stays open until the iterator is exhausted or closed.
    """
    path = _check_exists(path)
    dec = _VideoDecoder(path)
    try:
        for _, img in dec.frames():
            yield img
    finally:
        dec.close()


def read_video(path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """Decode a whole video file into memory.

    Returns:
        ``(frames, fps)``: ``frames`` is RGB ``uint8`` ``[F, H, W, 3]``, upright; ``fps`` is
        the stream's average frame rate as a float.
    """
    path = _check_exists(path)
    with _open(path) as c:
        if not c.streams.video:
            raise _no_video(path)
        fps = _stream_fps(c.streams.video[0])
    frames = list(iter_video_frames(path))
    if not frames:
        raise ValueError(f"{path!r} has a video stream but no decodable frame; re-encode it")
    return np.stack(frames), fps


def read_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Decode the first audio stream of a file (WAV, MP3, the audio of an MP4, ...).

    The signal is resampled to ``sample_rate`` with FFmpeg's resampler
    (``av.AudioResampler``) and its channels are averaged to mono. MP3/AAC encoder delay
    (priming samples, as the file signals it) is dropped, so sample 0 is the signal's start;
    AAC's padding at the end is trimmed to the stream's declared duration.

    Returns:
        ``float32`` ``[N]`` in ``[-1, 1]``, ``N ~= duration * sample_rate``.
    """
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(
            f"sample_rate must be a positive int, got {sample_rate!r}; the model uses 16000"
        )
    sample_rate = int(sample_rate)
    path = _check_exists(path)
    with _open(path) as c:
        if not c.streams.audio:
            kinds = ", ".join(s.type for s in c.streams) or "none"
            raise ValueError(
                f"{path!r} has no audio stream (streams: {kinds}); pass a WAV file or a "
                "video with a sound track"
            )
        stream = c.streams.audio[0]
        # Resample with the channels kept, then average them: FFmpeg's own downmix weights
        # channels by 1/sqrt(2), which is louder than the mean and can clip.
        resampler = None
        chunks: list[np.ndarray] = []
        try:
            for frame in c.decode(stream):
                if resampler is None:
                    resampler = av.AudioResampler(
                        format="fltp", layout=frame.layout.name, rate=sample_rate
                    )
                frame.pts = None  # let the resampler count samples; gaps are not expected
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().mean(axis=0))
        except av.error.FFmpegError as e:
            raise ValueError(
                f"{path!r} is damaged: decoding its audio failed after "
                f"{sum(map(len, chunks)) / sample_rate:.2f} s ({e}); copy or download it again, "
                "or re-encode it (e.g. ffmpeg -i IN OUT.wav)"
            ) from e
        if resampler is not None:
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().mean(axis=0))
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = int(round(float(stream.duration * stream.time_base) * sample_rate))
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    # AAC pads its last frame; the container's declared duration trims that padding.
    if declared is not None and 0 < declared < audio.shape[0]:
        audio = audio[:declared]
    return np.clip(audio, -1.0, 1.0).astype(np.float32, copy=False)


def default_video_codec() -> str:
    """``"libx264"`` when the PyAV build has an H.264 encoder, else ``"mpeg4"``."""
    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise RuntimeError(
        "this PyAV build has neither the libx264 nor the mpeg4 encoder; install the "
        "PyAV wheel from PyPI (pip install av), which bundles both"
    )


def _as_fps(fps) -> Fraction:
    try:
        f = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a positive number, got {fps!r}") from None
    if not np.isfinite(f) or f <= 0:
        raise ValueError(f"fps must be a positive finite number, got {fps!r}; e.g. 25")
    if isinstance(fps, Fraction):
        return fps
    return Fraction(f).limit_denominator(1001)


def _as_audio(samples, where: str) -> np.ndarray:
    a = np.asarray(samples)
    if a.ndim == 2 and 1 in a.shape:
        a = a.reshape(-1)
    if a.ndim != 1:
        raise ValueError(
            f"{where}: audio must be mono, shape [N], got shape {a.shape}; average the "
            "channels first (samples.mean(axis=-1))"
        )
    if a.dtype == np.int16:
        a = a.astype(np.float32) / 32768.0
    elif np.issubdtype(a.dtype, np.floating):
        a = a.astype(np.float32, copy=False)
    else:
        raise ValueError(
            f"{where}: audio dtype must be float32 in [-1, 1] or int16, got {a.dtype}"
        )
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{where}: audio contains NaN or Inf; clean the signal first")
    return np.clip(a, -1.0, 1.0)


class VideoWriter:
    """Streaming MP4 writer: frames (and mono audio) go in as they are produced.

    Usage::

        with VideoWriter("out.mp4", fps=25, with_audio=True) as w:
            for frame in frames:          # RGB uint8 [H, W, 3], all the same size
                w.write(frame)
            w.write_audio(samples)        # float32 [N] in [-1, 1] (or int16), any chunking

    The video stream is created at the first frame (its size sets the file's size, padded
    to even; see the module docstring). Audio written before the first frame is held back
    until then. Audio and video both start at time 0; audio sample ``k`` plays at
    ``k / sample_rate`` seconds regardless of how the calls interleave.

    Args:
        path: output file (``.mp4``); its folder must exist.
        fps: frame rate (float or Fraction), e.g. 25.
        with_audio: create an AAC audio stream (mono, ``sample_rate``).
        sample_rate: rate of the samples passed to ``write_audio``.
        codec: video encoder; default ``default_video_codec()``.
        crf: x264 constant rate factor (lower = better, bigger); mpeg4 uses ``qscale``. x264
            runs without its macroblock tree, so the file is repeatable (module docstring).
        preset: x264 speed preset (``"ultrafast"`` ... ``"medium"`` ... ``"veryslow"``).
        audio_bitrate: AAC bit rate in bit/s.
        progress: ``True`` for a tqdm bar, a callable ``f(frames_written)`` called per
            frame, or ``None``.
        total: expected frame count, for the progress bar only.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        fps: float | Fraction,
        *,
        with_audio: bool = False,
        sample_rate: int = 16000,
        codec: str | None = None,
        crf: int = 17,
        preset: str = "medium",
        audio_bitrate: int = 64000,
        progress: bool | Callable[[int], None] | None = None,
        total: int | None = None,
    ) -> None:
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(
                f"output folder {folder!r} does not exist; create it before writing "
                f"{self.path!r}"
            )
        self.fps = _as_fps(fps)
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}")
        self.sample_rate = int(sample_rate)
        self.with_audio = bool(with_audio)
        self.codec = codec or default_video_codec()
        self.crf = int(crf)
        self.preset = str(preset)
        self.audio_bitrate = int(audio_bitrate)
        self.frames_written = 0
        self.samples_written = 0
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the frames given
        self.padded_size: tuple[int, int] | None = None  # (H, W) in the file
        self._pending_audio: list[np.ndarray] = []
        self._container = av.open(self.path, "w", options={"movflags": "+faststart"})
        self._vstream = None
        self._astream = None
        self._closed = False
        self._bar = None
        self._callback = None
        if progress is True:
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="frame", desc=os.path.basename(self.path))
        elif callable(progress):
            self._callback = progress
        elif progress not in (None, False):
            raise ValueError(
                f"progress must be True, False, None or a callable, got {progress!r}"
            )

    # -- streams -------------------------------------------------------------------------
    def _open_streams(self, h: int, w: int) -> None:
        ph, pw = h + (h % 2), w + (w % 2)
        vs = self._container.add_stream(self.codec, rate=self.fps)
        vs.width, vs.height, vs.pix_fmt = pw, ph, "yuv420p"
        vs.codec_context.time_base = 1 / self.fps
        if self.codec == "libx264":
            # the macroblock tree off: with it, the same frames did not give the same file twice
            # (module docstring); crf 17 keeps the picture where crf 18 with the tree had it
            opts = {"crf": str(self.crf), "preset": self.preset, "x264-params": "mbtree=0"}
            vs.options = opts
        elif self.codec == "mpeg4":
            vs.codec_context.qscale = max(2, min(31, self.crf // 6))
        self._vstream = vs
        if self.with_audio:
            a = self._container.add_stream("aac", rate=self.sample_rate)
            a.layout = "mono"
            a.bit_rate = self.audio_bitrate
            self._astream = a
        self.frame_size, self.padded_size = (h, w), (ph, pw)
        for chunk in self._pending_audio:
            self._encode_audio(chunk)
        self._pending_audio.clear()

    def _encode_audio(self, a: np.ndarray) -> None:
        frame = av.AudioFrame.from_ndarray(a[None, :], format="flt", layout="mono")
        frame.sample_rate = self.sample_rate
        frame.pts = self.samples_written
        frame.time_base = Fraction(1, self.sample_rate)
        self.samples_written += a.shape[0]
        for packet in self._astream.encode(frame):
            self._container.mux(packet)

    # -- public ---------------------------------------------------------------------------
    def write(self, frame: np.ndarray) -> None:
        """Append one RGB ``uint8`` frame ``[H, W, 3]`` (same size as the first frame)."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path!r} is closed; open a new one")
        f = np.asarray(frame)
        if f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(
                f"frame {self.frames_written}: expected RGB [H, W, 3], got shape {f.shape}; "
                "convert grayscale/RGBA to RGB first"
            )
        if f.dtype != np.uint8:
            raise ValueError(
                f"frame {self.frames_written}: expected dtype uint8, got {f.dtype}; "
                "convert with np.clip(x, 0, 255).astype(np.uint8)"
            )
        h, w = f.shape[:2]
        if self._vstream is None:
            if h < 2 or w < 2:
                raise ValueError(f"frame size {w}x{h} is too small to encode (need >= 2x2)")
            self._open_streams(h, w)
        elif (h, w) != self.frame_size:
            raise ValueError(
                f"frame {self.frames_written} is {w}x{h} but the video is "
                f"{self.frame_size[1]}x{self.frame_size[0]}; all frames of one file must "
                "have the same size (resize them, or start a new file)"
            )
        ph, pw = self.padded_size
        if (ph, pw) != (h, w):
            f = np.pad(f, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        for packet in self._vstream.encode(vf):
            self._container.mux(packet)
        self.frames_written += 1
        if self._bar is not None:
            self._bar.update(1)
        if self._callback is not None:
            self._callback(self.frames_written)

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono audio: ``float32 [N]`` in ``[-1, 1]`` or ``int16 [N]``."""
        if self._closed:
            raise RuntimeError(f"VideoWriter for {self.path!r} is closed; open a new one")
        if not self.with_audio:
            raise RuntimeError(
                "this VideoWriter has no audio stream; create it with with_audio=True"
            )
        a = _as_audio(samples, "write_audio")
        if a.shape[0] == 0:
            return
        if self._vstream is None:
            self._pending_audio.append(a.copy())
        else:
            self._encode_audio(a)

    def close(self) -> None:
        """Flush the encoders and finish the file. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._vstream is None:
                raise ValueError(
                    f"no frame was written to {self.path!r}; an MP4 needs at least one "
                    "video frame"
                )
            for packet in self._vstream.encode(None):
                self._container.mux(packet)
            if self._astream is not None:
                for packet in self._astream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
            if self._bar is not None:
                self._bar.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # do not mask the original error with a flush error
            try:
                self.close()
            except Exception:
                pass


def write_wav(path: str | os.PathLike, samples, sample_rate: int = 16000) -> None:
    """Write mono ``samples`` (float32 in ``[-1, 1]`` or int16, ``[N]``) as a 16-bit PCM WAV file.

    Floats are rounded to the nearest of ``x * 32767`` (clipped to ``[-1, 1]`` first); int16 is
    written as it is. ``read_audio`` reads it back.
    """
    import wave

    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise ValueError(f"sample_rate must be an int > 0, got {sample_rate!r}")
    raw = np.asarray(samples)
    pcm = raw if raw.dtype == np.int16 and raw.ndim == 1 else \
        np.rint(_as_audio(raw, "write_wav") * np.float32(32767.0)).astype(np.int16)  # float32 math
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.astype("<i2").tobytes())


def write_video(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float | Fraction,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    progress: bool | Callable[[int], None] | None = None,
    *,
    codec: str | None = None,
    crf: int = 17,
    preset: str = "medium",
) -> str:
    """Write frames (and optional mono audio) to an MP4 file.

    Args:
        frames: RGB ``uint8`` ``[F, H, W, 3]`` or any iterable of ``[H, W, 3]`` frames.
        fps: frame rate, e.g. 25.
        audio: mono ``float32 [N]`` in ``[-1, 1]`` (or ``int16``) at ``sample_rate``,
            starting with frame 0; written as is (not trimmed or padded to the video).
        progress: ``True`` for a tqdm bar, or a callable ``f(frames_written)``.

    Returns:
        ``path`` as a string. Odd frame sizes are padded to even (see module docstring).
    """
    total = len(frames) if hasattr(frames, "__len__") else None
    if isinstance(frames, np.ndarray) and frames.ndim != 4:
        raise ValueError(
            f"frames array must be [F, H, W, 3], got shape {frames.shape}; for one frame "
            "use frames[None]"
        )
    with VideoWriter(
        path,
        fps,
        with_audio=audio is not None,
        sample_rate=sample_rate,
        codec=codec,
        crf=crf,
        preset=preset,
        progress=progress,
        total=total,
    ) as w:
        for frame in frames:
            w.write(frame)
        if audio is not None:
            w.write_audio(audio)
    return w.path
