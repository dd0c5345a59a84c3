"""A build progress display fed by TensorRT's ``IProgressMonitor`` callbacks.

``BuildProgress`` is plain Python (the flavour wraps it in its own ``IProgressMonitor`` subclass):
one tqdm bar per phase, nested by depth under its parent, and a record of every phase so a caller
(or a test) can see what TensorRT reported. TensorRT may call it from several threads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["BuildProgress", "PhaseRecord"]


@dataclass
class PhaseRecord:
    name: str
    parent: str | None
    num_steps: int
    depth: int
    steps_done: int = 0
    finished: bool = False


class BuildProgress:
    """Receives ``phase_start`` / ``step_complete`` / ``phase_finish`` and draws nested tqdm bars.

    ``disable=True`` keeps the record but draws nothing; ``max_depth`` limits how deep nested phases
    get a bar of their own (TensorRT nests six levels; all are recorded). ``cancel()`` makes the
    next ``step_complete`` return False, which asks TensorRT to stop the build.
    """

    def __init__(self, *, disable: bool = False, label: str = "", position: int = 0, max_depth: int = 2):
        self.disable = disable
        self.max_depth = max_depth
        self.label = label
        self.position = position
        self.phases: list[PhaseRecord] = []
        self._open: dict[str, PhaseRecord] = {}
        self._bars: dict[str, object] = {}
        self._lock = threading.Lock()
        self._cancelled = False

    # ---- IProgressMonitor ----
    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        with self._lock:
            parent = self._open.get(parent_phase) if parent_phase else None
            rec = PhaseRecord(phase_name, parent_phase, int(num_steps), depth=(parent.depth + 1) if parent else 0)
            self.phases.append(rec)
            self._open[phase_name] = rec
            if not self.disable and rec.depth <= self.max_depth:
                from tqdm.auto import tqdm

                desc = f"{self.label}: {phase_name}" if self.label and rec.depth == 0 else phase_name
                self._bars[phase_name] = tqdm(total=rec.num_steps, desc="  " * rec.depth + desc,
                                              position=self.position + rec.depth, leave=rec.depth == 0,
                                              unit="step", dynamic_ncols=True)

    def step_complete(self, phase_name: str, step: int) -> bool:
        with self._lock:
            rec = self._open.get(phase_name)
            if rec is not None:
                rec.steps_done = max(rec.steps_done, int(step) + 1)
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(min(rec.steps_done, rec.num_steps) - bar.n)  # redraws at most every mininterval
            return not self._cancelled

    def phase_finish(self, phase_name: str) -> None:
        with self._lock:
            rec = self._open.pop(phase_name, None)
            if rec is not None:
                rec.finished = True
            bar = self._bars.pop(phase_name, None)
            if bar is not None:
                bar.update(bar.total - bar.n)
                bar.close()

    # ---- control ----
    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()

    def summary(self) -> dict:
        """Top-level phases and how many phases ran in all (for a log line)."""
        return {"phases": len(self.phases), "top_level": [p.name for p in self.phases if p.depth == 0]}
