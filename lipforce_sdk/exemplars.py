"""An enrolled avatar's own mouths: fine detail from its real frames, chosen by the model's mouth.

The DiT's mouth is right in its coarse shape and soft in its detail: a regression target averages
what the audio leaves open (BENCHMARKS.md section 8). An enrolled avatar has what a general model
lacks: hundreds of crops of this one face. ``MouthExemplars`` keeps a sample of them (the crops the
avatar was enrolled on, aligned as the runtime aligns them) and, per generated crop:

1. looks up the ``k`` exemplars whose mouth region, low-passed, is nearest the generated crop's
   (the key: the crop's mouth box blurred and shrunk to 24 x 16 colour pixels);
2. takes their per-pixel median (a mouth of this person that the model's mouth looks like; a
   median, not a mean, so that lip lines and teeth edges stay edges);
3. keeps the generated crop's band below ``cutoff`` (a Gaussian of ``cutoff * S`` pixels: where
   the mouth is, how open, its shading) and takes the band above it from that median.

The model still chooses the mouth (the lookup is by its output); the texture at the lips, teeth
and skin is the person's own. Where no exemplar is near (a generated mouth unlike any the avatar
showed), the generated crop is kept: the replacement fades out between ``near`` and ``far``
(RMS key distance, 0-255 levels). Exemplar retrieval of this kind is how per-person talking heads
got their teeth and lip texture before end-to-end models (candidate frames of the subject,
weighted median, composite), and works for the same reason here: one face, many frames of it.

``lipforce enroll`` writes ``exemplars.npz`` into the model directory and names it in the
manifest (``"exemplars"``); ``Engine.load`` reads it and every session pastes through it (``engine
.session(exemplars=False)`` turns it off).

A general model (no exemplar file) takes them from the stream itself (``StreamExemplars``): the
crops of the first ``STREAM_SECONDS`` of frames it pastes, each added after its own frame is shown
(a frame never finds itself; the first frame finds nothing). Those seconds show a few mouth shapes
of the person, not hundreds, so only the finest band is taken from them (``STREAM_CUTOFF``, a
quarter of the enrolled cut-off: skin, lip edges and teeth texture, not where the lips are); the
model keeps the shape. Where the face is larger in the frame than the model's crop, they are kept
at the face's own size, and the generated crop is enlarged to it before it takes their detail
(from the median of fewer of them, at larger key distances: ``STREAM_LARGE``).
An enrolled avatar's sessions use its own exemplars first and the stream's only for that detail
above the crop's size (``LayeredExemplars``). Measured in BENCHMARKS.md sections 6 and 8. NumPy and
OpenCV only: no torch on the runtime path.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .geometry import CropSpec

__all__ = ["MouthExemplars", "StreamExemplars", "LayeredExemplars", "STREAM_SECONDS", "STREAM_CUTOFF",
           "STREAM_MAX_SIZE", "STREAM_LARGE", "pixel_median", "EXEMPLARS_FILE", "load_exemplars", "manifest_entry",
           "copy_exemplars", "name_exemplars", "carry_exemplars"]

EXEMPLARS_FILE = "exemplars.npz"
KEY_HW = (16, 24)  # key grid (rows, columns) over the mouth box
KEY_BLUR = 3.0 / 128  # the key's blur, in crop sides: the generated mouth is softer than the real ones, and a
# blur well above its softness keeps the lookup from taking the soft mouth for a smaller one
JPEG_QUALITY = 95
STREAM_SECONDS = 2.0  # a general model's exemplars: the crops of the stream's first seconds with a face
STREAM_CUTOFF = 1.0 / 64  # ... of which only the band above this (crop sides) is used
STREAM_MAX_SIZE = 256  # ... cut at the face's own size in the frame, up to this many pixels
# ... and there, where that size is larger than the crop's: fewer exemplars per median and a wider
# distance before their band fades out (BENCHMARKS.md section 6, "The stream's detail on faces larger
# than the crop")
STREAM_LARGE = {"k": 3, "near": 24.0, "far": 48.0}


def _key_box(size: int) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = CropSpec().mouth_box()
    return int(y0 * size), int(round(y1 * size)), int(x0 * size), int(round(x1 * size))


def _blur_window(region: tuple[int, int, int, int], sigma: float, shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``region`` (y0, y1, x0, x1) grown by the radius of the kernel ``cv2.GaussianBlur`` takes for
    ``sigma`` on a float image (size ``round(8 sigma + 1) | 1``) and one pixel more, clipped to the
    image: blurred alone, the window gives ``region`` exactly the values the whole image gives it
    (inside, every tap is a real pixel; at the image's edges the same reflection)."""
    r = (int(round(8.0 * sigma + 1.0)) | 1) // 2 + 1
    y0, y1, x0, x1 = region
    return max(0, y0 - r), min(shape[0], y1 + r), max(0, x0 - r), min(shape[1], x1 + r)


def _blurred(img: np.ndarray, sigma: float, region: tuple[int, int, int, int]) -> np.ndarray:
    """``cv2.GaussianBlur(img, sigma)[region]`` (float32), computed over the region's window only."""
    wy0, wy1, wx0, wx1 = _blur_window(region, sigma, img.shape)
    y0, y1, x0, x1 = region
    g = cv2.GaussianBlur(np.asarray(img[wy0:wy1, wx0:wx1], np.float32), (0, 0), sigma)
    return g[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]


def mouth_key(crop: np.ndarray) -> np.ndarray:
    """The lookup key of one crop ``[S, S, 3]`` uint8: its mouth box (``CropSpec.mouth_box``),
    blurred and shrunk to ``KEY_HW``, flattened, float32 (0-255 levels). Only the box's window
    is blurred (the same values as blurring the whole crop)."""
    s = crop.shape[0]
    g = _blurred(crop, KEY_BLUR * s, _key_box(s))
    return cv2.resize(g, KEY_HW[::-1], interpolation=cv2.INTER_AREA).reshape(-1)


def pixel_median(images: np.ndarray) -> np.ndarray:
    """Per-pixel median of ``images`` ``[k, ...]`` uint8, as ``np.median(images, axis=0)`` gives it
    (float32; for an even ``k`` the mean of the two middle values). An odd-even transposition sort
    of the ``k`` planes with elementwise min/max: exact, and ~100x faster than ``np.median`` at
    k = 5 on a 128 x 128 crop (which sorts each pixel's column in float64)."""
    planes = [np.asarray(a) for a in images]
    k = len(planes)
    if k == 0:
        raise ValueError("no images to take the median of")
    for r in range(k):
        for i in range(r % 2, k - 1, 2):
            lo, hi = np.minimum(planes[i], planes[i + 1]), np.maximum(planes[i], planes[i + 1])
            planes[i], planes[i + 1] = lo, hi
    if k % 2:
        return planes[k // 2].astype(np.float32)
    return (planes[k // 2 - 1].astype(np.float32) + planes[k // 2].astype(np.float32)) * np.float32(0.5)


@dataclass
class MouthExemplars:
    """``images`` ``[N, S, S, 3]`` uint8: the avatar's crops; ``keys`` ``[N, K]`` their
    ``mouth_key``; ``k`` exemplars per lookup; ``cutoff`` (crop sides) the Gaussian splitting
    the model's band from the exemplars'; ``near``/``far`` the key distances (RMS, levels)
    between which the exemplars' band fades out."""

    images: np.ndarray
    keys: np.ndarray
    k: int = 5
    cutoff: float = 1.0 / 16
    near: float = 12.0
    far: float = 24.0

    def __post_init__(self):
        im = np.asarray(self.images)
        if im.ndim != 4 or im.shape[1] != im.shape[2] or im.shape[3] != 3 or im.dtype != np.uint8 or len(im) < 1:
            raise ValueError(f"images must be uint8 [N >= 1, S, S, 3], got {im.dtype} {im.shape}")
        if self.keys.shape[0] != len(im):
            raise ValueError(f"{len(im)} images but {self.keys.shape[0]} keys")
        if not 1 <= self.k <= len(im):
            raise ValueError(f"k={self.k} must be in [1, {len(im)}] (the exemplars held)")
        if not 0.0 < self.cutoff < 0.5:
            raise ValueError(f"cutoff={self.cutoff} must be in (0, 0.5) crop sides")
        if not 0.0 <= self.near < self.far:
            raise ValueError(f"near={self.near} must be >= 0 and below far={self.far}")
        self.keys = np.ascontiguousarray(self.keys, np.float32)
        # distances in float64: |a|^2 - 2ab + |b|^2 cancels to a few levels in float32 at these norms
        self._keys64 = self.keys.astype(np.float64)
        self._norms = (self._keys64 * self._keys64).sum(1)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])

    def detail(self, gen: np.ndarray, crop, weight: np.ndarray | None = None) -> np.ndarray:
        """The picture a session pastes for the generated crop ``gen`` of ``crop``: ``refine(gen)``;
        with the paste's ``weight``, refined only where the paste reads it (``AlignedCrop.paste_footprint``)."""
        return self.refine(gen, None if weight is None else _footprint(crop, weight, self.size))

    @classmethod
    def build(cls, crops: np.ndarray, max_items: int = 600, **kw) -> "MouthExemplars":
        """From the avatar's aligned crops ``[F, S, S, 3]`` uint8 (repeats dropped, then at most
        ``max_items`` spread evenly over them)."""
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 [F, S, S, 3], got {crops.dtype} {crops.shape}")
        seen, keep = set(), []
        for i, c in enumerate(crops):
            h = hash(c.tobytes())
            if h not in seen:
                seen.add(h)
                keep.append(i)
        if len(keep) > max_items:
            keep = [keep[j] for j in np.linspace(0, len(keep) - 1, max_items).round().astype(int)]
        if not keep:
            raise ValueError("no crops to keep exemplars of")
        images = np.ascontiguousarray(crops[keep])
        kw["k"] = min(kw.get("k", cls.k), len(images))
        return cls(images, np.stack([mouth_key(c) for c in images]), **kw)

    # ---- the lookup ----
    def nearest(self, key: np.ndarray) -> tuple[np.ndarray, float]:
        """(indices of the ``k`` nearest exemplars, RMS key distance of the nearest)."""
        key = np.asarray(key, np.float64)
        # einsum, not `@`: a matrix-vector product this size goes to a multithreaded BLAS whose
        # idle threads then spin, taking ~20 ms of CPU per frame from the model (2-core CPU)
        d = self._norms - 2.0 * np.einsum("ij,j->i", self._keys64, key) + float(np.einsum("i,i->", key, key))
        k = self.k
        idx = np.argpartition(d, k - 1)[:k] if k < len(d) else np.arange(len(d))
        return idx, float(np.sqrt(max(d[idx].min(), 0.0) / key.size))

    def weight(self, distance: float) -> float:
        """How much of the exemplars' band is used at this key distance: 1 up to ``near``, 0 from ``far``."""
        return float(np.clip((self.far - distance) / (self.far - self.near), 0.0, 1.0))

    def refine(self, gen: np.ndarray, region: tuple[int, int, int, int] | None = None) -> np.ndarray:
        """A generated crop ``[S, S, 3]`` uint8 with its band above ``cutoff`` taken from the
        median of its ``k`` nearest exemplars; uint8, same shape. ``region`` (y0, y1, x0, x1): only
        there (the rest is ``gen`` as it is), with the values the whole crop's refinement gives it."""
        g = np.asarray(gen)
        if g.shape != self.images.shape[1:] or g.dtype != np.uint8:
            raise ValueError(f"gen must be uint8 {self.images.shape[1:]} (the exemplars' crop), got {g.dtype} {g.shape}")
        s = self.size
        y0, y1, x0, x1 = (0, s, 0, s) if region is None else region
        if y1 <= y0 or x1 <= x0:
            return g.copy()
        idx, dist = self.nearest(mouth_key(g))
        w = self.weight(dist)
        if w <= 0.0:
            return g.copy()
        sigma = self.cutoff * s
        wy0, wy1, wx0, wx1 = _blur_window((y0, y1, x0, x1), sigma, g.shape)
        med = pixel_median(self.images[idx, wy0:wy1, wx0:wx1])  # float32
        gf = g[wy0:wy1, wx0:wx1].astype(np.float32)
        # blur(gen) + (med - blur(med)), with one blur: the Gaussian is linear
        o = med + cv2.GaussianBlur(gf - med, (0, 0), sigma)
        if w < 1.0:
            o = gf + np.float32(w) * (o - gf)
        out = g.copy()
        out[y0:y1, x0:x1] = np.clip(np.rint(o[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0]), 0, 255).astype(np.uint8)
        return out

    # ---- the file ----
    def save(self, path: str | Path) -> None:
        """``path`` (.npz): the crops as JPEG (quality 95) and the settings; the keys are recomputed on load."""
        blobs = []
        for im in self.images:
            ok, buf = cv2.imencode(".jpg", im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise RuntimeError("OpenCV could not encode an exemplar as JPEG")
            blobs.append(buf.reshape(-1))
        sizes = np.array([b.size for b in blobs], np.int64)
        meta = json.dumps({"k": self.k, "cutoff": self.cutoff, "near": self.near, "far": self.far,
                           "size": self.size, "count": len(self.images)})
        with open(path, "wb") as f:
            np.savez(f, jpeg=np.concatenate(blobs), sizes=sizes, meta=np.array(meta))

    @classmethod
    def load(cls, path: str | Path) -> "MouthExemplars":
        p = Path(path)
        try:
            z = np.load(p, allow_pickle=False)
            meta = json.loads(str(z["meta"]))
            blob, sizes = z["jpeg"], z["sizes"]
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{str(p)!r} is not a mouth exemplar file ({e}); enroll the avatar again") from e
        ends = np.cumsum(sizes)
        images = []
        for a, b in zip(ends - sizes, ends):
            im = cv2.imdecode(blob[a:b], cv2.IMREAD_COLOR)
            if im is None or im.shape != (meta["size"], meta["size"], 3):
                raise ValueError(f"{str(p)!r}: an exemplar does not decode to a {meta['size']} px crop; enroll again")
            images.append(im[..., ::-1])
        images = np.ascontiguousarray(np.stack(images))
        return cls(images, np.stack([mouth_key(c) for c in images]), k=int(meta["k"]), cutoff=float(meta["cutoff"]),
                   near=float(meta["near"]), far=float(meta["far"]))


class StreamExemplars:
    """A general model's mouth exemplars, gathered from the stream it renders: ``add`` the frame
    just pasted (its crop cut again with cubic interpolation, as an enrollment cuts its exemplars)
    until ``frames`` distinct crops are held; ``refine`` as ``MouthExemplars.refine`` over what is
    held so far (``k`` shrinks to the count while fewer are held; with none, the crop as it is).
    ``reset`` forgets them (a new stream, or the face came back and may be someone else's).

    Where the face is larger in the frame than the model's crop, the model's picture holds less
    detail than the frame: the crops are then kept at the face's own size (``size_for``: the
    aligned crop's side in frame pixels rounded up to 16, at most ``max_size``, fixed by the
    stream's first frame), and the generated crop, enlarged to that size, takes its fine band from
    them before it is pasted. There the model's picture has none of that band, so the bank takes
    ``large``'s settings (``STREAM_LARGE``: the median of 3 rather than 5, whose mouths in other
    poses would blur it, and key distances up to 48 levels rather than 24 before the band fades
    out, so a mouth drawn unlike the stream's first seconds still gets it); ``None`` keeps the
    others everywhere."""

    def __init__(self, frames: int, k: int = MouthExemplars.k, cutoff: float = STREAM_CUTOFF,
                 near: float = MouthExemplars.near, far: float = MouthExemplars.far, max_size: int = STREAM_MAX_SIZE,
                 large: dict | None = STREAM_LARGE):
        if frames < 1:
            raise ValueError(f"frames={frames} must be >= 1")
        self.frames = int(frames)
        self._base = {"k": int(k), "cutoff": float(cutoff), "near": float(near), "far": float(far)}
        if large and not set(large) <= {"k", "near", "far"}:
            raise ValueError(f"large={large!r}: only k, near and far can differ on a face larger than the crop")
        self.large = dict(large or {})
        self.max_size = int(max_size)
        self._lock = threading.Lock()
        self.reset()

    @classmethod
    def for_fps(cls, fps: float, seconds: float = STREAM_SECONDS, **kw) -> "StreamExemplars":
        return cls(max(1, int(round(seconds * fps))), **kw)

    def reset(self) -> None:
        # what is held: the first ``_count`` rows of arrays for ``frames`` crops, allocated at the first add
        # (a bank is then a view of them: nothing is copied as the exemplars grow)
        self._images: np.ndarray | None = None
        self._keys: np.ndarray | None = None
        self._count = 0
        self._seen: set[int] = set()
        self._bank: MouthExemplars | None = None
        self._size: int | None = None
        self.settings = dict(self._base)  # the bank's (MouthExemplars' fields); ``large`` joins them in size_for

    def size_for(self, crop) -> int:
        """The side in pixels at which this stream's crops are kept, refined and pasted: ``crop``'s
        (a ``geometry.AlignedCrop``) own where the face is no larger in the frame, else the face's
        size in the frame (up to ``max_size``, and the bank then takes ``large``'s settings); set by
        the first crop after a reset."""
        if self._size is None:
            native = 16 * math.ceil(crop.side / 16 - 1e-6)
            size = int(max(crop.size, min(self.max_size, native)))
            if size > crop.size and self.large:  # set before the size: a thread that reads the size builds with them
                self.settings.update(self.large)
            self._size = size
        return self._size

    @property
    def count(self) -> int:
        return self._count

    @property
    def full(self) -> bool:
        return self._count >= self.frames

    @property
    def gathering(self) -> bool:
        """Whether a frame's paste may still add to what is held (so a chunk's frames depend on the
        ones before them); False once full: the held bank no longer changes."""
        return not self.full

    def add(self, frame: np.ndarray, crop) -> bool:
        """Keep ``crop`` (a ``geometry.AlignedCrop``) of ``frame``, cut at ``size_for(crop)``, while
        fewer than ``frames`` are held; a crop seen before is not kept twice. True where it was kept."""
        if self.full:
            return False
        return self._keep(self._cut(frame, crop))

    def add_many(self, frames, crops, pool=None) -> list[int]:
        """``add`` each (frame, crop) in order; returns, per frame, how many crops were held just before
        its own add (what a paste of that frame before it may use: ``detail(..., upto=n)``). The crops
        are cut and keyed on ``pool`` (a ``concurrent.futures`` executor) where given, then kept in
        order, as ``add`` one after another keeps them."""
        if self.full:
            return [self._count] * len(frames)
        size = self.size_for(crops[0])  # the first crop fixes the size, as its paste would
        cut = (lambda f, c: self._cut(f, c, size))
        cuts = list(pool.map(cut, frames, crops)) if pool is not None else [cut(f, c) for f, c in zip(frames, crops)]
        counts = []
        for c in cuts:
            counts.append(self._count)
            if not self.full:
                self._keep(c)
        return counts

    def _cut(self, frame: np.ndarray, crop, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(the crop cut at the exemplars' size with cubic interpolation, its ``mouth_key``)."""
        image = crop.at_size(self.size_for(crop) if size is None else size).crop(frame, interpolation=cv2.INTER_CUBIC)
        return image, mouth_key(image)

    def _keep(self, cut: tuple[np.ndarray, np.ndarray]) -> bool:
        image, key = cut
        h = hash(image.tobytes())
        if h in self._seen:
            return False
        self._seen.add(h)
        if self._images is None:
            self._images = np.empty((self.frames, *image.shape), np.uint8)
            self._keys = np.empty((self.frames, key.size), np.float32)
        self._images[self._count], self._keys[self._count] = image, key
        self._count += 1
        self._bank = None
        return True

    def bank(self, upto: int | None = None) -> MouthExemplars | None:
        """What is held as a ``MouthExemplars`` (``None`` while empty); built once however many
        threads ask for it at once. ``upto``: only the first ``upto`` held (a view, not kept)."""
        n = self._count
        if upto is not None and upto < n:
            if upto <= 0:
                return None
            return MouthExemplars(self._images[:upto], self._keys[:upto],
                                  **dict(self.settings, k=min(self.settings["k"], upto)))
        if self._bank is None and n:
            with self._lock:
                if self._bank is None:
                    kw = dict(self.settings, k=min(self.settings["k"], n))
                    self._bank = MouthExemplars(self._images[:n], self._keys[:n], **kw)
        return self._bank

    @property
    def held(self) -> np.ndarray:
        """The crops held, ``[count, size, size, 3]`` uint8 (a view)."""
        return self._images[:self._count] if self._images is not None else np.zeros((0, 0, 0, 3), np.uint8)

    def refine(self, gen: np.ndarray, region: tuple[int, int, int, int] | None = None,
               upto: int | None = None) -> np.ndarray:
        b = self.bank(upto)
        return np.asarray(gen).copy() if b is None else b.refine(gen, region)

    def detail(self, gen: np.ndarray, crop, weight: np.ndarray | None = None, upto: int | None = None) -> np.ndarray:
        """The picture a session pastes for the generated crop ``gen`` of ``crop``: enlarged to
        ``size_for(crop)`` (bicubic) where that is larger, then ``refine``d (with the paste's
        ``weight``: only where the paste reads it; ``upto``: from the first ``upto`` crops held)."""
        size = self.size_for(crop)
        if size != gen.shape[0]:
            gen = cv2.resize(gen, (size, size), interpolation=cv2.INTER_CUBIC)
        return self.refine(gen, None if weight is None else _footprint(crop, weight, size), upto)


class LayeredExemplars:
    """An enrolled avatar's exemplars (``own``, at the model's crop size) and, where the face is
    larger in the frame than that crop, the stream's (``stream``) for the detail above it: the
    generated crop is refined by ``own``, then enlarged and refined by ``stream`` at the face's
    size. Where the face is no larger than the crop, exactly ``own`` (the stream keeps nothing)."""

    def __init__(self, own: MouthExemplars, stream: StreamExemplars):
        self.own, self.stream = own, stream

    def _larger(self, crop) -> bool:
        return self.stream.size_for(crop) > self.own.size

    def size_for(self, crop) -> int:
        return self.stream.size_for(crop) if self._larger(crop) else self.own.size

    def detail(self, gen: np.ndarray, crop, weight: np.ndarray | None = None, upto: int | None = None) -> np.ndarray:
        if self._larger(crop):  # the stream's stage reads all of the enlarged crop's key box: refine it whole
            return self.stream.detail(self.own.refine(gen), crop, weight, upto)
        return self.own.detail(gen, crop, weight)

    def add(self, frame: np.ndarray, crop) -> bool:
        return self._larger(crop) and self.stream.add(frame, crop)

    def add_many(self, frames, crops, pool=None) -> list[int]:
        if self._larger(crops[0]):
            return self.stream.add_many(frames, crops, pool)
        return [self.stream.count] * len(frames)

    @property
    def gathering(self) -> bool:
        """Whether a paste may still add to the stream's exemplars: before the first frame fixes their
        size, and while a face larger than ``own``'s crop fills them."""
        size = self.stream._size
        return size is None or (size > self.own.size and self.stream.gathering)

    def reset(self) -> None:
        self.stream.reset()


def _footprint(crop, weight: np.ndarray, size: int) -> tuple[int, int, int, int]:
    """What ``paste`` reads of a picture at ``size`` (``AlignedCrop.paste_footprint``); an empty region
    where the weight is 0 everywhere."""
    r = crop.paste_footprint(weight, size)
    return (0, 0, 0, 0) if r is None else r


def load_exemplars(model_dir: str | Path | None, manifest: dict | None = None) -> MouthExemplars | None:
    """The model directory's exemplars (its manifest's ``"exemplars"``), or ``None`` where it has none."""
    if model_dir is None:
        return None
    d = Path(model_dir)
    if manifest is None:
        p = d / "manifest.json"
        if not p.is_file():
            return None
        manifest = json.loads(p.read_text())
    spec = manifest.get("exemplars")
    if not spec:
        return None
    f = d / spec["file"]
    if not f.is_file():
        raise FileNotFoundError(f"{str(d)!r}'s manifest names mouth exemplars {spec['file']!r}, which is missing; "
                                "copy the whole model directory, or enroll the avatar again")
    return MouthExemplars.load(f)


def manifest_entry(path: str | Path) -> dict:
    """The model manifest's ``"exemplars"`` section for the exemplar file ``path`` (named by its
    file name), from the file's settings alone (no crop is decoded)."""
    p = Path(path)
    try:
        meta = json.loads(str(np.load(p, allow_pickle=False)["meta"]))
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{str(p)!r} is not a mouth exemplar file ({e}); enroll the avatar again") from e
    return {"file": p.name, "count": int(meta["count"]), "k": int(meta["k"]), "cutoff": float(meta["cutoff"])}


def copy_exemplars(src_dir: str | Path, out_dir: str | Path) -> dict | None:
    """Copy the exemplar file of the model in ``src_dir`` (if its manifest names one) into
    ``out_dir``; its manifest section, or ``None`` where it has none (nothing is copied)."""
    import shutil

    src, out = Path(src_dir), Path(out_dir)
    p = src / "manifest.json"
    spec = json.loads(p.read_text()).get("exemplars") if p.is_file() else None
    if not spec:
        return None
    if (src / spec["file"]).resolve() != (out / spec["file"]).resolve():
        shutil.copyfile(src / spec["file"], out / spec["file"])
    return spec


def name_exemplars(model_dir: str | Path, spec: dict) -> None:
    """Set the ``"exemplars"`` section of ``model_dir/manifest.json`` (written already) to
    ``spec``, atomically (the manifest is replaced whole)."""
    mp = Path(model_dir) / "manifest.json"
    m = json.loads(mp.read_text())
    m["exemplars"] = spec
    tmp = mp.with_name(".manifest.json.tmp")
    tmp.write_text(json.dumps(m, indent=2, sort_keys=False) + "\n")
    tmp.replace(mp)


def carry_exemplars(src_dir: str | Path, out_dir: str | Path) -> bool:
    """An export ``out_dir`` of the model in ``src_dir`` takes its mouth exemplars along: the file
    is copied (``copy_exemplars``) and ``out_dir/manifest.json`` (written already) names it.
    ``False`` where ``src_dir`` has none (nothing is changed)."""
    spec = copy_exemplars(src_dir, out_dir)
    if spec is None:
        return False
    name_exemplars(out_dir, spec)
    return True
