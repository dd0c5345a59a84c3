"""A video file's frames in any schedule's order, with bounded memory.

``lipforce run`` drives a video by its audio: the frames it needs are the video's in time order,
looped back and forth (ping-pong) when the audio is longer. Reading the whole video first costs
``frames x H x W x 3`` bytes (a 5-minute 1080p clip: 46 GB). ``VideoFrames`` instead:

- keeps the whole video in memory only when it fits ``budget_bytes`` (an idle loop of a few
  seconds: decoded once, every loop served from memory);
- otherwise decodes as it goes and keeps at most ``budget_bytes`` of frames (an LRU cache): a
  forward pass is one decode; a backward (ping-pong) pass decodes the block of frames before it
  again from the start of the file, a cache-full at a time (slower, never more memory).

Frame ``i`` is the ``i``-th decoded frame in presentation order, as ``media.read_video`` numbers
them, so both paths give the same pixels. A file that decodes to clearly fewer frames than its
container declares (more than 2 or 1 % short: cut off in a copy or a download) is an error, not a
shorter video.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Iterable, Iterator

import numpy as np

from .media import iter_video_frames, probe, read_video

__all__ = ["VideoFrames", "DEFAULT_BUDGET_MB"]

DEFAULT_BUDGET_MB = 1024


class VideoFrames:
    """Frames of ``path`` by index (``frames_in_order``), holding at most ``budget_bytes`` of them.

    ``fps``: the stream's average rate; ``len()``: frames (declared by the container, else counted
    by one decode); ``in_memory``: the whole video fits the budget and was read at once;
    ``capacity``: frames the cache may hold; ``max_held``: the most it held; ``decoded``: frames
    decoded so far (re-reads included).
    """

    def __init__(self, path: str | os.PathLike, budget_bytes: int = DEFAULT_BUDGET_MB << 20):
        info = probe(path)
        if not info.has_video:
            raise ValueError(f"{os.fspath(path)!r} has no video stream; pass a video file with a face")
        self.path, self.fps = os.fspath(path), info.fps
        frame_bytes = max(1, info.width * info.height * 3)
        n = info.num_frames
        self.capacity = max(2, int(budget_bytes) // frame_bytes)
        self.in_memory = 0 < n <= self.capacity
        self._all = None
        self._declared = n
        if self.in_memory:
            self._all, fps = read_video(path)
            self.fps = fps or self.fps
            self._check_count(len(self._all))
            n = len(self._all)
        elif n <= 0:  # the container does not say: count by decoding once, keeping the frames while they fit
            kept: list[np.ndarray] | None = []
            for f in iter_video_frames(path):
                n += 1
                if kept is not None:
                    kept.append(f)
                    if n > self.capacity:
                        kept = None
            if kept:
                self._all = np.stack(kept)
                self.in_memory = True
        if n <= 0:
            raise ValueError(f"{self.path!r} has a video stream but no decodable frame; re-encode it")
        self._n = n
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._it: Iterator[np.ndarray] | None = None
        self._pos = 0  # index of the next frame self._it yields
        self._last: np.ndarray | None = None  # the last frame decoded (a container that declared too many)
        self.max_held = len(self._all) if self._all is not None else 0
        self.decoded = len(self._all) if self._all is not None else 0

    def __len__(self) -> int:
        return self._n

    def frames_in_order(self, order: Iterable[int]) -> Iterator[np.ndarray]:
        """Yield frame ``i`` for each ``i`` of ``order`` (indices may repeat, go back and forth)."""
        for i in order:
            yield self.frame(int(i))

    def frame(self, i: int) -> np.ndarray:
        if not 0 <= i < self._n:
            raise IndexError(f"frame {i} of {self.path!r}, which has {self._n}")
        if self._all is not None:
            return self._all[i]
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        if i < self._pos:  # behind the decoder: decode the block that ends at i again
            self._restart()
            self._advance(max(0, i - self.capacity + 1), keep=False)
        self._advance(i + 1, keep=True)
        if i in self._cache:
            return self._cache[i]
        return self._last  # the file has fewer frames than its container declared: hold the last

    def _check_count(self, decoded: int) -> None:
        """A file that decodes to clearly fewer frames than its container declares is cut short."""
        d = self._declared
        if d > 0 and decoded < d - max(2, d // 100):
            raise ValueError(f"{self.path!r} is truncated or corrupt: its container declares {d} frames but only "
                             f"{decoded} decode; copy or download it again, or re-encode what is left "
                             "(e.g. ffmpeg -i IN -c:v libx264 OUT.mp4)")

    def close(self) -> None:
        if self._it is not None:
            self._it.close()
            self._it = None

    def _restart(self) -> None:
        self.close()
        self._it = iter_video_frames(self.path)
        self._pos = 0

    def _advance(self, stop: int, keep: bool) -> None:
        """Decode up to frame ``stop`` (excluded), caching what is decoded when ``keep``."""
        if self._it is None:
            self._restart()
        while self._pos < stop:
            f = next(self._it, None)
            if f is None:
                self._check_count(self._pos)
                self._n = max(1, self._pos)  # ran out a frame or two early: the real count
                break
            self.decoded += 1
            self._last = f
            if keep:
                self._cache[self._pos] = f
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)
                self.max_held = max(self.max_held, len(self._cache))
            self._pos += 1
