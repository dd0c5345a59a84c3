"""Measure `lipforce serve` through a real browser (headless Chromium, loopback).

    python samples/serve_check.py latency --runs 5          # glass-to-glass latency, fps, A/V offset
    python samples/serve_check.py soak --clients 8 --seconds 60
    python samples/serve_check.py screenshot --out docs/images/serve_page.png

`latency`: per run a fresh page on one server (`lipforce serve`'s default: the bundled photo
enrolled as an avatar, a one-picture loop, ONNX Runtime; frames stamped with their number): idle, type a sentence and press Say, then
a WAV with tone bursts; prints a table (frames displayed per second, Say pressed -> first mouth
frame displayed, WAV posted -> its first frame displayed, sound-to-picture offset of each burst).
`soak`: N-1 tabs in one Chromium and one more Chromium that is killed mid-utterance; every tab says
its own sentences on a staggered schedule for --seconds; checks that each tab's mouth moved only
after its own presses (no cross-talk), that the killed viewer's session is freed, and the server's
memory over time. `screenshot`: the page while the avatar speaks (no stamps), for the README.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time

import numpy as np

SENTENCES = ["Hello there, how are you today?", "The quick brown fox jumps over the lazy dog.",
             "Welcome to the museum, the exhibition starts on your left.", "Please scan your ticket at the gate.",
             "Our opening hours are nine to five.", "Would you like to hear about today's specials?",
             "Thank you for visiting, have a lovely day.", "Can I help you find something?"]


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def make_server(a, stamp: bool, max_sessions: int = 8):
    from lipforce_sdk.serve import load_avatar, load_engine, model_for
    from lipforce_sdk.serve.server import AvatarServer, ServeLimits, ServerThread

    model = model_for(a.model, None)
    engine = load_engine(model, a.backend)
    avatar = load_avatar(engine, None, model)
    server = AvatarServer(engine, avatar, stamp=stamp, token="check", exemplars=not a.no_exemplars,
                          limits=ServeLimits(max_sessions=max_sessions))
    return ServerThread(server)


def cmd_latency(a) -> int:
    from lipforce_sdk.serve.browser import measure_page

    st = make_server(a, stamp=True)
    rows = []
    try:
        for k in range(a.runs):
            m = asyncio.run(measure_page(st.url, "check", SENTENCES[k % len(SENTENCES)]))
            rows.append(m)
            print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in m.items()}), flush=True)
    finally:
        st.close()
    off = np.array([x for m in rows for x in m["av_offset_ms"]])
    pre = np.array([x for m in rows for x in m["av_offset_presented_ms"]])
    ex = "off" if a.no_exemplars else ("the model's" if getattr(st.server.engine, "exemplars", None) is not None
                                       else "the loop's first 2 s")
    print(f"\n{st.server.backend}, avatar one picture {st.server.avatar.frame_hw}, mouth exemplars {ex}, {a.runs} page visits")
    print("| measure | median | min | max |\n| --- | --- | --- | --- |")
    for name, key in (("frames displayed per second", "fps"), ("Say pressed -> first mouth frame displayed (ms)",
                                                               "text_to_frame_ms"),
                      ("WAV posted -> its first frame displayed (ms)", "wav_to_frame_ms")):
        v = np.array([m[key] for m in rows])
        print(f"| {name} | {np.median(v):.1f} | {v.min():.1f} | {v.max():.1f} |")
    for name, v in ((f"sound after its picture, as the page has them (ms, {off.size} tone bursts)", off),
                    ("the same, as output and displayed (browser's estimates)", pre)):
        print(f"| {name} | " + (f"{np.median(v):.1f} | {v.min():.1f} | {v.max():.1f} |" if v.size else "none matched | | |"))
    print(f"| mouth change per frame, speaking / idle (levels) | {np.median([m['mouth_speaking'] for m in rows]):.2f}"
          f" / {np.median([m['mouth_idle'] for m in rows]):.2f} | | |")
    return 0


async def _soak(st, n: int, seconds: float, every: float) -> dict:
    from lipforce_sdk.serve.browser import Browser

    url = st.url + "/?token=check&measure=2"
    ready = ("window.lipforce && window.lipforce.session && window.lipforce.frames > 10")
    async with Browser(url) as main, Browser(url) as vanisher:
        pages = [main.page] + [await main.open(url) for _ in range(n - 2)]
        for p in pages + [vanisher.page]:
            await p.wait_for(ready, 90)
        sids = [await p.eval("window.lipforce.session") for p in pages]
        gone = await vanisher.page.eval("window.lipforce.session")
        presses = {i: [] for i in range(len(pages))}
        mem, t0 = [], time.monotonic()
        # one press every `every` s, tab after tab
        schedule = [(2.0 + every * k, k % len(pages)) for k in range(int((seconds - 6.0) // every) + 1)]
        killed_at = None
        while time.monotonic() - t0 < seconds:
            now = time.monotonic() - t0
            while schedule and schedule[0][0] <= now:
                _, i = schedule.pop(0)
                t = await pages[i].type_and_say(SENTENCES[(i + len(presses[i])) % len(SENTENCES)])
                presses[i].append(t)
            if killed_at is None and now > 8.0:
                await vanisher.page.type_and_say(SENTENCES[0])
                await asyncio.sleep(0.8)  # mid-utterance
                vanisher.kill()
                killed_at = time.monotonic() - t0
            mem.append((now, rss_mb(), len(st.server.peers)))
            await asyncio.sleep(0.5)
        await asyncio.sleep(4.0)  # the last utterances finish
        logs = [json.loads(await p.eval("JSON.stringify(window.lipforce.log.map(e => [e.t, e.stamp, e.utterance]))"))
                for p in pages]
        said = [await p.eval("window.lipforce.said") for p in pages]
        peers_left = set(st.server.peers)
        stats = {sid: st.server.peers[sid].stats() for sid in sids if sid in st.server.peers}
    return {"sids": sids, "gone": gone, "presses": presses, "logs": logs, "said": said, "mem": mem,
            "killed_at": killed_at,
            "peers_left": peers_left, "stats": stats}


def cmd_soak(a) -> int:
    st = make_server(a, stamp=True, max_sessions=a.clients)
    try:
        r = asyncio.run(_soak(st, a.clients, a.seconds, a.every))
    finally:
        st.close()
    if a.dump:
        with open(a.dump, "w") as f:
            json.dump({k: v for k, v in r.items() if k != "logs"}, f, indent=1, default=str)
    ok = True
    print(f"{a.clients} viewers ({a.clients - 1} tabs + 1 killed at {r['killed_at']:.1f} s), {a.seconds:.0f} s, "
          f"a press every {a.every:g} s, {st.server.backend}")
    print("| tab | presses | its utterances seen | other utterances seen (cross-talk) | frames/s sent (server) | "
          "frames/s displayed | waited at start (frames) | paused mid-utterance (frames) | frames dropped (encoder behind) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for i, (sid, log) in enumerate(zip(r["sids"], r["logs"])):
        t = np.array([e[0] for e in log])
        seen = {e[2] for e in log if e[2] > 0}  # -1: a stamp the coding damaged
        mine = {u & 0xFFFF for u in r["said"][i] if u is not None}
        stray = seen - mine
        st_i = r["stats"].get(sid, {})
        utts = st_i.get("utterances", [])
        fps = 1000.0 * (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 else float("nan")
        waited = sum(u["waited"] for u in utts)
        paused = sum(u["stalls"] - u["waited"] for u in utts)
        ok &= not stray and len(seen) >= 1
        print(f"| {i} | {len(r['presses'][i])} | {len(seen & mine)} of {len(mine)} | {len(stray)} | "
              f"{st_i.get('sent_fps')} | {fps:.1f} | {waited} | {paused} | {st_i.get('frames_dropped')} |")
    freed = r["gone"] not in r["peers_left"]
    ok &= freed
    mem = np.array([m[1] for m in r["mem"]])
    k = max(1, len(mem) // 6)
    print(f"\nkilled viewer's session freed: {freed} (sessions at the end: {len(r['peers_left'])}; "
          f"count over time: {[m[2] for m in r['mem']][::10]})")
    print(f"process memory: first 10 s {mem[:k].mean():.0f} MB, last 10 s {mem[-k:].mean():.0f} MB, max {mem.max():.0f} MB")
    return 0 if ok else 1


def cmd_screenshot(a) -> int:
    from lipforce_sdk.serve.browser import Browser

    st = make_server(a, stamp=False)

    async def shoot():
        async with Browser(st.url + "/?token=check") as b:
            await b.wait_for("window.lipforce && window.lipforce.session && window.lipforce.frames > 25", 60)
            await asyncio.sleep(1.0)
            await b.type_and_say(SENTENCES[0])
            await b.wait_for("window.lipforce.stats && window.lipforce.stats.peers[0].speaking", 30)
            await asyncio.sleep(a.at)
            await b.screenshot(a.out)

    try:
        asyncio.run(shoot())
    finally:
        st.close()
    print(f"wrote {a.out}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["latency", "soak", "screenshot"])
    ap.add_argument("--model", default=None, help="an enrolled model with its avatar (default: the bundled photo's)")
    ap.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch"])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-exemplars", action="store_true", help="as lipforce serve --no-exemplars")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--every", type=float, default=3.5, help="soak: one tab presses Say every this many seconds")
    ap.add_argument("--out", default="serve_page.png")
    ap.add_argument("--dump", default=None, help="soak: also write what it saw to this JSON")
    ap.add_argument("--at", type=float, default=0.6, help="screenshot: seconds into the speech")
    a = ap.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return {"latency": cmd_latency, "soak": cmd_soak, "screenshot": cmd_screenshot}[a.what](a)


if __name__ == "__main__":
    sys.exit(main())
