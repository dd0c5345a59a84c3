"""One viewer's live avatar: the idle loop until something is said, the model's frames while it speaks.

A ``Channel`` owns one viewer's clock. ``tick()`` is called once per video frame (25 fps, by the
server's pacing task) and returns that frame's picture and the 40 ms of sound that play with it
(at ``playback_rate``; the model hears the utterance at its own rate), so sound and picture come
from one place and cannot drift apart:

- idle: the avatar's loop frame (ping-pong) and silence; the model does not run;
- ``say(audio)``: the utterance starts on the next chunk boundary of the loop at least ``lead``
  frames ahead of the moment its first audio is there to render (``AvatarSession(start=...)``),
  rendered by the shared ``RenderPool`` ahead of playback; each of its frames is shown with its
  own 40 ms of the utterance. ``say(audio, more=True)`` opens an utterance that streams
  (``add(utt, audio, more=...)``: TTS audio as it is synthesized). Where a frame is not rendered in
  time the channel holds the last picture and plays silence (a stall) and goes on where it stopped,
  so the mouth never leads or trails the sound, it only waits. A new ``say`` cuts the current one.

Nothing here imports torch or a WebRTC library: the engine may be ONNX Runtime or TensorRT.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from ..avatar import Avatar, AvatarSession
from .speech import StreamResampler

__all__ = ["Channel", "FrameClock", "RenderPool", "Tick", "Utterance"]


class _Samples:
    """A growing mono float32 buffer (amortized appends, slices by sample index)."""

    def __init__(self, capacity: int = 1 << 15):
        self._a = np.zeros(max(capacity, 1), np.float32)
        self.size = 0

    def append(self, x: np.ndarray) -> None:
        if self.size + x.size > self._a.size:
            grown = np.zeros(max(2 * self._a.size, self.size + x.size), np.float32)
            grown[:self.size] = self._a[:self.size]
            self._a = grown
        self._a[self.size:self.size + x.size] = x
        self.size += x.size

    def get(self, i: int, j: int) -> np.ndarray:
        """Samples ``[i, j)``, zeros past the end."""
        out = np.zeros(j - i, np.float32)
        k = max(0, min(j, self.size) - i)
        out[:k] = self._a[i:i + k]
        return out


@dataclass(eq=False)
class Utterance:
    """Something said on a channel: its audio (all at once, or streaming in while ``open``),
    where in the loop it starts (chosen when its first audio is rendered), its frames as they render."""

    id: int
    posted: float  # time.monotonic() when it was asked for
    audio: _Samples = field(default_factory=_Samples)  # at the model's rate
    play: _Samples = field(default_factory=_Samples)  # at the channel's playback rate
    open: bool = True  # more audio may come (``Channel.add``)
    samples: int = 0  # said so far, at the model's rate (kept after ``release``)
    start: int | None = None  # loop position of its first frame (whole chunks); None: not yet started
    frames: deque = field(default_factory=deque)  # rendered, not yet shown
    rendered: int = 0
    shown: int = 0
    stalls: int = 0
    first_shown: float | None = None  # time.monotonic() when its first frame was ticked (sent)
    preroll: int = 0  # frames to have rendered before the first is shown (set when it is about to start)
    frame_bytes: int = 0  # of one rendered frame
    waited: int = 0  # ticks it waited at its start for the pre-roll (the rest of ``stalls`` came later)
    cancelled: bool = False
    error: str | None = None
    done_rendering: bool = False

    def n_frames(self, samples_per_frame: int) -> int | None:
        """Frames once closed (the audio's length in whole frames); None while open."""
        return None if self.open else -(-self.samples // samples_per_frame)

    def release(self) -> None:
        """Let go of its sound and unshown frames (it stays in the channel's history as numbers)."""
        self.audio, self.play = _Samples(0), _Samples(0)
        self.frames.clear()

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
    round-robin, each at most ``ahead`` frames ahead of its playback (more where a pre-roll needs
    it, with at most ``max_buffer_mb`` of frames waiting over all of them), so memory stays bounded.

    It measures its compute time per frame (a running mean): with ``J`` utterances in work each
    gets ``1 / (J * seconds per frame)`` frames per second; where that is less than real time,
    ``preroll`` tells a channel how many frames to have before an utterance starts so that it then
    plays through without pausing."""

    def __init__(self, engine, ahead: int = 50, silence: str | None = None, max_buffer_mb: float = 256.0,
                 exemplars: bool = True):
        """``exemplars``: paste through mouth exemplars (``Engine.session``)."""
        self.engine, self.ahead, self.silence, self.exemplars = engine, int(ahead), silence, bool(exemplars)
        self.max_buffer_mb = float(max_buffer_mb)
        self.fps = engine.config.stream.fps
        self._sec_per_frame: float | None = None  # running mean of compute seconds per rendered frame
        self._jobs: list = []
        self._cv = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="lipforce-render", daemon=True)
        self._thread.start()

    def submit(self, channel: "Channel", utt: Utterance) -> None:
        with self._cv:
            self._jobs.append((utt, self._job(channel, utt)))
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

    def rate(self) -> float | None:
        """Frames per second each utterance in work gets now (None: nothing measured yet)."""
        if self._sec_per_frame is None:
            return None
        return 1.0 / (max(1, len(self._jobs)) * self._sec_per_frame)

    def preroll(self, utt: Utterance, samples_per_frame: int) -> int:
        """Frames ``utt`` should have rendered before its first is shown: enough that at the
        measured rate it plays through (``n (1 - rate / fps)``), within the memory cap."""
        n = utt.n_frames(samples_per_frame)
        r = self.rate()
        if n is None or r is None or r >= self.fps:
            return 1
        cap = max(1, int(self.max_buffer_mb * 2**20 / max(utt.frame_bytes, 1)) // max(1, len(self._jobs)))
        return max(1, min(n, cap, math.ceil(n * (1.0 - r / self.fps)) + 2))

    def _buffer_limit(self, utt: Utterance) -> int:
        if utt.preroll <= self.ahead:
            return self.ahead
        held = sum((u.rendered - u.shown) * u.frame_bytes for u, _ in list(self._jobs))
        return self.ahead if held > self.max_buffer_mb * 2**20 else utt.preroll

    def _job(self, channel: "Channel", utt: Utterance):
        """A generator: each ``next`` renders one chunk's push, or yields ``False`` without work
        (no audio yet, or far enough ahead of its playback)."""
        cfg = self.engine.config
        step = cfg.video_frames_per_chunk * cfg.samples_per_video_frame
        session, pos = None, 0
        while True:
            if utt.cancelled:
                return
            have, closed = utt.audio.size, not utt.open
            if pos >= have and closed:
                break
            if (have - pos < step and not closed) or utt.rendered - utt.shown >= self._buffer_limit(utt):
                yield False
                continue
            if session is None:  # the first audio is here: start on the loop's next chunk boundary
                session = AvatarSession(self.engine, channel.avatar, silence=self.silence, exemplars=self.exemplars,
                                        start=channel._claim_start(utt))
            n = min(step, have - pos)
            t0 = time.perf_counter()
            out = session.push(utt.audio.get(pos, pos + n))
            if out:
                spf = (time.perf_counter() - t0) / len(out)
                m = self._sec_per_frame
                self._sec_per_frame = spf if m is None else 0.9 * m + 0.1 * spf
            pos += n
            self._deliver(utt, out)
            yield True
        if session is not None and not utt.cancelled:
            self._deliver(utt, session.flush())

    @staticmethod
    def _deliver(utt: Utterance, out) -> None:
        if utt.cancelled:  # cut while this chunk rendered: nobody will show it
            return
        for o in out:
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
    """One viewer's stream of ``avatar`` (see the module docstring). Thread-safe: ``say``/``add``/
    ``stop`` from the caller's thread, rendering on the pool's thread, ``tick`` from the pacing task."""

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
        self._resamplers: dict = {}
        self._last_image, self._last_j = avatar.frames[avatar.loop_index(0)], int(avatar.loop_index(0))
        self._silence = np.zeros(self.play_per_frame, np.float32)
        self.history: deque[Utterance] = deque(maxlen=32)
        self.closed = False

    # ---- control ----
    def say(self, audio: np.ndarray, sample_rate: int | None = None, more: bool = False,
            posted: float | None = None) -> Utterance:
        """Speak ``audio`` (mono float32, at ``sample_rate``, default the model's); cuts an utterance
        still playing. ``more=True`` leaves it open for ``add``. ``posted``: when it was asked for
        (``time.monotonic()``; default now), for its latency."""
        with self._lock:
            if self.closed:
                raise RuntimeError("the channel is closed")
            self._cut()
            utt = Utterance(next(self._ids), time.monotonic() if posted is None else posted,
                            frame_bytes=int(self._last_image.nbytes))
            self._resamplers[utt.id] = (StreamResampler(sample_rate or self.sample_rate, self.sample_rate),
                                        StreamResampler(sample_rate or self.sample_rate, self.playback_rate))
            self._current = utt
            self.history.append(utt)
        self.add(utt, audio, more=more)
        self.pool.submit(self, utt)
        return utt

    def add(self, utt: Utterance, audio: np.ndarray, more: bool = False) -> None:
        """More audio for an open utterance (``more=False``: this is its end). Ignored once it
        has been cut."""
        audio = np.asarray(audio, np.float32).reshape(-1)
        with self._lock:
            if not utt.open:
                raise ValueError(f"utterance {utt.id} is closed; say() starts a new one")
            rs = self._resamplers.get(utt.id)
            if rs is None or utt.cancelled:
                return
            to_model, to_play = rs
            utt.audio.append(to_model.push(audio, end=not more))
            utt.samples = utt.audio.size
            utt.play.append(to_play.push(audio, end=not more))
            if not more:
                if utt.audio.size == 0:
                    utt.cancelled = True  # nothing was said
                    if self._current is utt:
                        self._current = None
                utt.open = False
                del self._resamplers[utt.id]
        self.pool.wake()

    def stop(self) -> None:
        """Cut what is being said; the avatar idles."""
        with self._lock:
            self._cut()

    def close(self) -> None:
        self.stop()
        self.closed = True

    @property
    def speaking(self) -> bool:
        return self._current is not None

    def _cut(self) -> None:
        u = self._current
        if u is not None:
            u.cancelled = True
            self._resamplers.pop(u.id, None)
            if u.shown:  # cut mid-utterance: the loop goes on from where the picture is
                self._loop_pos = u.start + u.shown
            self._current = None
            u.release()

    def _claim_start(self, utt: Utterance) -> int:
        """The loop position where ``utt`` starts: the next chunk boundary ``lead`` frames ahead of
        the idle loop now (called by the renderer when the first audio is there)."""
        with self._lock:
            c = self.chunk
            utt.start = math.ceil((self._loop_pos + self.lead) / c) * c
            return utt.start

    def _end_if_shown(self, u: Utterance) -> bool:
        """Where ``u`` is closed and every frame of it shown: the loop goes on after it."""
        n = u.n_frames(self.samples_per_frame)
        if n is None or u.shown < n:
            return False
        self._loop_pos, self._current = u.start + n, None
        u.release()
        return True

    # ---- the clock ----
    def tick(self) -> Tick:
        """The next frame and its audio (called once per frame period)."""
        with self._lock:
            i = self._index
            self._index += 1
            u = self._current
            if u is not None and (u.error is not None or u.cancelled):
                self._current = None
                u.release()
                u = None
            if u is not None and u.start is not None and self._loop_pos >= u.start:
                if u.shown == 0 and not u.done_rendering:  # about to start: rendering slower than real time
                    u.preroll = self.pool.preroll(u, self.samples_per_frame)
                    if len(u.frames) < u.preroll:  # wait here rather than pause mid-sentence
                        u.stalls += 1
                        u.waited += 1
                        return Tick(i, self._last_image, self._silence, u.id, None, self._last_j)
                if u.frames:
                    img = u.frames.popleft()
                    k = u.shown
                    a = u.play.get(k * self.play_per_frame, (k + 1) * self.play_per_frame)
                    if u.first_shown is None:
                        u.first_shown = time.monotonic()
                    u.shown += 1
                    self._last_image, self._last_j = img, int(self.avatar.loop_index(u.start + k))
                    self._end_if_shown(u)
                    self.pool.wake()
                    return Tick(i, img, a, u.id, k, self._last_j)
                if not self._end_if_shown(u):  # (it ends here where it was closed after its last frame)
                    u.stalls += 1  # not rendered (or not said) in time: hold the picture, play nothing
                    return Tick(i, self._last_image, self._silence, u.id, None, self._last_j)
            j = int(self.avatar.loop_index(self._loop_pos))
            self._loop_pos += 1
            self._last_image, self._last_j = self.avatar.frames[j], j
            return Tick(i, self._last_image, self._silence, None, None, j)


class FrameClock:
    """Paces a loop at ``fps`` on the asyncio clock (``await clock.next()`` after each frame). A
    loop held up by more than ``max_behind`` s starts the clock afresh rather than catching up in a
    burst (``restarts``, ``skipped_s`` count it)."""

    def __init__(self, fps: float, max_behind: float = 0.5):
        self.period, self.max_behind = 1.0 / fps, max_behind
        self._t0: float | None = None
        self._n = 0
        self.restarts, self.skipped_s = 0, 0.0

    def due(self) -> float:
        """When the frame being made now was due on this clock (now, before the first ``next``): a
        frame made late by a held-up loop carries its own time, so a sender can tell it is stale."""
        if self._t0 is None:
            return asyncio.get_running_loop().time()
        return self._t0 + self._n * self.period

    async def next(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._t0 is None:
            self._t0 = now
        self._n += 1
        delay = self._t0 + self._n * self.period - now
        if delay < -self.max_behind:
            self.restarts += 1
            self.skipped_s += -delay
            self._t0, self._n, delay = now, 0, 0.0
        await asyncio.sleep(max(0.0, delay))
