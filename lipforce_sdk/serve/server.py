"""``lipforce serve``: a live avatar over WebRTC, with a page, an HTTP endpoint and limits.

Every page visitor (a WebRTC peer connection) gets a ``Channel`` on the one ``Engine``: video and
audio in the same connection, both from the channel's 25 fps clock (``Channel.tick``). Endpoints:

- ``GET /``: the page (the avatar, a text box, latency / FPS / backend);
- ``POST /offer`` ``{"sdp", "type"}`` -> the answer and the viewer's ``session`` id;
- ``POST /say``: ``{"text": ..., "session": ...}``, or a WAV body (``Content-Type: audio/wav``,
  ``?session=``); without a session it goes to every viewer (a kiosk's dialogue engine);
- ``POST /stop`` (cut what is being said), ``POST /close`` (end a session), ``GET /stats``.

It binds to loopback unless told otherwise; with a token every endpoint and the page want it
(``Authorization: Bearer TOKEN`` or ``?token=TOKEN``); text, WAV size and duration, request
bodies and concurrent sessions are limited (``ServeLimits``). Bad requests get a 4xx with a
reason and leave the other viewers alone.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import fractions
import functools
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

from .channel import Channel, FrameClock, RenderPool, Tick
from .speech import SpeechInputError, decode_wav, speak

__all__ = ["ServeLimits", "AvatarServer", "ServerThread", "stamp_frame", "read_stamp"]

log = logging.getLogger("lipforce.serve")

VIDEO_CLOCK = 90000
STALE_S = 0.1  # sound queued longer than this when the sender asks for it is dropped (it would arrive in a burst)
PLAYBACK_RATE = 48000  # Opus's own rate: aiortc's encoder takes 20 ms frames as they are, with no resampling delay
STAMP_BITS, STAMP_CELL = 16, 8


@dataclass
class ServeLimits:
    max_sessions: int = 8
    max_text_chars: int = 500
    max_wav_bytes: int = 4 << 20
    max_seconds: float = 30.0  # of one utterance (text or WAV)
    connect_timeout: float = 30.0  # an offer that never connects is dropped after this


def stamp_frame(img: np.ndarray, value: int, row: int = 0) -> np.ndarray:
    """Write ``value`` (16 bits) into row ``row`` of the frame's top-left corner as black/white 8x8
    cells, then its complement in the 16 cells after them (a measurement aid: with ``--stamp`` row 0
    holds the utterance frame number + 1, 0 when idle, row 1 the avatar's loop frame under the
    picture, row 2 the utterance's id, 0 when idle). The frame must be at least 256 pixels wide."""
    if img.shape[1] < 2 * STAMP_BITS * STAMP_CELL or img.shape[0] < (row + 1) * STAMP_CELL:
        raise ValueError(f"a {img.shape[1]}x{img.shape[0]} frame is too small for stamp row {row} "
                         f"(needs {2 * STAMP_BITS * STAMP_CELL} pixels wide)")
    out = img.copy()
    y = row * STAMP_CELL
    bits = (value & 0xFFFF) | ((~value & 0xFFFF) << STAMP_BITS)
    for b in range(2 * STAMP_BITS):
        out[y:y + STAMP_CELL, b * STAMP_CELL:(b + 1) * STAMP_CELL] = 255 if (bits >> b) & 1 else 0
    return out


def read_stamp(img: np.ndarray, row: int = 0) -> int:
    """The value ``stamp_frame`` wrote, or -1 where the lossy coding damaged it (a cell that does
    not match its complement: a video encoder short of bits may leave part of a stamp from an
    earlier frame). Each cell's mean against mid-grey."""
    bits, y = 0, row * STAMP_CELL
    for b in range(2 * STAMP_BITS):
        if img[y + 1:y + STAMP_CELL - 1, b * STAMP_CELL + 1:(b + 1) * STAMP_CELL - 1].mean() > 127:
            bits |= 1 << b
    v = bits & 0xFFFF
    return v if (bits >> STAMP_BITS) == (~v & 0xFFFF) else -1


def _rate(times) -> float | None:
    """Events per second over the times kept."""
    return None if len(times) < 2 else round((len(times) - 1) / max(times[-1] - times[0], 1e-6), 2)


class _Peer:
    """One viewer: its peer connection, channel, tracks and pacing task."""

    def __init__(self, server: "AvatarServer", sid: str):
        from aiortc import RTCPeerConnection

        self.server, self.id = server, sid
        self.pc = RTCPeerConnection()
        self.channel = Channel(server.engine, server.avatar, server.pool, playback_rate=PLAYBACK_RATE)
        video, audio = _tracks()
        self.video, self.audio = video(self), audio(self)
        self.created = time.monotonic()
        self.connected = False
        self._ticks: collections.deque = collections.deque(maxlen=2 * int(self.channel.fps))
        self._task: asyncio.Task | None = None
        self._stamp = 0
        self.closed = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._pace())

    async def _pace(self) -> None:
        clock = FrameClock(self.channel.fps)
        while not self.closed:
            tick = self.channel.tick()
            if self.server.stamp:  # a stall holds the picture: it keeps that frame's number
                if tick.position is not None or tick.utterance is None:
                    self._stamp = 0 if tick.position is None else tick.position + 1
                img = stamp_frame(stamp_frame(tick.image, self._stamp), tick.loop_frame, row=1)
                tick = dataclasses.replace(tick, image=stamp_frame(img, (tick.utterance or 0) & 0xFFFF, row=2))
            due = clock.due()
            self.video.put(tick, due)
            self.audio.put(tick, due)
            self._ticks.append(time.monotonic())
            await clock.next()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.channel.close()
        if self._task is not None:
            self._task.cancel()
        self.video.stop()
        self.audio.stop()
        await self.pc.close()

    def stats(self) -> dict:
        spf = self.channel.samples_per_frame
        utts = [{"id": u.id, "frames": u.n_frames(spf), "shown": u.shown, "stalls": u.stalls, "waited": u.waited,
                 "latency_ms": None if u.latency_ms is None else round(u.latency_ms, 1),
                 "cancelled": u.cancelled, "error": u.error} for u in self.channel.history]
        return {"session": self.id, "connected": self.connected, "speaking": self.channel.speaking,
                "fps": _rate(self._ticks), "frames_sent": self.video.sent,
                "sent_fps": _rate(self.video.sent_times), "frames_dropped": self.video.dropped,
                "utterances": utts[-8:]}


@functools.lru_cache(maxsize=1)
def _tracks():
    """The video and audio track classes (aiortc is an optional extra: imported on first use)."""
    import av
    from aiortc import MediaStreamTrack

    class VideoTrack(MediaStreamTrack):
        kind = "video"

        def __init__(self, peer: _Peer):
            super().__init__()
            self.fps = peer.channel.fps
            self.q: asyncio.Queue = asyncio.Queue(maxsize=8)
            self.sent = 0
            self.dropped = 0
            self.sent_times: collections.deque = collections.deque(maxlen=50)

        def put(self, tick: Tick, due: float) -> None:
            """``due``: when the frame was due on the viewer's clock (``FrameClock.due``)."""
            if self.q.full():  # the sender is behind (encoder, network): show the newest
                self.q.get_nowait()
                self.dropped += 1
            self.q.put_nowait((due, tick))

        async def recv(self):
            loop = asyncio.get_running_loop()
            due, tick = await self.q.get()
            while due < loop.time() - STALE_S and not self.q.empty():  # a late sender gets the newest picture
                due, tick = self.q.get_nowait()
                self.dropped += 1
            f = av.VideoFrame.from_ndarray(tick.image, format="rgb24")
            f.pts, f.time_base = round(tick.index * VIDEO_CLOCK / self.fps), fractions.Fraction(1, VIDEO_CLOCK)
            self.sent += 1
            self.sent_times.append(time.monotonic())
            return f

    class AudioTrack(MediaStreamTrack):
        kind = "audio"

        def __init__(self, peer: _Peer):
            super().__init__()
            self.rate = peer.channel.playback_rate
            self.fps = peer.channel.fps
            self.q: asyncio.Queue = asyncio.Queue(maxsize=64)

        def put(self, tick: Tick, due: float) -> None:
            """Two 20 ms packets per frame (aiortc's Opus sender stamps one per packet), the second
            due 20 ms after the first: evenly paced sound keeps the browser's jitter buffer short.
            Their timestamps are the frame's place on the viewer's clock (as the video's are), not a
            count of the samples sent: sound dropped as stale leaves a gap that the browser fills
            and plays on from, instead of playing everything after it that much later."""
            half = tick.audio.size // 2
            pts = round(tick.index * self.rate / self.fps)
            for k, part in enumerate((tick.audio[:half], tick.audio[half:])):
                if self.q.full():
                    self.q.get_nowait()
                self.q.put_nowait((due + 0.02 * k, pts + k * half, part))

        async def recv(self):
            loop = asyncio.get_running_loop()
            due, pts, part = await self.q.get()
            while due < loop.time() - STALE_S and not self.q.empty():
                due, pts, part = self.q.get_nowait()  # sound the sender was too late for: dropped, not bunched up
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            s16 = (np.clip(part, -1.0, 1.0) * 32767.0).astype(np.int16)[None, :]
            f = av.AudioFrame.from_ndarray(s16, format="s16", layout="mono")
            f.sample_rate, f.pts, f.time_base = self.rate, pts, fractions.Fraction(1, self.rate)
            return f

    return VideoTrack, AudioTrack


class AvatarServer:
    """The app: ``AvatarServer(engine, avatar).app()`` is an ``aiohttp.web.Application``."""

    def __init__(self, engine, avatar, limits: ServeLimits | None = None, token: str | None = None,
                 voice: str = "en-us", stamp: bool = False, silence: str | None = None, exemplars: bool = True):
        _tracks()  # aiortc present: fail here, not at the first viewer
        self.engine, self.avatar = engine, avatar
        self.limits = limits or ServeLimits()
        self.token = token or None
        self.voice, self.stamp = voice, stamp
        self.backend = getattr(engine.backend, "name", type(engine.backend).__name__)
        if stamp and avatar.frame_hw[1] < 2 * STAMP_BITS * STAMP_CELL:
            raise ValueError(f"--stamp needs frames at least {2 * STAMP_BITS * STAMP_CELL} pixels wide; "
                             f"this avatar's are {avatar.frame_hw[1]}")
        avatar.latents_for(engine)  # encode the loop once, before the first viewer
        self.pool = RenderPool(engine, silence=silence, exemplars=exemplars)
        lips = np.concatenate([avatar.face_keypoints(j).lips_outer for j in range(avatar.num_frames)])
        (x0, y0), (x1, y1) = lips.min(0), lips.max(0)
        pad, (h, w) = 0.25 * (x1 - x0), avatar.frame_hw
        self.mouth_box = [int(max(0, x0 - pad)), int(max(0, y0 - pad)), int(min(w, x1 + pad)), int(min(h, y1 + pad))]
        self.peers: dict[str, _Peer] = {}

    # ---- helpers ----
    def _authorized(self, request) -> bool:
        if self.token is None:
            return True
        got = request.query.get("token") or ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            got = auth[7:]
        return hmac.compare_digest(got.encode(), self.token.encode())

    @staticmethod
    def _error(status: int, msg: str):
        from aiohttp import web

        return web.json_response({"error": msg}, status=status)

    async def _json(self, request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
            raise _Bad(400, "the body is not JSON") from None
        if not isinstance(body, dict):
            raise _Bad(400, "the body must be a JSON object")
        return body

    def _targets(self, sid) -> list[_Peer]:
        if sid is None or sid == "":
            peers = [p for p in self.peers.values() if not p.closed]
            if not peers:
                raise _Bad(409, "no viewer is connected; open the page first")
            return peers
        if not isinstance(sid, str) or sid not in self.peers:
            raise _Bad(404, f"no session {str(sid)[:64]!r}")
        return [self.peers[sid]]

    # ---- routes ----
    def app(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            if request.path != "/health" and not self._authorized(request):
                return self._error(401, "a valid token is needed (Authorization: Bearer TOKEN or ?token=TOKEN)")
            try:
                return await handler(request)
            except _Bad as e:
                return self._error(e.status, e.msg)
            except web.HTTPRequestEntityTooLarge:
                return self._error(413, f"the body is larger than {self.limits.max_wav_bytes} bytes")

        app = web.Application(middlewares=[guard], client_max_size=self.limits.max_wav_bytes + 4096)
        app.router.add_get("/", self.page)
        app.router.add_get("/health", self.health)
        app.router.add_post("/offer", self.offer)
        app.router.add_post("/say", self.say)
        app.router.add_post("/stop", self.stop)
        app.router.add_post("/close", self.close_session)
        app.router.add_get("/stats", self.stats)
        app.on_startup.append(self._startup)
        app.on_shutdown.append(self._shutdown)
        return app

    async def _startup(self, app) -> None:
        # aiortc encodes every frame in the loop's default executor, each sender waiting for its own:
        # Python's default (cores + 4 threads) makes 8 viewers' 16 senders queue behind each other
        # (12 of 25 frames/s sent); give every sender a thread of its own.
        from concurrent.futures import ThreadPoolExecutor

        self._executor = ThreadPoolExecutor(max_workers=2 * self.limits.max_sessions + 4,
                                            thread_name_prefix="lipforce-encode")
        asyncio.get_running_loop().set_default_executor(self._executor)

    async def page(self, request):
        from aiohttp import web

        html = resources.files(__package__).joinpath("page.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def health(self, request):
        from aiohttp import web

        return web.json_response({"ok": True})

    async def offer(self, request):
        from aiohttp import web
        from aiortc import RTCSessionDescription

        body = await self._json(request)
        sdp, kind = body.get("sdp"), body.get("type")
        if not isinstance(sdp, str) or kind != "offer" or not sdp.startswith("v=0") or len(sdp) > 100_000:
            raise _Bad(400, 'expected {"sdp": "v=0...", "type": "offer"}')
        await self._reap()
        if len(self.peers) >= self.limits.max_sessions:
            raise _Bad(503, f"all {self.limits.max_sessions} sessions are in use; try again later")
        sid = uuid.uuid4().hex[:16]
        peer = _Peer(self, sid)
        self.peers[sid] = peer

        @peer.pc.on("connectionstatechange")
        async def on_state():
            st = peer.pc.connectionState
            if st == "connected":
                peer.connected = True
            elif st in ("failed", "closed"):
                await self._drop(sid)

        try:
            await peer.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            kinds = {t.kind for t in peer.pc.getTransceivers()}
            if not {"audio", "video"} <= kinds:
                raise ValueError("the offer must receive audio and video")
            for t in peer.pc.getTransceivers():
                t.direction = "sendonly"
                peer.pc.addTrack(peer.video if t.kind == "video" else peer.audio)
            answer = await peer.pc.createAnswer()
            await peer.pc.setLocalDescription(answer)
        except Exception as e:  # noqa: BLE001 - any parse/negotiation failure is the offer's
            await self._drop(sid)
            raise _Bad(400, f"the offer could not be answered: {type(e).__name__}: {str(e)[:200]}") from None
        peer.start()
        log.info("session %s opened (%d in use)", sid, len(self.peers))
        return web.json_response({"sdp": peer.pc.localDescription.sdp, "type": peer.pc.localDescription.type,
                                  "session": sid})

    async def say(self, request):
        from aiohttp import web

        posted = time.monotonic()
        ctype = request.content_type
        if ctype in ("audio/wav", "audio/x-wav", "audio/wave"):
            data = await request.read()
            if len(data) > self.limits.max_wav_bytes:
                raise _Bad(413, f"the WAV is larger than {self.limits.max_wav_bytes} bytes")
            targets = self._targets(request.query.get("session"))
            try:
                audio = decode_wav(data, self.engine.config.audio.sample_rate, self.limits.max_seconds)
            except SpeechInputError as e:
                raise _Bad(400, str(e)) from None
            what = f"WAV {audio.size / self.engine.config.audio.sample_rate:.1f} s"
        elif ctype == "application/json":
            body = await self._json(request)
            text = body.get("text")
            if not isinstance(text, str) or not text.strip():
                raise _Bad(400, 'expected {"text": "something to say"}')
            if len(text) > self.limits.max_text_chars:
                raise _Bad(413, f"the text has {len(text)} characters; the limit is {self.limits.max_text_chars}")
            targets = self._targets(body.get("session"))
            try:
                audio = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: speak(text, self.engine.config.audio.sample_rate, self.voice, 160,
                                        self.limits.max_seconds))
            except SpeechInputError as e:
                raise _Bad(413, f"the spoken text is too long: {e}") from None
            what = f"text {len(text)} chars"
        else:
            raise _Bad(415, "send JSON {\"text\": ...} or a WAV (Content-Type: audio/wav)")
        ids = {}
        for p in targets:
            ids[p.id] = p.channel.say(audio, posted=posted).id
        log.info("say %s -> %d session(s)", what, len(ids))
        return web.json_response({"utterances": ids, "seconds": round(audio.size / self.engine.config.audio.sample_rate, 3)})

    async def stop(self, request):
        from aiohttp import web

        sid = request.query.get("session")
        if sid is None and request.content_type == "application/json":
            sid = (await self._json(request)).get("session")
        for p in self._targets(sid):
            p.channel.stop()
        return web.json_response({"ok": True})

    async def close_session(self, request):
        from aiohttp import web

        sid = request.query.get("session")
        if not sid or sid not in self.peers:
            raise _Bad(404, f"no session {str(sid)[:64]!r}")
        await self._drop(sid)
        return web.json_response({"ok": True})

    async def stats(self, request):
        from aiohttp import web

        await self._reap()
        sid = request.query.get("session")
        peers = self._targets(sid) if sid else list(self.peers.values())
        return web.json_response({"backend": self.backend, "sessions": len(self.peers), "mouth_box": self.mouth_box,
                                  "max_sessions": self.limits.max_sessions, "limits": asdict(self.limits),
                                  "peers": [p.stats() for p in peers]})

    # ---- lifetime ----
    async def _drop(self, sid: str) -> None:
        p = self.peers.pop(sid, None)
        if p is not None:
            await p.close()
            log.info("session %s closed (%d in use)", sid, len(self.peers))

    async def _reap(self) -> None:
        """Drop offers that never connected within ``connect_timeout``."""
        now = time.monotonic()
        for sid, p in list(self.peers.items()):
            if not p.connected and now - p.created > self.limits.connect_timeout:
                await self._drop(sid)

    async def _shutdown(self, app) -> None:
        for sid in list(self.peers):
            await self._drop(sid)
        self.pool.close()


class _Bad(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status, self.msg = status, msg


class ServerThread:
    """An ``AvatarServer`` on its own event loop in a background thread (tests, benchmarks, an app
    that embeds the server): ``ServerThread(server)`` listens on a free loopback port (``.url``);
    ``close()`` shuts it down."""

    def __init__(self, server: AvatarServer, host: str = "127.0.0.1", port: int = 0):
        from aiohttp import web

        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.server, self.host, self.port = server, host, port
        self.url = f"http://{host}:{port}"
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(server.app())
        started = threading.Event()
        failed: list[BaseException] = []

        def run():
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self.runner.setup())
                self.loop.run_until_complete(web.TCPSite(self.runner, host, port).start())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                failed.append(e)
                started.set()
                return
            started.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="lipforce-serve", daemon=True)
        self.thread.start()
        started.wait(30)
        if failed:
            raise failed[0]

    def call(self, coro, timeout: float = 30.0):
        """Run a coroutine on the server's loop and wait for it."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
