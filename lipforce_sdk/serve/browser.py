"""Headless Chromium on the served page, driven over the DevTools protocol (no extra packages):
the browser test, the README's screenshot and the glass-to-glass latency benchmark use it.

``async with Browser(url) as b: await b.type_and_say("Hello")``; ``await b.eval("window.lipforce.frames")``.
The page records, in ``?measure=1`` mode, every displayed frame (time, the server's ``--stamp``
numbers, the mouth region's change) and the received sound's level every 5 ms.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

__all__ = ["Browser", "Page", "chromium_path", "measure_page", "tone_wav"]

STARTUP_S = 60.0  # how long Chromium may take to open its DevTools endpoint (tens of seconds on a loaded 2-core machine)


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


class Page:
    """One tab, over its own DevTools websocket."""

    def __init__(self, browser: "Browser", target: dict):
        self.browser, self.target = browser, target
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.ws = None

    async def _attach(self) -> "Page":
        self.ws = await self.browser.http.ws_connect(self.target["webSocketDebuggerUrl"], max_msg_size=64 << 20)
        self._reader = asyncio.ensure_future(self._read())
        await self.send("Page.enable")
        await self.send("Runtime.enable")
        return self

    async def _read(self) -> None:
        async for msg in self.ws:
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(data)

    async def send(self, method: str, **params) -> dict:
        i = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[i] = fut
        await self.ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
        data = await asyncio.wait_for(fut, 30)
        if "error" in data:
            raise RuntimeError(f"{method}: {data['error']}")
        return data.get("result", {})

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def eval(self, expr: str):
        r = await self.send("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"page error in {expr!r}: {r['exceptionDetails'].get('text')}")
        return r["result"].get("value")

    async def wait_for(self, expr: str, timeout: float = 30.0):
        t_end = time.monotonic() + timeout
        while True:
            v = await self.eval(expr)
            if v:
                return v
            if time.monotonic() > t_end:
                raise TimeoutError(f"{expr!r} still false after {timeout} s")
            await asyncio.sleep(0.1)

    async def type_and_say(self, text: str) -> float:
        """Type ``text`` into the page's box and press Say, as a visitor does; returns the page's
        ``performance.now()`` at the press."""
        await self.eval("document.getElementById('text').value = ''; document.getElementById('text').focus()")
        await self.send("Input.insertText", text=text)
        return await self.eval("(() => { const t = performance.now(); document.getElementById('sayButton').click(); "
                               "return t; })()")

    async def screenshot(self, path: str | os.PathLike) -> None:
        r = await self.send("Page.captureScreenshot", format="png")
        with open(path, "wb") as f:
            f.write(base64.b64decode(r["data"]))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
            self._reader.cancel()


class Browser:
    """A headless Chromium process. ``async with Browser(url) as b``: ``b.page`` is a tab on
    ``url`` (``b.eval`` etc. go to it); ``await b.open(url)`` opens another tab."""

    def __init__(self, url: str | None = None, width: int = 820, height: int = 900):
        self.url, self.size = url, (width, height)
        self.proc: subprocess.Popen | None = None
        self.http = None
        self.page: Page | None = None
        self.port: int | None = None

    async def __aenter__(self) -> "Browser":
        import aiohttp

        exe = chromium_path()
        if exe is None:
            raise RuntimeError("no Chromium found; apt-get install chromium")
        flags = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--mute-audio",
                 "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                 "--autoplay-policy=no-user-gesture-required", "--disable-background-timer-throttling",
                 "--disable-renderer-backgrounding", "--disable-backgrounding-occluded-windows",
                 f"--window-size={self.size[0]},{self.size[1]}", "--remote-debugging-port=0"]
        for attempt in range(2):  # a Chromium that exits at start (seen once in a loaded CI run) is started again,
            self._profile = tempfile.mkdtemp(prefix="lipforce_chromium_")  # with a fresh profile
            self.proc = subprocess.Popen([exe, *flags, f"--user-data-dir={self._profile}", "about:blank"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            try:
                read = asyncio.get_running_loop().run_in_executor(None, self._devtools_port)
                try:  # its reader gives up after STARTUP_S, but only when a line comes: a silent one is killed here
                    self.port = await asyncio.wait_for(asyncio.shield(read), STARTUP_S + 5)
                except asyncio.TimeoutError:
                    self.proc.kill()
                    await read  # the pipe closed: its reader raises with what Chromium said
                break
            except RuntimeError:
                self.proc.kill()
                self.proc.wait()
                shutil.rmtree(self._profile, ignore_errors=True)
                if attempt:
                    raise
        self.http = aiohttp.ClientSession()
        async with self.http.get(f"http://127.0.0.1:{self.port}/json") as r:
            targets = await r.json()
        self.page = await Page(self, next(t for t in targets if t.get("type") == "page"))._attach()
        if self.url:
            await self.page.goto(self.url)
        return self

    async def open(self, url: str) -> Page:
        """Another tab, in a window of its own (a background tab would not render its video)."""
        async with self.http.get(f"http://127.0.0.1:{self.port}/json/version") as r:
            browser_ws = (await r.json())["webSocketDebuggerUrl"]
        ws = await self.http.ws_connect(browser_ws)
        try:
            await ws.send_str(json.dumps({"id": 1, "method": "Target.createTarget",
                                          "params": {"url": "about:blank", "newWindow": True}}))
            tid = None
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("id") == 1:
                    tid = data["result"]["targetId"]
                    break
        finally:
            await ws.close()
        async with self.http.get(f"http://127.0.0.1:{self.port}/json") as r:
            target = next(t for t in await r.json() if t.get("id") == tid)
        page = await Page(self, target)._attach()
        await page.goto(url)
        return page

    def _devtools_port(self) -> int:
        t_end = time.monotonic() + STARTUP_S  # a loaded 2-core machine can take tens of seconds
        seen, ended = [], True
        for line in self.proc.stderr:
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                return int(m.group(1))
            seen = (seen + [line.rstrip()])[-8:]
            if time.monotonic() > t_end:
                ended = False
                break
        try:  # its output ended: it is exiting (not yet reaped on a loaded machine, so wait for it)
            code = self.proc.wait(timeout=10) if ended else self.proc.poll()
        except subprocess.TimeoutExpired:
            code = None
        raise RuntimeError("Chromium did not start its DevTools endpoint ("
                           + (f"still running after {STARTUP_S:g} s" if code is None or code == -9
                              else f"exit code {code}")
                           + "); its last output:\n" + "\n".join(seen))

    # the first tab's methods
    async def eval(self, expr: str):
        return await self.page.eval(expr)

    async def wait_for(self, expr: str, timeout: float = 30.0):
        return await self.page.wait_for(expr, timeout)

    async def type_and_say(self, text: str) -> float:
        return await self.page.type_and_say(text)

    async def screenshot(self, path: str | os.PathLike) -> None:
        await self.page.screenshot(path)

    def kill(self) -> None:
        """End the browser at once, without a word to the server (a machine that vanished)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)

    async def __aexit__(self, *exc) -> None:
        if self.page is not None:
            if self.proc is not None and self.proc.poll() is None:
                try:  # leave the page as a visitor does (its pagehide tells the server)
                    await asyncio.wait_for(self.page.goto("about:blank"), 5)
                    await asyncio.sleep(0.3)
                except Exception:  # noqa: BLE001 - the browser may be gone
                    pass
            await self.page.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self._profile, ignore_errors=True)


TONE_FRAMES = (10, 30, 50, 70)  # frames of the measuring WAV where a 1 kHz tone starts


def tone_wav(sample_rate: int = 16000, fps: int = 25) -> bytes:
    """4 s of silence with 200 ms tone bursts starting exactly at ``TONE_FRAMES``: their onsets
    in the page's sound, against the frames stamped with the same numbers, give the offset."""
    import io
    import wave

    import numpy as np

    spf = sample_rate // fps
    x = np.zeros(spf * 80, np.float32)
    burst = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(5 * spf) / sample_rate)
    for k in TONE_FRAMES:
        x[k * spf:k * spf + burst.size] = burst
    b = io.BytesIO()
    with wave.open(b, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes((x * 32767).astype("<i2").tobytes())
    return b.getvalue()


# the page's received sound as played out so far (WebRTC stats): seconds of audio its output took, and when
AUDIO_PLAYED_JS = """(async () => { let played = null;
  (await window.lipforce.pc.getStats()).forEach((s) => {
    if (s.type === "inbound-rtp" && s.kind === "audio") played = s.totalSamplesDuration; });
  return JSON.stringify({ now: performance.now(), played }); })()"""


async def _audio_played(b) -> tuple[float, float | None]:
    d = json.loads(await b.eval(AUDIO_PLAYED_JS))
    return d["now"] / 1000.0, d["played"]


async def measure_page(url: str, token: str | None, text: str, screenshot: str | os.PathLike | None = None,
                       idle_s: float = 2.0) -> dict:
    """Open the page of a server started with ``--stamp`` (and an avatar whose loop is one
    picture, so that an idle mouth does not move), idle, type ``text`` and press Say, then post
    ``tone_wav()`` to the same session. Returns what the page saw:

    - ``fps``: frames displayed per second over the whole visit;
    - ``mouth_idle`` / ``mouth_speaking``: mean change of the mouth region between displayed
      frames (0-255 levels) while idle and while the typed text plays;
    - ``av_offset_ms``: per tone burst, when the page's audio graph had its onset (placed to the
      sample, on the audio clock) minus the video frame callback of the frame stamped with the
      burst's frame (positive: sound later); the onsets are taken in order where the page heard one
      per burst, else the one nearest each burst's frame within 500 ms; the two utterances are told
      apart by the id stamped in row 2; ``av_offset_presented_ms``: the same between when the onset
      reaches the audio output (``getOutputTimestamp``) and the frame's expected display time (both
      include the browser's own output estimates, which a headless one makes up);
    - ``audio_output_rate``: seconds of received sound the page's audio output played per second
      over the visit (1.0 on a sound card; a headless browser's stand-in output, starved of CPU,
      falls behind and its sound plays that much later, whatever the sender did);
      ``audio_output_lag_ms``: how far it fell behind over the visit, (1 - rate) * the visit's length;
    - ``tone_onsets_heard`` / ``tone_frames_shown``: tone onsets the page heard after the WAV was
      posted, and frames it showed of that utterance (what the offsets could be matched from);
    - ``text_to_frame_ms``: Say pressed -> the utterance's first frame displayed;
      ``wav_to_frame_ms``: the WAV posted -> its first frame displayed;
    - ``sessions``, ``backend`` from the server.
    """
    import aiohttp
    import numpy as np

    q = "?measure=1" + (f"&token={token}" if token else "")
    async with Browser(url.rstrip("/") + "/" + q) as b:
        await b.wait_for("window.lipforce && window.lipforce.session && window.lipforce.box && "
                         "window.lipforce.analyser && window.lipforce.frames > 25", 60)
        t0, played0 = await _audio_played(b)
        await asyncio.sleep(idle_s)
        sid = await b.eval("window.lipforce.session")
        t_press = await b.type_and_say(text)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession(headers=headers) as http:
            async def utterances():
                async with http.get(url.rstrip("/") + "/stats", params={"session": sid}) as r:
                    return (await r.json())["peers"][0]["utterances"]

            async def shown(n_utterances: int):
                """Until the server has shown the ``n_utterances``-th utterance whole (one that waits
                at its start, rendering slower than real time, plays later than its length says)."""
                t_end = time.monotonic() + 60
                while time.monotonic() < t_end:
                    us = await utterances()
                    if len(us) >= n_utterances and us[-1]["shown"] >= us[-1]["frames"]:
                        break
                    await asyncio.sleep(0.2)

            await shown(1)
            await asyncio.sleep(1.0)
            t_post = await b.eval("performance.now()")
            async with http.post(url.rstrip("/") + f"/say?session={sid}", data=tone_wav(),
                                 headers={"Content-Type": "audio/wav"}) as r:
                if r.status != 200:
                    raise RuntimeError(f"/say: {r.status} {await r.text()}")
            await asyncio.sleep(80 / 25)
            await shown(2)
            await asyncio.sleep(1.5)
            async with http.get(url.rstrip("/") + "/stats", params={"session": sid}) as r:
                stats = await r.json()
        if screenshot is not None:
            await b.eval("document.getElementById('text').value = " + json.dumps(text))
            await b.screenshot(screenshot)
        t1, played1 = await _audio_played(b)
        data = json.loads(await b.eval("JSON.stringify({log: window.lipforce.log, onsets: window.lipforce.onsets})"))
    log = data["log"]
    t_all = np.array([e["t"] for e in log])
    log = [e for e in log if e["stamp"] >= 0]  # a stamp the coding damaged (-1): that frame is left out below
    t = np.array([e["t"] for e in log])
    st = np.array([e["stamp"] for e in log])
    ut = np.array([e["utterance"] for e in log])  # the utterance's id (row 2; 0 idle, -1 damaged)
    diff = np.array([np.nan if e["diff"] is None else e["diff"] for e in log])
    ids = list(dict.fromkeys(int(u) for u, s in zip(ut, st) if u > 0 and s > 0))  # in the order shown
    if len(ids) < 2:
        raise RuntimeError(f"the page showed {len(ids)} utterance(s), expected 2")
    first, tone = (ut == ids[0]) & (st > 0), (ut == ids[-1]) & (st > 0)  # the typed text, the WAV
    idle = (st == 0) & (t < t_press)
    idle[:5] = False
    disp = np.array([e["display"] for e in log])
    tt, dd, ss = t[tone], disp[tone], st[tone]
    onsets = [o for o in data.get("onsets") or [] if o["decoded"] > t_post]

    def frame_time(times, k):
        """When the frame stamped ``k + 1`` came up (between its neighbours where its callback was skipped)."""
        hit = np.flatnonzero(ss == k + 1)
        if hit.size:
            return float(times[hit[0]])
        before, after = np.flatnonzero(ss < k + 1), np.flatnonzero(ss > k + 1)
        if not before.size or not after.size:
            return None
        i, j = before[-1], after[0]
        return float(times[i] + (times[j] - times[i]) * (k + 1 - ss[i]) / (ss[j] - ss[i]))

    played = None if played0 is None or played1 is None else played1 - played0  # seconds of sound output took
    # each burst's onset: the page heard one per burst, in order (however late its output played
    # them); where it heard more or fewer, the onset nearest the burst's frame, within 500 ms
    frame_at = [frame_time(tt, k) for k in TONE_FRAMES]
    if len(onsets) == len(TONE_FRAMES):
        heard = list(onsets)
    else:
        heard = []
        for tv in frame_at:
            near = [o for o in onsets if tv is not None and abs(o["decoded"] - tv) < 500.0]
            heard.append(min(near, key=lambda o: abs(o["decoded"] - tv)) if near else None)
    offsets, presented = [], []
    for k, tv, o in zip(TONE_FRAMES, frame_at, heard):
        if o is None or tv is None:
            continue
        dv = frame_time(dd, k)
        offsets.append(float(o["decoded"] - tv))
        presented.append(float(o["played"] - dv))
    return {
        "fps": float(1000.0 * (len(t_all) - 1) / (t_all[-1] - t_all[0])),
        "frames": int(len(t_all)), "stamps_unreadable": int(len(t_all) - len(t)),
        "mouth_idle": float(np.nanmean(diff[idle])),
        "mouth_speaking": float(np.nanmean(diff[first])),
        "av_offset_ms": offsets,
        "av_offset_presented_ms": presented,
        "tone_onsets_heard": len(onsets), "tone_frames_shown": int(np.count_nonzero(ss > 0)),
        "audio_output_rate": None if played is None else float(played / (t1 - t0)),
        "audio_output_lag_ms": None if played is None else float(1000.0 * ((t1 - t0) - played)),
        "text_to_frame_ms": float(t[first][0] - t_press),
        "wav_to_frame_ms": float(t[tone][0] - t_post),
        "sessions": stats["sessions"],
        "backend": stats["backend"],
        "server_latency_ms": [u["latency_ms"] for u in stats["peers"][0]["utterances"]],
        "stalls": [u["stalls"] for u in stats["peers"][0]["utterances"]],
    }
