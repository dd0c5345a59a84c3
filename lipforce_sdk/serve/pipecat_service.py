"""The live avatar in a pipecat pipeline: TTS audio in, the avatar's video (and its sound) out.

``LipforceVideoService`` is a pipecat ``FrameProcessor`` that goes between a TTS service and the
output transport::

    pipeline = Pipeline([transport.input(), stt, context_aggregator.user(), llm, tts,
                         LipforceVideoService(engine, avatar), transport.output(),
                         context_aggregator.assistant()])

From the ``StartFrame`` to the ``EndFrame``/``CancelFrame`` it pushes one ``OutputImageRawFrame``
(RGB, the avatar's size, see ``video_size``) every 40 ms, from a ``Channel`` (the per-viewer clock
of ``lipforce serve``):

- idle (nothing said): the avatar's loop frames; no audio (the output transport fills silence:
  ``TransportParams.audio_out_auto_silence``, on by default; ``idle_audio=True`` pushes silence
  frames for a transport that does not);
- speaking: the model's frames and, pushed right after each, a ``TTSAudioRawFrame`` with the 40 ms
  of the TTS audio that belong to that frame, at the pipeline's output sample rate (or
  ``sample_rate=``), so the transport plays picture and sound in step. The TTS's own
  ``TTSAudioRawFrame`` s do not go on downstream: the service consumes them.

TTS responses (``TTSStartedFrame`` ... ``TTSStoppedFrame``, or audio with no start frame) are
spoken one after another: one that arrives while another is still playing waits its turn (it does
not cut it). The ``TTSStartedFrame`` goes downstream when its response starts (at once when the
avatar is idle), the ``TTSStoppedFrame`` right after the response's last frame, so the output
transport's bot-speaking events follow the avatar. If a response's audio runs dry before its
``TTSStoppedFrame`` (a streaming TTS waiting for the LLM) the avatar finishes what it has and
idles rather than freezing; the rest plays when it comes.

An ``InterruptionFrame`` cuts the avatar at once (within the frame being pushed) and drops every
response not yet played (their ``TTSStoppedFrame`` s are dropped too, as the TTS service drops an
interrupted context), except uninterruptible ones (``frame.interruptible``). Every other frame
passes through untouched. Other ``OutputAudioRawFrame`` s (not TTS) pass through too; they share
the transport's audio queue with the avatar's sound.

Each pushed image and audio frame carries ``frame.metadata["lipforce"]``: the tick's ``index``,
``utterance`` (the ``Channel`` utterance id, None while idle), ``position`` (the frame within it,
None while idle or stalled), ``loop_frame`` and the TTS ``context_id``.

Needs the ``pipecat`` extra (``pip install "lipforce[pipecat]"``; pipecat-ai >= 1.14). For
pipecat's SmallWebRTC transport use ``TransportParams(video_out_enabled=True,
video_out_is_live=True, video_out_framerate=25, video_out_width/height=service.video_size,
audio_out_enabled=True)``; see ``samples/pipecat_avatar.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from .channel import Channel, FrameClock, RenderPool, Tick, Utterance
from .speech import resample

__all__ = ["LipforceVideoService"]

_EMPTY = np.zeros(0, np.float32)


def pcm16_to_float(audio: bytes, num_channels: int = 1) -> np.ndarray:
    """Little-endian 16-bit PCM (interleaved channels) -> mono float32 in [-1, 1)."""
    x = np.frombuffer(audio, dtype="<i2")
    if num_channels > 1:
        x = x[: x.size // num_channels * num_channels].reshape(-1, num_channels).mean(axis=1)
    return (x / 32768.0).astype(np.float32)


def float_to_pcm16(x: np.ndarray) -> bytes:
    """Mono float32 -> little-endian 16-bit PCM (exact for samples that came from 16-bit PCM)."""
    return np.clip(np.rint(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype("<i2").tobytes()


@dataclass(eq=False)
class _Response:
    """One TTS response (TTSStarted ... TTSStopped): its audio, and the frames that go downstream
    when it starts (``head``) and after its last frame (``tail``)."""

    context_id: str | None = None
    head: list = field(default_factory=list)
    tail: list = field(default_factory=list)
    pending: list = field(default_factory=list)  # audio (at ``rate``) not yet given to the channel
    rate: int | None = None
    closed: bool = False  # no more audio (its TTSStoppedFrame came, or a new response started)
    interruptible: bool = True
    utt: Utterance | None = None  # on the channel now
    last_audio: float = 0.0  # time.monotonic() of its latest audio
    error_reported: bool = False


class LipforceVideoService(FrameProcessor):
    """The avatar's video from a pipecat TTS service's audio (see the module docstring).

    Args:
        engine: a loaded ``lipforce_sdk.Engine`` (ONNX Runtime, TensorRT or torch).
        avatar: a prepared ``Avatar`` (``lipforce_sdk.serve.default_avatar(engine)``, ``Avatar.load``).
        pool: a ``RenderPool`` to share one render thread among services (sessions) of the same
            engine; default: the service makes its own and closes it at cleanup.
        sample_rate: the rate of the audio it pushes (default: the pipeline's
            ``audio_out_sample_rate``); a multiple of 25.
        idle_audio: push silence while idle (for an output transport without auto-silence).
        stall_close_s: a response whose audio has run dry (the avatar stalls) for this long
            finishes what it has and idles until more comes.
        lead: frames between the first audio and the first speaking frame (``Channel(lead=)``).
        transport_destination: set on the pushed frames (pipecat's multi-track outputs).
    """

    def __init__(self, engine, avatar, *, pool: RenderPool | None = None, sample_rate: int | None = None,
                 idle_audio: bool = False, stall_close_s: float = 0.3, lead: int | None = None,
                 transport_destination: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.engine, self.avatar = engine, avatar
        self._pool, self._own_pool = pool, pool is None
        self._sample_rate = sample_rate
        self.idle_audio = bool(idle_audio)
        self.stall_close_s = float(stall_close_s)
        self.end_timeout_s = 5.0
        self._lead = lead
        self._destination = transport_destination
        self.channel: Channel | None = None
        self._active: _Response | None = None
        self._queue: deque[_Response] = deque()  # responses waiting for the active one to finish
        self._lock = asyncio.Lock()  # one tick (advance, tick, push) at a time, and cuts between ticks
        self._pace_task: asyncio.Task | None = None
        self._last_tick: Tick | None = None
        self.frames_pushed = 0
        self._clock: FrameClock | None = None

    # ---- what it shows ----
    @property
    def video_size(self) -> tuple[int, int]:
        """(width, height) of the pushed images (``TransportParams.video_out_width/height``)."""
        h, w = self.avatar.frames.shape[1:3]
        return int(w), int(h)

    @property
    def fps(self) -> float:
        return float(self.engine.config.stream.fps)

    @property
    def speaking(self) -> bool:
        """A response is playing or waiting to."""
        return self._active is not None or bool(self._queue)

    # ---- pipecat ----
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if direction != FrameDirection.DOWNSTREAM:
            await self.push_frame(frame, direction)
        elif isinstance(frame, StartFrame):
            await self._start(frame)
        elif isinstance(frame, EndFrame):
            await self._end(frame)
        elif isinstance(frame, CancelFrame):
            await self._cancel(frame)
        elif self.channel is None:  # not started (or no channel could be made): everything passes
            await self.push_frame(frame, direction)
        elif isinstance(frame, InterruptionFrame):
            await self._interrupt(frame)
        elif isinstance(frame, TTSAudioRawFrame):
            await self._audio(frame)
        elif isinstance(frame, TTSStartedFrame):
            await self._tts_started(frame)
        elif isinstance(frame, TTSStoppedFrame):
            await self._tts_stopped(frame)
        else:
            await self.push_frame(frame, direction)

    async def cleanup(self):
        await super().cleanup()
        await self._stop_pacing()
        if self.channel is not None:
            self.channel.close()
        if self._own_pool and self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.close)

    # ---- lifecycle ----
    async def _start(self, frame: StartFrame):
        rate = int(self._sample_rate or self.processor_setup.audio_out_sample_rate)
        if self._pool is None:
            self._pool = RenderPool(self.engine)
        if self.channel is None:
            try:
                self.channel = Channel(self.engine, self.avatar, self._pool, lead=self._lead, playback_rate=rate)
            except ValueError as e:  # a rate that is not a whole number of samples per frame
                await self.push_frame(frame)
                await self.push_error(f"lipforce: {e}; pass sample_rate= (a multiple of 25)",
                                      exception=e, force_treat_as_permanent=True)
                return
        await self.push_frame(frame)
        if self._pace_task is None:
            self._pace_task = self.create_task(self._pace(), name=f"{self}::pace")

    async def _end(self, frame: EndFrame):
        """Let what was said play out, then stop (it gives up if nothing renders or shows for
        ``end_timeout_s``)."""
        async with self._lock:
            self._close_receiving()
            await self._advance()
        last, since = None, time.monotonic()
        while self.speaking and self._pace_task is not None:
            r = self._active
            u = r.utt if r is not None else None
            state = (id(r), len(self._queue), None if u is None else (u.id, u.shown, u.rendered))
            if state != last:
                last, since = state, time.monotonic()
            elif time.monotonic() - since > self.end_timeout_s:
                logger.warning(f"{self}: the avatar made no progress for {self.end_timeout_s:g} s; ending")
                break
            await asyncio.sleep(0.02)
        await self._stop_pacing()
        async with self._lock:
            for r in self._responses():  # gave up: what was waiting for them is over
                for f in r.head + r.tail:
                    await self.push_frame(f)
            self._active, self._queue = None, deque()
        if self.channel is not None:
            self.channel.close()
        await self.push_frame(frame)

    async def _cancel(self, frame: CancelFrame):
        await self._stop_pacing()
        if self.channel is not None:
            self.channel.close()
        self._active, self._queue = None, deque()
        await self.push_frame(frame)

    async def _stop_pacing(self):
        if self._pace_task is not None:
            task, self._pace_task = self._pace_task, None
            await self.cancel_task(task)

    # ---- what the TTS sends ----
    def _responses(self) -> list[_Response]:
        return ([self._active] if self._active is not None else []) + list(self._queue)

    def _receiving(self) -> _Response | None:
        """The response audio goes to: the latest one, while it is open."""
        rs = self._responses()
        return rs[-1] if rs and not rs[-1].closed else None

    def _close_receiving(self) -> None:
        r = self._receiving()
        if r is None:
            return
        r.closed = True
        u = r.utt
        if u is not None and u.open and not r.pending:
            self.channel.add(u, _EMPTY, more=False)

    async def _tts_started(self, frame: TTSStartedFrame):
        async with self._lock:
            self._close_receiving()
            self._queue.append(_Response(context_id=frame.context_id, head=[frame],
                                         interruptible=frame.interruptible))
            await self._advance()

    async def _tts_stopped(self, frame: TTSStoppedFrame):
        async with self._lock:
            r = self._receiving()
            if r is None:
                rs = self._responses()
                if not rs:  # nothing playing: nothing to wait for
                    await self.push_frame(frame)
                    return
                rs[-1].tail.append(frame)
                return
            self._close_receiving()
            r.tail.append(frame)
            await self._advance()

    async def _audio(self, frame: TTSAudioRawFrame):
        if self.channel is None or self.channel.closed:
            return
        x = pcm16_to_float(frame.audio, frame.num_channels)
        async with self._lock:
            r = self._receiving()
            if r is None:  # audio with no TTSStartedFrame (or after its stop): a response of its own
                r = _Response(context_id=frame.context_id)
                self._queue.append(r)
            if r.rate is None:
                r.rate = int(frame.sample_rate)
            elif frame.sample_rate != r.rate:
                x = resample(x, frame.sample_rate, r.rate)
            if r.context_id is None:
                r.context_id = frame.context_id
            r.interruptible = r.interruptible and frame.interruptible
            r.last_audio = time.monotonic()
            if r is self._active and r.utt is not None and r.utt.open:
                self.channel.add(r.utt, x, more=True)
            else:
                r.pending.append(x)
                await self._advance()

    async def _interrupt(self, frame: InterruptionFrame):
        async with self._lock:
            a = self._active
            if a is not None and a.interruptible:
                self.channel.stop()
                self._active = None
            self._queue = deque(r for r in self._queue if not r.interruptible)
            await self.push_frame(frame)
            await self._advance()

    # ---- the clock ----
    async def _advance(self) -> None:
        """Bring the responses up to date with the channel: start the next response (or the next
        run of the active one) when the channel is free, close a run whose audio ran dry, push a
        finished response's tail. Called with the lock held."""
        ch = self.channel
        while True:
            r = self._active
            if r is None:
                if not self._queue:
                    return
                r = self._active = self._queue.popleft()
                head, r.head = r.head, []
                for f in head:
                    await self.push_frame(f)
            u = r.utt
            if u is not None:
                if u.error is not None and not r.error_reported:
                    r.error_reported = True
                    await self.push_error(f"lipforce: rendering failed: {u.error}")
                spf = ch.samples_per_frame
                done = u.cancelled or u.error is not None or (not u.open and u.shown >= u.n_frames(spf))
                if not done:
                    t = self._last_tick
                    stalled = u.start is None or (t is not None and t.utterance == u.id and t.position is None)
                    if u.open and stalled and time.monotonic() - r.last_audio > self.stall_close_s:
                        ch.add(u, _EMPTY, more=False)  # the audio ran dry: finish this run, idle after it
                    return
                r.utt = None
            if r.pending:
                audio = np.concatenate(r.pending) if len(r.pending) > 1 else r.pending[0]
                r.pending = []
                if ch.closed:
                    return
                r.utt = ch.say(audio, sample_rate=r.rate, more=not r.closed)
                return
            if not r.closed:
                return  # waiting for its audio (idle meanwhile)
            tail, r.tail = r.tail, []
            self._active = None
            for f in tail:
                await self.push_frame(f)

    @property
    def clock_restarts(self) -> int:
        """Times the clock fell > 0.5 s behind and started afresh (frames skipped)."""
        return 0 if self._clock is None else self._clock.restarts

    @property
    def clock_skipped_s(self) -> float:
        """The time those restarts skipped."""
        return 0.0 if self._clock is None else self._clock.skipped_s

    async def _pace(self) -> None:
        self._clock = clock = FrameClock(self.channel.fps)
        while True:
            try:
                async with self._lock:
                    await self._advance()
                    tick = self.channel.tick()
                    self._last_tick = tick
                    await self._push_tick(tick)
                    await self._advance()  # a response's tail right after its last frame
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - reported to the pipeline; the clock stops
                logger.exception(f"{self}: the avatar's clock stopped")
                await self.push_error(f"lipforce: the avatar's clock stopped: {type(e).__name__}: {e}", exception=e)
                return
            await clock.next()

    async def _push_tick(self, tick: Tick) -> None:
        r = self._active
        meta = {"index": tick.index, "utterance": tick.utterance, "position": tick.position,
                "loop_frame": tick.loop_frame,
                "context_id": r.context_id if (r is not None and tick.utterance is not None) else None}
        h, w = tick.image.shape[:2]
        image = OutputImageRawFrame(image=np.ascontiguousarray(tick.image, np.uint8).tobytes(), size=(w, h),
                                    format="RGB")
        image.metadata["lipforce"] = meta
        image.transport_destination = self._destination
        await self.push_frame(image)
        self.frames_pushed += 1
        if tick.utterance is not None:
            audio = TTSAudioRawFrame(audio=float_to_pcm16(tick.audio), sample_rate=self.channel.playback_rate,
                                     num_channels=1, context_id=meta["context_id"])
            if r is not None:
                audio.interruptible = r.interruptible
        elif self.idle_audio:
            audio = OutputAudioRawFrame(audio=float_to_pcm16(tick.audio), sample_rate=self.channel.playback_rate,
                                        num_channels=1)
        else:
            return
        audio.metadata["lipforce"] = meta
        audio.transport_destination = self._destination
        await self.push_frame(audio)
