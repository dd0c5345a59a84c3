"""A viewer in Python: connects to ``lipforce serve`` over WebRTC as the page does and records what
arrives (each video frame and 20 ms of audio with its arrival time). For tests, benchmarks and
programs that want the avatar's frames without a browser."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Viewer", "Received"]


@dataclass
class Received:
    video_t: list = field(default_factory=list)  # arrival, time.monotonic()
    video: list = field(default_factory=list)  # [H, W, 3] uint8 RGB
    video_pts: list = field(default_factory=list)  # the sender's timestamp (its time_base: video_clock)
    video_clock: int = 90000
    audio_t: list = field(default_factory=list)
    audio: list = field(default_factory=list)  # mono float32 at audio_rate
    audio_rate: int = 48000


class Viewer:
    """``async with Viewer(url, token) as v: await v.say("hello")`` ... ``v.received``."""

    def __init__(self, url: str, token: str | None = None, keep_video: bool = True):
        self.url = url.rstrip("/")
        self.token = token
        self.keep_video = keep_video
        self.received = Received()
        self.session: str | None = None
        self._tasks: list[asyncio.Task] = []
        self.pc = None
        self.http = None

    @property
    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    async def __aenter__(self) -> "Viewer":
        import aiohttp
        from aiortc import RTCPeerConnection

        self.http = aiohttp.ClientSession(headers=self.headers)
        self.pc = RTCPeerConnection()
        try:
            await self._connect()
        except BaseException:
            await self.close()
            raise
        return self

    async def _connect(self) -> None:
        from aiortc import RTCSessionDescription

        pc = self.pc
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")

        @pc.on("track")
        def on_track(track):
            self._tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with self.http.post(self.url + "/offer", json={"sdp": pc.localDescription.sdp,
                                                              "type": pc.localDescription.type}) as r:
            body = await r.json()
            if r.status != 200:
                raise RuntimeError(f"/offer: {r.status} {body.get('error')}")
        self.session = body["session"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))

    async def _consume(self, track) -> None:
        from aiortc.mediastreams import MediaStreamError

        rec = self.received
        try:
            while True:
                f = await track.recv()
                t = time.monotonic()
                if track.kind == "video":
                    rec.video_t.append(t)
                    rec.video_pts.append(f.pts)
                    rec.video_clock = round(1 / f.time_base) if f.time_base else rec.video_clock
                    if self.keep_video:
                        rec.video.append(f.to_ndarray(format="rgb24"))
                else:
                    a = f.to_ndarray()
                    a = a.reshape(-1, len(f.layout.channels)).mean(axis=1) if f.format.is_packed else a.mean(axis=0)
                    scale = 32768.0 if a.dtype == np.int16 or f.format.name.startswith("s16") else 1.0
                    rec.audio_t.append(t)
                    rec.audio.append(np.asarray(a, np.float32) / scale)
                    rec.audio_rate = f.sample_rate
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def wait_frames(self, n: int, timeout: float = 20.0) -> None:
        t_end = time.monotonic() + timeout
        while len(self.received.video_t) < n:
            if time.monotonic() > t_end:
                raise TimeoutError(f"{len(self.received.video_t)} of {n} video frames in {timeout} s")
            await asyncio.sleep(0.02)

    async def post(self, path: str, **kw) -> tuple[int, dict]:
        async with self.http.post(self.url + path, **kw) as r:
            return r.status, await r.json()

    async def say(self, text: str | None = None, wav: bytes | None = None) -> dict:
        if wav is not None:
            status, body = await self.post(f"/say?session={self.session}", data=wav,
                                           headers={"Content-Type": "audio/wav"})
        else:
            status, body = await self.post("/say", json={"text": text, "session": self.session})
        if status != 200:
            raise RuntimeError(f"/say: {status} {body.get('error')}")
        return body

    async def stats(self) -> dict:
        async with self.http.get(self.url + "/stats", params={"session": self.session}) as r:
            return await r.json()

    async def close(self, vanish: bool = False) -> None:
        """Hang up (``vanish``: without telling the server, as a closed laptop does)."""
        for t in self._tasks:
            t.cancel()
        if not vanish and self.session:
            try:
                await self.post(f"/close?session={self.session}")
            except Exception:  # noqa: BLE001 - the server may be gone already
                pass
        if self.pc is not None and not vanish:
            await self.pc.close()
        if self.http is not None:
            await self.http.close()

    async def __aexit__(self, *exc) -> None:
        await self.close()
