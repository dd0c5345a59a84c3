"""One viewer's live avatar: the idle loop until something is said, the model's frames while it speaks.

A ``Channel`` owns one viewer's clock. ``tick()`` is called once per video frame (25 fps, by the
server's pacing task) and returns that frame's picture and the 40 ms of sound that play with it
(at ``playback_rate``; the model hears the utterance at its own rate), so sound and picture come
from one place and cannot drift apart:

- idle: the avatar's loop frame (ping-pong) and silence; the model does not run;
- ``say(audio)``: the utterance starts on the next chunk boundary of the loop at least ``lead``
  frames ahead (``AvatarSession(start=...)``), rendered by the shared ``RenderPool`` ahead of
  playback; each of its frames is shown with its own 40 ms of the utterance. Where a frame is not rendered in
  time the channel holds the last picture and plays silence (a stall) and goes on where it stopped,
  so the mouth never leads or trails the sound, it only waits. A new ``say`` cuts the current one.

Nothing here imports torch or a WebRTC library: the engine may be ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..avatar import Avatar, AvatarSession
from .speech import resample

__all__ = ["Channel", "RenderPool", "Tick", "Utterance"]


@dataclass(eq=False)
class Utterance:
    """Something said on a channel: its audio, where in the loop it starts, its frames as they render."""

    id: int
    audio: np.ndarray  # mono float32 at the model's sample rate
    play: np.ndarray  # the same at the channel's playback rate, padded to whole frames
    start: int  # loop position of its first frame (whole chunks)
    n_frames: int
    posted: float  # time.monotonic() when it was said
    frames: deque = field(default_factory=deque)  # rendered, not yet shown
    rendered: int = 0
    shown: int = 0
    stalls: int = 0
    first_shown: float | None = None  # time.monotonic() when its first frame was ticked (sent)
    cancelled: bool = False
    error: str | None = None
    done_rendering: bool = False

    @property
    def latency_ms(self) -> float | None:
        """Asked for (the request arrived; text still to be spoken) -> its first frame sent."""
        return None if self.first_shown is None else 1000.0 * (self.first_shown - self.posted)


@dataclass(frozen=True)
class Tick:
    """One video frame of a channel and the audio that plays with it."""

    index: int  # frame number on the channel's clock
    image: np.ndarray  # [H, W, 3] uint8 RGB
    audio: np.ndarray  # [playback samples per frame] float32
    utterance: int | None  # id of the utterance this frame belongs to (None: idle)
    position: int | None  # frame index within that utterance (None: idle or a stall)
    loop_frame: int  # the avatar's loop frame under the picture


class RenderPool:
    """One thread that renders the utterances of all channels of an ``Engine``, a chunk at a time,
    round-robin, each at most ``ahead`` frames ahead of its playback (memory stays bounded)."""

    def __init__(self, engine, ahead: int = 50, silence: str | None = None):
        self.engine, self.ahead, self.silence = engine, int(ahead), silence
        self._jobs: list = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="lipforce-render", daemon=True)
        self._thread.start()

    def submit(self, avatar: Avatar, utt: Utterance) -> None:
        with self._cv:
            self._jobs.append((utt, self._job(avatar, utt)))
            self._cv.notify()

    def wake(self) -> None:
        with self._cv:
            self._cv.notify()

    def close(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()
        self._thread.join(timeout=5)

    @property
    def busy(self) -> int:
        return len(self._jobs)

    def _job(self, avatar: Avatar, utt: Utterance):
        """A generator: each ``next`` renders one chunk's push (or yields without work when the
        utterance is far enough ahead of its playback)."""
        cfg = self.engine.config
        session = AvatarSession(self.engine, avatar, silence=self.silence, start=utt.start)
        step = cfg.video_frames_per_chunk * cfg.samples_per_video_frame
        pos = 0
        while pos < utt.audio.size:
            if utt.cancelled:
                return
            if utt.rendered - utt.shown >= self.ahead:
                yield False
                continue
            out = session.push(utt.audio[pos:pos + step])
            pos += step
            self._deliver(utt, out)
            yield True
        if not utt.cancelled:
            self._deliver(utt, session.flush())

    @staticmethod
    def _deliver(utt: Utterance, out) -> None:
        for o in out:
            if o.index < utt.n_frames:
                utt.frames.append(o.image)
                utt.rendered += 1

    def _run(self) -> None:
        while True:
            with self._cv:
                if self._stop:
                    return
                jobs = list(self._jobs)
            worked = False
            for utt, gen in jobs:
                try:
                    worked |= bool(next(gen))
                except StopIteration:
                    self._finish(utt, gen)
                except Exception as e:  # noqa: BLE001 - the error belongs to this utterance only
                    utt.error = f"{type(e).__name__}: {e}"
                    self._finish(utt, gen)
            if not worked:
                with self._cv:
                    if not self._stop:
                        self._cv.wait(timeout=0.01)

    def _finish(self, utt: Utterance, gen) -> None:
        utt.done_rendering = True
        with self._cv:
            self._jobs = [j for j in self._jobs if j[1] is not gen]


class Channel:
    """One viewer's stream of ``avatar`` (see the module docstring). Thread-safe: ``say``/``stop``
    from the server's loop, rendering on the pool's thread, ``tick`` from the pacing task."""

    _ids = itertools.count(1)

    def __init__(self, engine, avatar: Avatar, pool: RenderPool, lead: int | None = None,
                 playback_rate: int | None = None):
        cfg = engine.config
        self.avatar, self.pool = avatar, pool
        self.fps = cfg.stream.fps
        self.sample_rate = cfg.audio.sample_rate
        self.samples_per_frame = cfg.samples_per_video_frame
        self.playback_rate = int(playback_rate or self.sample_rate)
        self.play_per_frame = round(self.playback_rate / self.fps)
        if self.play_per_frame * self.fps != self.playback_rate:
            raise ValueError(f"playback_rate={self.playback_rate} is not a whole number of samples per frame "
                             f"at {self.fps} fps")
        self.chunk = cfg.video_frames_per_chunk
        self.lead = self.chunk if lead is None else int(lead)
        self._lock = threading.Lock()
        self._loop_pos = 0  # the loop position of the next idle frame
        self._index = 0
        self._current: Utterance | None = None
        self._last_image, self._last_j = avatar.frames[avatar.loop_index(0)], int(avatar.loop_index(0))
        self._silence = np.zeros(self.play_per_frame, np.float32)
        self.history: deque[Utterance] = deque(maxlen=32)
        self.closed = False

    # ---- control ----
    def say(self, audio: np.ndarray, posted: float | None = None) -> Utterance:
        """Speak ``audio`` (mono float32 at the model's rate); cuts an utterance still playing.
        ``posted``: when it was asked for (``time.monotonic()``; default now), for its latency."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        if audio.size == 0:
            raise ValueError("say() got no audio samples")
        n = -(-audio.size // self.samples_per_frame)
        play = audio if self.playback_rate == self.sample_rate else resample(audio, self.sample_rate,
                                                                             self.playback_rate)
        play = np.pad(play[: n * self.play_per_frame], (0, max(0, n * self.play_per_frame - play.size)))
        with self._lock:
            if self.closed:
                raise RuntimeError("the channel is closed")
            old = self._current
            if old is not None:
                old.cancelled = True
                if old.shown:  # cut mid-utterance: the loop goes on from where the picture is
                    self._loop_pos = old.start + old.shown
            c = self.chunk
            start = -(-(self._loop_pos + self.lead) // c) * c
            utt = Utterance(next(self._ids), audio, play, start, n, time.monotonic() if posted is None else posted)
            self._current = utt
            self.history.append(utt)
        self.pool.submit(self.avatar, utt)
        return utt

    def stop(self) -> None:
        """Cut what is being said; the avatar idles."""
        with self._lock:
            if self._current is not None:
                self._current.cancelled = True
                if self._current.shown:
                    self._loop_pos = self._current.start + self._current.shown
                self._current = None

    def close(self) -> None:
        self.stop()
        self.closed = True

    @property
    def speaking(self) -> bool:
        return self._current is not None

    # ---- the clock ----
    def tick(self) -> Tick:
        """The next frame and its audio (called once per frame period)."""
        with self._lock:
            i = self._index
            self._index += 1
            u = self._current
            if u is not None and (u.error is not None or u.cancelled):
                self._current = u = None
            if u is not None and self._loop_pos >= u.start:
                if u.frames:
                    img = u.frames.popleft()
                    k = u.shown
                    a = u.play[k * self.play_per_frame:(k + 1) * self.play_per_frame]
                    if u.first_shown is None:
                        u.first_shown = time.monotonic()
                    u.shown += 1
                    self._last_image, self._last_j = img, int(self.avatar.loop_index(u.start + k))
                    if u.shown >= u.n_frames:
                        self._loop_pos = u.start + u.n_frames
                        self._current = None
                    self.pool.wake()
                    return Tick(i, img, a, u.id, k, self._last_j)
                u.stalls += 1  # not rendered in time: hold the picture, play nothing
                return Tick(i, self._last_image, self._silence, u.id, None, self._last_j)
            j = int(self.avatar.loop_index(self._loop_pos))
            self._loop_pos += 1
            self._last_image, self._last_j = self.avatar.frames[j], j
            return Tick(i, self._last_image, self._silence, None, None, j)
