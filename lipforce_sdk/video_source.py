"""A video file's frames in any schedule's order, with bounded memory, and when each is shown.

``lipforce run`` drives a video by its audio: the frames it needs are the video's in time order,
looped back and forth (ping-pong) when the audio is longer. Reading the whole video first costs
``frames x H x W x 3`` bytes (a 5-minute 1080p clip: 46 GB). ``VideoFrames`` instead:

- keeps the whole video in memory only when it fits ``budget_bytes`` (an idle loop of a few
  seconds: decoded once, every loop served from memory);
- otherwise decodes as it goes and keeps at most ``budget_bytes`` of frames (an LRU cache): a
  forward pass is one decode; a backward (ping-pong) pass seeks to the keyframe before the block
  of frames it needs and decodes that block again (a cache-full plus at most a GOP per block).

Frame ``i`` is the ``i``-th frame in presentation order, as ``media.read_video`` numbers them, so
both paths give the same pixels. ``times[i]`` is when frame ``i`` is shown (seconds from the
first frame), from the container's timestamps, read from its packets in one pass without
decoding (8 bytes a frame): variable frame rate clips keep their timing. A file whose packets
carry no timestamps is numbered in decoding order at its average rate, and read again from the
start for a backward pass. A file that holds clearly fewer frames than its container declares
(more than 2 or 1 % short: cut off in a copy or a download) is an error, found before anything is
decoded where the container says how many frames it has; a frame or two that do not decode show
the frame before them.
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from typing import Iterable

import numpy as np

from .media import _no_video, _scan_video, _VideoDecoder, probe

__all__ = ["VideoFrames", "DEFAULT_BUDGET_MB"]

DEFAULT_BUDGET_MB = 256  # 42 frames of 1080p, 10 of 4K: a 4K run stays under 2 GB with the model and x264
_SEEK_TRIES = 3  # keyframes tried, latest first, before reading again from the start of the file


class VideoFrames:
    """Frames of ``path`` by index (``frames_in_order``), holding at most ``budget_bytes`` of them.

    ``times``: float64 ``[len]``, when each frame is shown, in seconds from the first; ``duration``:
    when the last one ends; ``fps``: the stream's average rate (for information: schedules use
    ``times``); ``in_memory``: the whole video fits the budget and was decoded at once;
    ``capacity``: frames the cache may hold; ``max_held``: the most it held; ``decoded``: frames
    decoded so far (re-reads and frames decoded only to reach a block included).
    """

    def __init__(self, path: str | os.PathLike, budget_bytes: int = DEFAULT_BUDGET_MB << 20):
        info = probe(path)
        self.path, self.fps = os.fspath(path), info.fps
        if not info.has_video:
            raise _no_video(self.path)
        self._declared = info.num_frames
        self._tl = _scan_video(self.path)  # None: no usable timestamps
        n = len(self._tl.pts) if self._tl is not None else info.num_frames
        self._n = n if n > 0 else None  # None: counted by decoding once, below
        if self._tl is not None:
            self._check_count(n, "are in the file")  # a cut file, before anything is decoded
            self._keys = np.flatnonzero(self._tl.keyframe)
        self.capacity = max(2, int(budget_bytes) // max(1, info.width * info.height * 3))
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._dec: _VideoDecoder | None = None
        self._it = None
        self._peek = None  # (index, frame) taken from the decoder, not yet stored
        self._pos = 0  # index of the next frame the decoder yields
        self._last: np.ndarray | None = None  # the last frame decoded (held over frames that did not decode)
        self.max_held = 0
        self.decoded = 0
        self.in_memory = False
        if self._n is None or self._n <= self.capacity:  # decode all once; kept while it fits
            try:
                self._advance(self._n or sys.maxsize, keep_from=0)
            finally:
                self.close()
            self.in_memory = self._n <= self.capacity
        n = self._n
        if self._tl is not None:
            self.times, self.duration = self._tl.times, self._tl.duration_s
        else:
            rate = self.fps or 25.0
            self.times, self.duration = np.arange(n) / rate, n / rate

    def __len__(self) -> int:
        return self._n

    def frames_in_order(self, order: Iterable[int]) -> Iterable[np.ndarray]:
        """Yield frame ``i`` for each ``i`` of ``order`` (indices may repeat, go back and forth)."""
        for i in order:
            yield self.frame(int(i))

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} of {self.path!r}, which has {self._n}")
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        block = max(0, i - self.capacity + 1)  # decoded again when going back: the frames up to i
        if self._dec is None or i < self._pos or self._keyframe_before(block) > self._pos:
            self._go_to(block)
        self._advance(i + 1, keep_from=block)
        return self._cache[i]

    def close(self) -> None:
        if self._dec is not None:
            self._dec.close()
            self._dec = self._it = self._peek = None

    def __enter__(self) -> "VideoFrames":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- decoding ---------------------------------------------------------------------------
    def _check_count(self, got: int, what: str = "decode") -> None:
        """A file that holds or decodes clearly fewer frames than declared is cut short."""
        d = self._declared if self._declared > 0 else (self._n or 0)
        if d > 0 and got < d - max(2, d // 100):
            raise ValueError(f"{self.path!r} is truncated or corrupt: its container declares {d} frames but only "
                             f"{got} {what}; copy or download it again, or re-encode what is left "
                             "(e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")

    def _keyframe_before(self, i: int) -> int:
        """Index of the last keyframe at or before frame ``i`` (0 without timestamps)."""
        if self._tl is None:
            return 0
        k = int(np.searchsorted(self._keys, i, side="right")) - 1
        return int(self._keys[k]) if k >= 0 else 0

    def _go_to(self, i: int) -> None:
        """Put the decoder where its next frames reach frame ``i``: the keyframe before it, else the start."""
        self._last, self._peek = None, None
        if self._tl is not None:
            k = int(np.searchsorted(self._keys, i, side="right")) - 1
            for key in self._keys[max(0, k - _SEEK_TRIES + 1):k + 1][::-1]:
                if key == 0:
                    break
                if self._dec is None:
                    self._dec = _VideoDecoder(self.path)
                self._dec.seek(self._tl.pts[key])
                self._it = self._dec.frames()
                got = self._pull()
                if got is not None and got[0] is not None and got[0] <= i:  # landed at or before i
                    self._peek, self._pos = got, got[0]
                    return
        self.close()  # from the start of the file
        self._dec = _VideoDecoder(self.path)
        self._it, self._pos = self._dec.frames(), 0

    def _pull(self) -> tuple[int | None, np.ndarray] | None:
        """The next decoded frame as ``(index, frame)``; index ``None``: not in the timeline."""
        if self._peek is not None:
            got, self._peek = self._peek, None
            return got
        pts, img = next(self._it, (None, None))
        if img is None:
            return None
        self.decoded += 1
        if self._tl is None or pts is None:
            return self._pos, img
        j = int(np.searchsorted(self._tl.pts, pts))
        return (j if j < len(self._tl.pts) and self._tl.pts[j] == pts else None), img

    def _store(self, i: int, img: np.ndarray, keep_from: int) -> None:
        if i >= keep_from:
            self._cache[i] = img
            self._cache.move_to_end(i)
            while len(self._cache) > self.capacity:
                self._cache.popitem(last=False)
            self.max_held = max(self.max_held, len(self._cache))

    def _advance(self, stop: int, keep_from: int) -> None:
        """Decode up to frame ``stop`` (excluded), caching frames from ``keep_from`` on."""
        if self._dec is None:
            self._go_to(0)
        while self._pos < stop:
            got = self._pull()
            if got is None:
                self._end_of_stream(keep_from)
                return
            j, img = got
            if j is None or j < self._pos:  # not in the timeline, or a leading frame before the seek point
                continue
            hold = self._last if self._last is not None else img
            for k in range(self._pos, j):  # frames that did not decode show the one before them
                self._store(k, hold, keep_from)
            self._store(j, img, keep_from)
            self._last, self._pos = img, j + 1

    def _end_of_stream(self, keep_from: int) -> None:
        self._check_count(self._pos)
        if self._n is None:  # counted by this decode
            if self._pos == 0:
                raise ValueError(f"{self.path!r} has a video stream but no decodable frame; re-encode it")
            self._n = self._pos
            return
        if self._last is None:
            raise ValueError(f"{self.path!r} has a video stream but no decodable frame; re-encode it")
        for k in range(self._pos, self._n):  # a frame or two short of the count: hold the last
            self._store(k, self._last, keep_from)
        self._pos = self._n
