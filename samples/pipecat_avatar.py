"""The lipforce avatar in a pipecat pipeline, served to a browser by pipecat's SmallWebRTC transport.

    pip install "lipforce[pipecat,serve]"      # pipecat-ai, aiortc, aiohttp (and apt-get install espeak-ng)
    python samples/pipecat_avatar.py           # then open http://127.0.0.1:7860/ and press Connect
    python samples/pipecat_avatar.py --model DIR --avatar DIR --port 7860 --host 127.0.0.1

Each browser that connects gets its own pipeline (the engine, the avatar and the render thread are
shared)::

    transport.input() -> EspeakTTSService -> LipforceVideoService -> transport.output()

The TTS is espeak-ng (``lipforce_sdk.serve.speech.speak``; no cloud): it says a few scripted
sentences when the browser connects, then whatever is typed in the page's box (sent over the
WebRTC data channel as ``{"type": "say", "text": ...}``); "Stop" sends ``{"type": "stop"}``, which
queues an ``InterruptionFrame``: the avatar is cut at once and idles. In a voice agent the same
service goes between the LLM's TTS and ``transport.output()``, and pipecat's own interruptions (the
user starts speaking) cut the avatar the same way.

Without a browser, ``--client URL`` connects with aiortc, as the page does, and prints what arrives
(frames per second, audio, the picture changing while the avatar speaks)::

    python samples/pipecat_avatar.py &  python samples/pipecat_avatar.py --client http://127.0.0.1:7860/

The page does no STUN (``RTCPeerConnection()`` with no ICE servers): loopback or a LAN.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>lipforce + pipecat</title>
<style>body{font-family:sans-serif;margin:2em}video{width:384px;height:384px;background:#222}
input{width:300px}</style></head>
<body>
<h3>lipforce avatar in a pipecat pipeline (SmallWebRTC)</h3>
<video id="v" autoplay playsinline></video><br>
<button id="go">Connect</button>
<input id="t" placeholder="something to say" disabled><button id="say" disabled>Say</button>
<button id="stop" disabled>Stop</button> <span id="st"></span>
<script>
const $ = (id) => document.getElementById(id);
let pc, dc;
$("go").onclick = async () => {
  $("go").disabled = true;
  pc = new RTCPeerConnection();
  const stream = new MediaStream();
  $("v").srcObject = stream;
  pc.ontrack = (e) => { stream.addTrack(e.track); $("v").play().catch(() => {}); };
  pc.addTransceiver("audio", {direction: "recvonly"});  // pipecat: transceiver 0 is audio, 1 is video
  pc.addTransceiver("video", {direction: "recvonly"});
  dc = pc.createDataChannel("chat");
  dc.onopen = () => { for (const b of ["t", "say", "stop"]) $(b).disabled = false; };
  pc.onconnectionstatechange = () => { $("st").textContent = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((ok) => { if (pc.iceGatheringState === "complete") ok();
    else pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && ok(); });
  const r = await fetch("/api/offer", {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({sdp: pc.localDescription.sdp, type: pc.localDescription.type})});
  await pc.setRemoteDescription(await r.json());
};
$("say").onclick = () => {
  if ($("t").value) dc.send(JSON.stringify({type: "say", text: $("t").value}));
  $("t").value = "";
};
$("t").onkeydown = (e) => { if (e.key === "Enter") $("say").onclick(); };
$("stop").onclick = () => dc.send(JSON.stringify({type: "stop"}));
setInterval(() => dc && dc.readyState === "open" && dc.send("ping"), 1000);  // pipecat's keep-alive
</script></body></html>
"""

SCRIPT = [
    "Hello! I am a lip synced avatar, running inside a pipecat pipeline.",
    "My voice comes from espeak, and my face is rendered by lipforce, twenty five frames a second.",
    "Type something in the box, and I will say it.",
]


def make_tts_class():
    from pipecat.frames.frames import ErrorFrame, TTSAudioRawFrame
    from pipecat.services.settings import TTSSettings
    from pipecat.services.tts_service import TTSService

    from lipforce_sdk.serve.speech import speak

    class EspeakTTSService(TTSService):
        """espeak-ng as a pipecat TTS service: the whole sentence is synthesized (in a thread), then
        pushed as 40 ms ``TTSAudioRawFrame`` s at the pipeline's output rate."""

        def __init__(self, voice: str = "en-us", **kwargs):
            super().__init__(push_start_frame=True, push_stop_frames=True,
                             settings=TTSSettings(model=None, voice=voice, language=None), **kwargs)
            self._voice = voice

        def can_generate_metrics(self) -> bool:
            return True

        async def run_tts(self, text: str, context_id: str):
            try:
                x = await asyncio.to_thread(speak, text, self.sample_rate, self._voice)
            except Exception as e:  # noqa: BLE001 - reported down the pipeline
                yield ErrorFrame(error=f"espeak-ng: {e}")
                return
            await self.stop_ttfb_metrics()
            pcm = (x.clip(-1, 1) * 32767).astype("<i2").tobytes()
            step = 2 * self.sample_rate // 25
            for i in range(0, len(pcm), step):
                yield TTSAudioRawFrame(pcm[i:i + step], self.sample_rate, 1, context_id=context_id)

    return EspeakTTSService


async def run_session(connection, engine, avatar, pool, voice: str, sample_rate: int):
    """One browser's pipeline, until it disconnects."""
    from pipecat.frames.frames import InterruptionFrame, TTSSpeakFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from lipforce_sdk.serve.pipecat_service import LipforceVideoService

    avatar_service = LipforceVideoService(engine, avatar, pool=pool)
    w, h = avatar_service.video_size
    transport = SmallWebRTCTransport(connection, TransportParams(
        audio_in_enabled=False, audio_out_enabled=True, video_out_enabled=True, video_out_is_live=True,
        video_out_width=w, video_out_height=h, video_out_framerate=25))
    tts = make_tts_class()(voice=voice)
    pipeline = Pipeline([transport.input(), tts, avatar_service, transport.output()])
    worker = PipelineWorker(pipeline, params=PipelineParams(audio_out_sample_rate=sample_rate),
                            enable_rtvi=False, idle_timeout_secs=None)

    @transport.event_handler("on_client_connected")
    async def on_connected(transport, client):
        await worker.queue_frames([TTSSpeakFrame(s) for s in SCRIPT])

    @transport.event_handler("on_app_message")
    async def on_message(transport, message, sender):
        if isinstance(message, dict) and message.get("type") == "say" and str(message.get("text", "")).strip():
            await worker.queue_frame(TTSSpeakFrame(str(message["text"])[:500]))
        elif isinstance(message, dict) and message.get("type") == "stop":
            await worker.queue_frame(InterruptionFrame())

    @transport.event_handler("on_client_disconnected")
    async def on_disconnected(transport, client):
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


def serve(a) -> int:
    from aiohttp import web
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection

    from lipforce_sdk.serve import RenderPool, load_avatar, load_engine, model_for
    from lipforce_sdk.serve.speech import espeak_path

    if espeak_path() is None:
        print("espeak-ng is not installed (apt-get install espeak-ng)", file=sys.stderr)
        return 1
    # as `lipforce serve`: by default the bundled photo enrolled as an avatar (a model with its avatar)
    model = model_for(a.model, a.avatar)
    engine = load_engine(model, a.backend)
    avatar = load_avatar(engine, a.avatar, model)
    pool = RenderPool(engine)  # one render thread for every session
    sessions: set = set()

    async def index(request):
        return web.Response(text=PAGE, content_type="text/html")

    async def offer(request):
        body = await request.json()
        connection = SmallWebRTCConnection()
        await connection.initialize(sdp=body["sdp"], type=body["type"])
        task = asyncio.create_task(run_session(connection, engine, avatar, pool, a.voice, a.sample_rate))
        sessions.add(task)
        task.add_done_callback(sessions.discard)
        return web.json_response(connection.get_answer())

    async def on_shutdown(app):
        for t in list(sessions):
            t.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)
        pool.close()

    app = web.Application()
    app.add_routes([web.get("/", index), web.post("/api/offer", offer)])
    app.on_shutdown.append(on_shutdown)
    print(f"pipecat avatar: {engine!r}, avatar {avatar.num_frames} frames; open http://{a.host}:{a.port}/",
          flush=True)
    web.run_app(app, host=a.host, port=a.port, print=None)
    return 0


async def client(url: str, seconds: float, say: str | None) -> dict:
    """Connect as the page does (aiortc), record what arrives for ``seconds``."""
    import aiohttp
    import numpy as np
    from aiortc import RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    pc = RTCPeerConnection()
    pc.addTransceiver("audio", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    dc = pc.createDataChannel("chat")
    got = {"video_t": [], "mouth": [], "audio_samples": 0, "audio_peak": 0.0}
    tasks = []

    async def read(track):
        try:
            while True:
                f = await track.recv()
                if track.kind == "video":
                    img = f.to_ndarray(format="rgb24")
                    got["video_t"].append(time.monotonic())
                    got["mouth"].append(img[img.shape[0] // 2:, :, :].astype(np.float32))
                    got["size"] = (img.shape[1], img.shape[0])
                else:
                    x = f.to_ndarray()
                    got["audio_samples"] += f.samples
                    got["audio_peak"] = max(got["audio_peak"], float(np.abs(x).max()) / 32768)
        except MediaStreamError:
            pass

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(read(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(url.rstrip("/") + "/api/offer",
                             json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type}) as r:
            ans = await r.json()
    await pc.setRemoteDescription(RTCSessionDescription(sdp=ans["sdp"], type=ans["type"]))
    t_end = time.monotonic() + seconds
    sent = False
    while time.monotonic() < t_end:
        await asyncio.sleep(0.5)
        if dc.readyState == "open":
            dc.send("ping")
            if say and not sent and time.monotonic() > t_end - seconds / 2:
                dc.send(json.dumps({"type": "say", "text": say}))
                sent = True
    await pc.close()
    for t in tasks:
        t.cancel()
    t = np.array(got["video_t"])
    m = got.pop("mouth")
    change = [float(np.abs(b - a).mean()) for a, b in zip(m, m[1:])]
    return {"connection": pc.connectionState, "video_frames": len(t),
            "fps": None if len(t) < 2 else round((len(t) - 1) / (t[-1] - t[0]), 2), "size": got.get("size"),
            "audio_seconds": round(got["audio_samples"] / 48000, 2), "audio_peak": round(got["audio_peak"], 3),
            "frames_changing": sum(c > 0.5 for c in change), "frames_still": sum(c <= 0.5 for c in change)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--model", default=None, help="model directory; an enrolled one brings its avatar (default: "
                                                 "the bundled photo enrolled, lipforce_sdk/assets/photo_avatar)")
    p.add_argument("--avatar", default=None, metavar="DIR",
                   help="a prepared avatar folder (default: the model's, else the bundled photo clip's first 6 s)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt"])
    p.add_argument("--voice", default="en-us", help="espeak-ng voice")
    p.add_argument("--sample-rate", type=int, default=24000, help="the pipeline's output audio rate")
    p.add_argument("--client", metavar="URL", default=None,
                   help="instead of serving: connect to URL as the page does and print what arrives")
    p.add_argument("--seconds", type=float, default=12.0, help="--client: how long to watch")
    p.add_argument("--say", default="This sentence was typed by the test client.", help="--client: text to send")
    a = p.parse_args(argv)
    if a.client:
        print(json.dumps(asyncio.run(client(a.client, a.seconds, a.say))), flush=True)
        return 0
    return serve(a)


if __name__ == "__main__":
    sys.exit(main())
