"""A live avatar in a browser: ``lipforce serve`` (WebRTC page + HTTP endpoint) and its parts.

``Channel``/``RenderPool`` (the per-viewer clock and the shared renderer) need no WebRTC library;
``AvatarServer`` needs the ``serve`` extra (``pip install "lipforce[serve]"``: aiortc, aiohttp).
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from .channel import Channel, RenderPool, Tick, Utterance

__all__ = ["Channel", "RenderPool", "Tick", "Utterance", "default_avatar", "load_avatar", "load_engine", "model_for",
           "exported_graphs", "PHOTO_AVATAR_DIR", "add_arguments", "run_args"]

DEFAULT_LOOP_SECONDS = 6.0
# `lipforce serve` without --model/--avatar: the bundled photo enrolled as an avatar (its MODEL_CARD.md)
ASSETS = Path(__file__).resolve().parents[1] / "assets"
PHOTO_AVATAR_DIR = ASSETS / "photo_avatar"


def default_avatar(engine, loop_seconds: float = DEFAULT_LOOP_SECONDS):
    """The bundled photo clip's first ``loop_seconds`` as a prepared avatar (face mesh on each frame)."""
    from ..avatar import Avatar
    from ..media import iter_video_frames
    from ..tracking import MeshFaceSource

    n = max(1, int(loop_seconds * engine.config.stream.fps))
    it = iter_video_frames(ASSETS / "photo" / "face.mp4")  # as lipforce_sdk.cli.PHOTO_DIR
    frames = []
    for f in it:
        frames.append(f)
        if len(frames) >= n:
            break
    it.close()
    mesh = MeshFaceSource()
    import numpy as np

    return Avatar.from_frames(np.stack(frames), [mesh.update(f) for f in frames], engine.config.stream.resolution)


def load_avatar(engine, avatar: str | None, model: str | None):
    """``--avatar DIR``, else the avatar in ``--model``'s directory (an enrolled model), else the
    bundled photo clip's first seconds."""
    from ..avatar import AVATAR_DIR, Avatar

    if avatar:
        return Avatar.load(avatar)
    if model and (Path(model) / AVATAR_DIR / "avatar.json").is_file():
        return Avatar.load(model)
    return default_avatar(engine)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from ..config import SCHEDULE_STEPS

    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only; 0.0.0.0 opens "
                                                       "it to the network: use --token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--model", default=None, help="model directory; an enrolled one brings its avatar (default: the "
                                                 "bundled photo enrolled as an avatar, lipforce_sdk/assets/photo_avatar)")
    p.add_argument("--avatar", default=None, metavar="DIR", help="a prepared avatar folder (default: the model's, "
                                                                 "else the bundled photo clip's first 6 s)")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "torch", "tensorrt"],
                   help="onnxruntime (default; the model is exported to a cache folder on first use), torch, or "
                        "tensorrt (--model: an engine directory)")
    p.add_argument("--steps", type=int, choices=SCHEDULE_STEPS, default=None,
                   help="denoising steps per chunk, as `lipforce run --steps`: 1 runs one DiT pass per chunk fewer "
                        "(default: the model's own)")
    p.add_argument("--token", default=None, help="require this token on the page (?token=) and the endpoints; "
                                                 "'auto' makes one up and prints the page's address with it")
    p.add_argument("--voice", default="en-us", help="espeak-ng voice for typed text")
    p.add_argument("--max-sessions", type=int, default=8)
    p.add_argument("--max-text", type=int, default=500, help="longest text accepted, characters")
    p.add_argument("--max-seconds", type=float, default=30.0, help="longest utterance accepted (text or WAV), s")
    p.add_argument("--max-wav-mb", type=float, default=4.0, help="largest WAV body accepted, MB")
    p.add_argument("--no-exemplars", action="store_true",
                   help="paste the model's mouth as it is, not through mouth exemplars (an enrolled avatar's, or for "
                        "a general model the avatar loop's first 2 s; about 2 ms a frame on a CPU; lipforce_sdk.exemplars)")
    p.add_argument("--stamp", action="store_true", help="write each utterance frame's number into the picture's "
                                                        "top-left corner (for measuring audio/video offset)")


def model_for(model: str | None, avatar: str | None) -> str | None:
    """The model directory ``lipforce serve`` uses: ``--model``, else the bundled photo enrolled as an
    avatar where no ``--avatar`` is given, else None (the bundled model)."""
    return model or (str(PHOTO_AVATAR_DIR) if avatar is None else None)


def load_engine(model: str | os.PathLike | None, backend: str = "onnxruntime", steps: int | None = None):
    """``model`` (None: the bundled model) on ``backend``. For ONNX Runtime a directory of exported
    graphs loads as it is; a weights directory is exported once into the cache
    (``exported_graphs``, needs torch). ``steps``: ``Engine.load(steps=)`` (None: the model's own)."""
    from ..session import Engine, default_model_dir

    src = Path(model) if model else default_model_dir()
    if backend != "onnxruntime":
        return Engine.load(src, backend=backend, steps=steps)
    if (src / "manifest.json").is_file() and any(src.glob("*.onnx")):
        return Engine.load(src, backend="onnxruntime", steps=steps)
    return Engine.load(exported_graphs(src), backend="onnxruntime", steps=steps)


def exported_graphs(model_dir: Path, max_batch: int = 1) -> Path:
    """``model_dir``'s ONNX graphs, exported once into ``$LIPFORCE_CACHE/onnx/<hash>`` (``max_batch``
    > 1: the batched graphs, ``lipforce export --max-batch``, cached apart)."""
    import hashlib
    import shutil
    import tempfile

    from ..exemplars import EXEMPLARS_FILE, carry_exemplars

    h = hashlib.sha256()
    for f in sorted(Path(model_dir).iterdir()):  # what the graphs are made of (not the card)
        if f.is_file() and (f.name in ("manifest.json", EXEMPLARS_FILE) or f.suffix == ".safetensors"):
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    root = Path(os.environ.get("LIPFORCE_CACHE") or Path.home() / ".cache" / "lipforce") / "onnx"
    out = root / (h.hexdigest()[:20] + (f"-b{max_batch}" if max_batch > 1 else ""))
    if (out / "manifest.json").is_file():
        return out
    try:
        from ..export import export_model
        from ..model import load_model
    except ImportError as e:
        raise RuntimeError(f"{model_dir} holds weights; serving it on ONNX Runtime exports it once, which needs "
                           f"torch and onnx ({e.name} is missing): pip install 'lipforce[serve,torch,onnx]', or "
                           "pass --model an exported directory (lipforce export)") from None

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export.", dir=root))
    try:
        print(f"exporting {model_dir} to ONNX (once; cached in {out})", flush=True)
        export_model(load_model(model_dir), tmp, progress=False, max_batch=max_batch)
        carry_exemplars(model_dir, tmp)  # an enrolled avatar's mouth exemplars
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def run_args(a) -> int:
    from aiohttp import web

    from .server import AvatarServer, ServeLimits

    model = model_for(a.model, a.avatar)
    engine = load_engine(model, a.backend, steps=a.steps)
    avatar = load_avatar(engine, a.avatar, model)
    token = secrets.token_urlsafe(16) if a.token == "auto" else a.token
    limits = ServeLimits(max_sessions=a.max_sessions, max_text_chars=a.max_text, max_seconds=a.max_seconds,
                         max_wav_bytes=int(a.max_wav_mb * (1 << 20)))
    server = AvatarServer(engine, avatar, limits=limits, token=token, voice=a.voice, stamp=a.stamp,
                          exemplars=not a.no_exemplars)
    url = f"http://{a.host}:{a.port}/" + (f"?token={token}" if token else "")
    print(f"lipforce serve: {engine!r}, avatar {avatar.num_frames} frames; open {url}", flush=True)
    web.run_app(server.app(), host=a.host, port=a.port, print=None)
    return 0
