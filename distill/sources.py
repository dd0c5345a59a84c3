"""The public clips behind the real-face figures, fetched and checked byte for byte.

    python -m distill.sources list [--set eval|enroll|train|photos]
    python -m distill.sources fetch --out DATA [--set eval|enroll|train|photos] [--base-url URL] [--no-progress]
    python -m distill.sources verify --out DATA [--set eval|enroll|train|photos]

BENCHMARKS.md measures the models on talking heads, avatars and speech from public GitHub
repositories that the repository does not carry (they are their owners'). ``sources.json`` names
each file exactly: repository, commit, path, size and SHA-256, its licence as the repository states
it, and where it goes under ``DATA`` (``eval_talking/``, ``eval_avatars/``, ``speech.16k.wav`` and the
two talking clips of the enrollment check), so that

    python -m distill.sources fetch --out data
    python -m distill.realeval --clips data/eval_talking --speech data/speech.16k.wav --out runs/realeval

scores the same bytes the tables were measured on. Sets: ``eval`` (``distill.realeval``: four talking
heads, three avatars, the new speech and a second one, ``speech2.16k.wav``), ``enroll`` (``samples/enroll_check.py``: the two talking clips
and the speech), ``train`` (``distill.finetune --data DATA/train_clips``: eleven other people's talking
heads with their own speech, BENCHMARKS.md section 6; none of them is a person of ``eval``), ``photos``
(``distill.finetune`` / ``distill.recipe --photos DATA/photos``: still faces, most of them photographs,
some illustrated, a closed or nearly closed mouth each, none of a person of ``eval``).

``fetch`` downloads each file from ``--base-url`` (``{base}/{repo}/{commit}/{path}``; by default
GitHub's raw file host, any mirror with that layout works, ``file://`` included), checks its size and
SHA-256 before anything is written under its name (a temporary file beside it, renamed when it
matches), and leaves a file that is already there and matches alone; a file that is there and does
not match is an error, not overwritten. ``verify`` checks what is there without the network.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from lipforce_sdk.manifest import sha256_file

__all__ = ["Source", "SourceError", "MANIFEST", "RAW_URL", "load_sources", "url_of", "fetch", "verify", "main"]

MANIFEST = Path(__file__).with_name("sources.json")
RAW_URL = "https://raw.githubusercontent.com"
SETS = ("eval", "enroll", "train", "photos")
_CHUNK = 1 << 16


class SourceError(RuntimeError):
    """A source that could not be fetched or does not match its manifest entry."""


@dataclass(frozen=True)
class Source:
    """One file of the manifest: ``repo`` (``owner/name``) at ``commit``, ``path`` in it, written to
    every path of ``to`` (relative to the output folder)."""

    to: tuple[str, ...]
    repo: str
    commit: str
    path: str
    size: int
    sha256: str
    licence: str
    what: str
    sets: tuple[str, ...]


def load_sources(manifest: str | Path = MANIFEST, sets: tuple[str, ...] | None = None) -> list[Source]:
    """The manifest's files (those in any of ``sets``; ``None``: all), checked for what ``fetch``
    relies on: relative destinations inside the output folder, a 64-digit SHA-256, a size."""
    with open(manifest, encoding="utf-8") as f:
        raw = json.load(f)
    out = []
    for i, e in enumerate(raw["files"]):
        s = Source(to=tuple(e["to"]), repo=e["repo"], commit=e["commit"], path=e["path"], size=int(e["size"]),
                   sha256=e["sha256"].lower(), licence=e["licence"], what=e["what"], sets=tuple(e["sets"]))
        bad = [t for t in s.to if Path(t).is_absolute() or ".." in Path(t).parts or not t]
        if not s.to or bad:
            raise SourceError(f"{manifest}: file {i} ({s.path}) has destinations outside the output folder: {list(s.to)}")
        if len(s.sha256) != 64 or any(c not in "0123456789abcdef" for c in s.sha256) or s.size <= 0:
            raise SourceError(f"{manifest}: file {i} ({s.path}) needs a SHA-256 of 64 hex digits and a size > 0")
        if sets is None or set(sets) & set(s.sets):
            out.append(s)
    return out


def url_of(src: Source, base_url: str = RAW_URL) -> str:
    """``{base}/{repo}/{commit}/{path}``, the path's characters quoted (``#`` in a file name)."""
    return f"{base_url.rstrip('/')}/{src.repo}/{src.commit}/{urllib.parse.quote(src.path)}"


def _matches(path: Path, src: Source) -> bool:
    return path.is_file() and path.stat().st_size == src.size and sha256_file(path) == src.sha256


def _check_existing(out: Path, src: Source) -> list[Path]:
    """Destinations of ``src`` still to write; raises where one is there with other bytes."""
    todo = []
    for t in src.to:
        p = out / t
        if p.exists():
            if not _matches(p, src):
                raise SourceError(f"{p} is there but is not {src.repo}@{src.commit[:8]}:{src.path} (size or SHA-256 "
                                  f"differ); move it away and fetch again")
        else:
            todo.append(p)
    return todo


def _download(url: str, dest: Path, src: Source, bar, timeout: float) -> None:
    """``url`` to ``dest`` through a temporary file beside it, renamed only when size and SHA-256 match."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
    h, n = hashlib.sha256(), 0
    try:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as f:
                for block in iter(lambda: r.read(_CHUNK), b""):
                    f.write(block)
                    h.update(block)
                    n += len(block)
                    if n > src.size:
                        break
                    if bar is not None:
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as e:
            raise SourceError(f"could not fetch {url}: {e}. Fetch it by other means and place it at {dest}, or "
                              f"pass --base-url for a mirror with the layout {{base}}/{{repo}}/{{commit}}/{{path}}") from e
        if n != src.size or h.hexdigest() != src.sha256:
            raise SourceError(f"{url} is not the file the figures were measured on: {n} bytes, SHA-256 "
                              f"{h.hexdigest()[:16]}... (expected {src.size} bytes, {src.sha256[:16]}...); nothing "
                              f"written at {dest}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def fetch(out: str | Path, sources: list[Source] | None = None, *, base_url: str = RAW_URL,
          progress: bool = True, timeout: float = 60.0) -> list[Path]:
    """Every destination of ``sources`` (default: the whole manifest) under ``out``, downloaded and
    checked; files already there and matching are kept. Returns the paths written now. A file that is
    there with other bytes raises ``SourceError`` before anything is downloaded."""
    out = Path(out)
    sources = load_sources() if sources is None else sources
    plan = [(s, _check_existing(out, s)) for s in sources]
    plan = [(s, todo) for s, todo in plan if todo]
    written: list[Path] = []
    bar = None
    if progress and plan:
        from tqdm import tqdm

        bar = tqdm(total=sum(s.size for s, _ in plan), unit="B", unit_scale=True, desc="sources", file=sys.stderr)
    try:
        for s, todo in plan:
            first = todo[0]
            _download(url_of(s, base_url), first, s, bar, timeout)
            written.append(first)
            for p in todo[1:]:  # the same bytes under a second name: copied from the checked first
                p.parent.mkdir(parents=True, exist_ok=True)
                tmp = p.with_name(f".{p.name}.part{os.getpid()}")
                tmp.write_bytes(first.read_bytes())
                os.replace(tmp, p)
                written.append(p)
    finally:
        if bar is not None:
            bar.close()
    return written


def verify(out: str | Path, sources: list[Source] | None = None) -> dict[str, str]:
    """Each destination under ``out``: ``"ok"``, ``"missing"`` or ``"differs"`` (size or SHA-256)."""
    out = Path(out)
    sources = load_sources() if sources is None else sources
    return {t: ("ok" if _matches(out / t, s) else "differs" if (out / t).exists() else "missing")
            for s in sources for t in s.to}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.sources", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("list", "fetch", "verify"):
        p = sub.add_parser(name)
        p.add_argument("--set", choices=SETS, default=None, help="only this set's files (default: all)")
        p.add_argument("--manifest", type=Path, default=MANIFEST, help=argparse.SUPPRESS)
        if name != "list":
            p.add_argument("--out", type=Path, required=True, help="folder to put the files in")
        if name == "fetch":
            p.add_argument("--base-url", default=RAW_URL, help="{base}/{repo}/{commit}/{path} (default: %(default)s)")
            p.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    try:
        sources = load_sources(a.manifest, None if a.set is None else (a.set,))
        if a.cmd == "list":
            for s in sources:
                print(f"{', '.join(s.to)}\n    {s.what}\n    github.com/{s.repo} {s.commit[:8]} {s.path} "
                      f"({s.size} bytes; licence: {s.licence})")
            return 0
        if a.cmd == "fetch":
            written = fetch(a.out, sources, base_url=a.base_url, progress=not a.no_progress)
            kept = sum(len(s.to) for s in sources) - len(written)
            print(f"{len(written)} file(s) written, {kept} already there and checked, under {a.out}")
            return 0
        status = verify(a.out, sources)
        for t, st in status.items():
            print(f"{st:8s} {t}")
        return 0 if all(st == "ok" for st in status.values()) else 1
    except SourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
