"""ONNX Runtime backend: the exported graphs, state kept as NumPy arrays between calls. No torch."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..manifest import read_manifest, sha256_file
from .base import BackendError
from .graph_backend import GraphBackend

__all__ = ["OrtGraphRunner", "OnnxRuntimeBackend"]

_DT = {"float32": np.float32, "float16": np.float16, "int32": np.int32, "int64": np.int64, "bool": np.bool_}


class OrtGraphRunner:
    """One graph in an ``onnxruntime.InferenceSession``; state inputs are fed from the previous
    call's state outputs (``state`` maps each state input name to its current array)."""

    def __init__(self, path: Path, spec: dict, providers: Sequence[str] | None = None, session_options=None,
                 check_hash: bool = True, transform=None):
        import onnxruntime as ort

        if not path.is_file():
            raise BackendError(f"graph file {str(path)!r} is missing; re-export the model directory")
        if check_hash and spec.get("sha256") and sha256_file(path) != spec["sha256"]:
            raise BackendError(f"{str(path)!r} does not match the sha256 in its manifest (changed or corrupted); "
                               "re-export with `lipforce export`")
        self.spec = spec
        self.state_map: dict[str, str] = dict(spec.get("state", {}))
        so = session_options or ort.SessionOptions()
        source = str(path) if transform is None else transform(path)
        self.sess = ort.InferenceSession(source, so, providers=list(providers or ["CPUExecutionProvider"]))
        self._inputs = {i["name"]: i for i in spec["inputs"]}
        self._out_names = [o["name"] for o in spec["outputs"]]
        self._state_outs = set(self.state_map.values())

    def new_state(self) -> dict[str, np.ndarray]:
        """One stream's state (a batched graph's batch axis, -1 in the manifest, is 1 here)."""
        return {n: np.zeros([1 if d < 0 else d for d in self._inputs[n]["shape"]], _DT[self._inputs[n]["dtype"]])
                for n in self.state_map}

    def reset_state(self, state: dict[str, np.ndarray] | None) -> None:
        for a in (state or {}).values():
            a.fill(0)

    def run(self, feeds: Mapping[str, np.ndarray], state: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
        inputs = dict(feeds)
        if state:
            inputs.update(state)
        outs = dict(zip(self._out_names, self.sess.run(self._out_names, inputs)))
        for sin, sout in self.state_map.items():
            state[sin] = outs[sout]
        return {k: v for k, v in outs.items() if k not in self._state_outs}

    def run_batch(self, calls: Sequence[tuple[Mapping[str, np.ndarray], dict | None]]) -> list[dict[str, np.ndarray]]:
        """Several streams in one call of a batched graph: feeds and states concatenated along the
        batch axis, each stream's next state and outputs its own slice of the results (the states
        are replaced only once the call has succeeded)."""
        inputs = {n: np.concatenate([f[n] for f, _ in calls]) for n in calls[0][0]}
        for sin in self.state_map:
            inputs[sin] = np.concatenate([s[sin] for _, s in calls])
        outs = dict(zip(self._out_names, self.sess.run(self._out_names, inputs)))
        results = []
        for i, (_, state) in enumerate(calls):
            for sin, sout in self.state_map.items():
                state[sin] = outs[sout][i:i + 1]
            results.append({k: v[i:i + 1] for k, v in outs.items() if k not in self._state_outs})
        return results


class OnnxRuntimeBackend(GraphBackend):
    @classmethod
    def load(cls, model_dir: str | Path, providers: Sequence[str] | None = None, threads: int | None = None,
             spin: bool = False) -> "OnnxRuntimeBackend":
        """``spin``: let idle intra-op threads spin. Off by default: the four graphs run one after
        another, each in its own session, and a finished session's spinning threads steal the cores
        from the next one (measured on 2 cores: 169 -> 265 FPS for the tiny model with spinning off;
        BENCHMARKS.md)."""
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendError("backend='onnxruntime' needs ONNX Runtime: pip install 'lipforce[onnx]'") from e
        d = Path(model_dir)
        m, cfg = read_manifest(d)
        if "graphs" not in m:
            raise BackendError(f"{str(d)!r} has no exported graphs (manifest has no 'graphs'); "
                               f"run `lipforce export --checkpoint {d} --out DIR` and load DIR")
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = threads
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        transform = None
        if m.get("flavour") == "plugin":
            # the lipforce::KVCacheAttention nodes run the C++ CPU reference as an onnxruntime-extensions
            # custom op, which lives in the ai.onnx.contrib domain
            import onnx

            from ..kvattn import register_ort_custom_op, to_ort_contrib_domain

            so.register_custom_ops_library(register_ort_custom_op())
            transform = lambda path: to_ort_contrib_domain(onnx.load(str(path))).SerializeToString()  # noqa: E731

        runners = {g: OrtGraphRunner(d / spec["file"], spec, providers, so, transform=transform)
                   for g, spec in m["graphs"].items()}
        return cls("onnxruntime", cfg, m, runners)
