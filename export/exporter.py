"""Tracing the four graphs with ``torch.onnx.export(dynamo=True)``."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from lipforce_sdk.contract import state_out_name
from lipforce_sdk.manifest import sha256_file, write_manifest
from lipforce_sdk.model import LipSyncModel

__all__ = ["ATTENTION_FLAVOURS", "ExportError", "export_audio_encoder", "export_vae_encoder", "export_dit_step",
           "export_vae_decoder", "export_model", "example_inputs"]

ATTENTION_FLAVOURS = {"decomposed": 18, "onnx_attention": 23, "plugin": 18}
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_ONNX_DTYPE_NAMES = {1: "float32", 10: "float16", 16: "bfloat16", 6: "int32", 7: "int64", 9: "bool"}
_EXTERNAL_DATA_BYTES = 1 << 30  # graphs above this keep their weights in a side file (protobuf 2 GB limit)


class ExportError(RuntimeError):
    pass


# ---------------------------------------------------------------- graph wrappers (flat signatures)
class AudioEncoderGraph(nn.Module):
    def __init__(self, model: LipSyncModel):
        super().__init__()
        self.enc = model.audio_encoder

    def forward(self, mel):
        return self.enc(mel)


class VAEEncoderGraph(nn.Module):
    def __init__(self, model: LipSyncModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, frames, *caches):
        lat, new = self.vae.encode(frames, list(caches))
        return (lat, *new)


class VAEDecoderGraph(nn.Module):
    def __init__(self, model: LipSyncModel):
        super().__init__()
        self.vae = model.vae

    def forward(self, latents, *caches):
        out, new = self.vae.decode(latents, list(caches))
        return (out, *new)


class DiTStepGraph(nn.Module):
    def __init__(self, model: LipSyncModel):
        super().__init__()
        self.dit = model.dit
        self.layers = len(model.dit.blocks)

    def forward(self, x_t, t, cond, mask, audio_tokens, write_idx, q_pos, k_pos, k_valid, *kv):
        caches = [(kv[2 * i], kv[2 * i + 1]) for i in range(self.layers)]
        x0, new = self.dit.step(x_t, t, cond, mask, audio_tokens, write_idx, q_pos, k_pos, k_valid, caches, inplace=False)
        return (x0, *(t for pair in new for t in pair))


# ---------------------------------------------------------------- example inputs (static shapes)
def example_inputs(model: LipSyncModel, graph: str, dtype: torch.dtype = torch.float32, seed: int = 0,
                   batch: int | None = None):
    """``(names, tensors, output_names, state_map)`` for ``graph`` at the model's configured shapes.

    ``batch=None``: one stream (the batch-1 contract: the DiT's plan is ``[C]``/``[M]``). ``batch=b``:
    ``b`` streams, every tensor with a leading batch axis of ``b`` and the DiT's plan per element
    (``[b, C]``/``[b, M]``, element ``i`` ``i`` chunks further into its stream than element 0)."""
    if batch is not None:
        return _batched_example_inputs(model, graph, dtype, seed, batch)
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    C, tc = cfg.stream.chunk_frames, cfg.vae.temporal_compression
    fv = C * tc
    h, w = cfg.latent_hw
    res = cfg.stream.resolution
    z = cfg.latent_channels
    rnd = lambda *s: torch.randn(*s, generator=g).to(dtype)  # noqa: E731
    if graph == "audio_encoder":
        a = cfg.audio
        win = a.window_video_frames() * a.mels_per_video_frame(cfg.stream.fps)
        return ["mel"], [rnd(1, fv, win, a.n_mels)], ["audio_tokens"], {}
    if graph in ("vae_encoder", "vae_decoder"):
        part = "enc" if graph == "vae_encoder" else "dec"
        shapes = model.vae.cache_shapes(1)[part]
        states = [f"{part}_cache_{j}" for j in range(len(shapes))]
        if graph == "vae_encoder":
            names, tensors, out = ["frames"], [rnd(1, 3, fv, res, res).clamp(-1, 1)], ["latents"]
        else:
            names, tensors, out = ["latents"], [rnd(1, z, C, h, w)], ["frames"]
        return (names + states, tensors + [rnd(*s) for s in shapes], out + [state_out_name(s) for s in states],
                {s: state_out_name(s) for s in states})
    if graph == "dit_step":
        from lipforce_sdk.cache_plan import RingCachePlanner

        pl = RingCachePlanner.for_stream(cfg.stream)
        for _ in range(cfg.stream.sink_frames + cfg.stream.window_frames):  # a steady-state plan
            pl.commit()
        p = pl.plan()
        a = cfg.audio
        names = ["x_t", "t", "cond", "mask", "audio_tokens", "write_idx", "q_pos", "k_pos", "k_valid"]
        tensors = [rnd(1, z, C, h, w), torch.full((1,), 0.5).to(dtype), rnd(1, z, C, h, w),
                   torch.ones(1, cfg.mask_channels, C, h, w, dtype=dtype), rnd(1, fv, a.tokens_per_frame, a.token_dim)]
        tensors += [torch.from_numpy(x) for x in (p.write_idx, p.q_pos, p.k_pos, p.k_valid)]
        states = []
        for i in range(cfg.dit.num_layers):
            states += [f"kv_k_{i}", f"kv_v_{i}"]
        shape = model.dit.cache_shape(1)
        return (names + states, tensors + [rnd(*shape) for _ in states], ["x0"] + [state_out_name(s) for s in states],
                {s: state_out_name(s) for s in states})
    raise ExportError(f"unknown graph {graph!r}; expected audio_encoder, vae_encoder, dit_step or vae_decoder")


def _batched_example_inputs(model: LipSyncModel, graph: str, dtype: torch.dtype, seed: int, batch: int):
    from lipforce_sdk.cache_plan import RingCachePlanner
    from lipforce_sdk.contract import PLAN_INPUTS

    names, tensors, out_names, state = example_inputs(model, graph, dtype, seed)
    g = torch.Generator().manual_seed(seed + 1)
    out = []
    for name, x in zip(names, tensors):
        if name in PLAN_INPUTS:
            continue
        if x.is_floating_point() and name not in ("t", "mask"):
            x = torch.cat([x, torch.randn(batch - 1, *x.shape[1:], generator=g).to(dtype)])
        else:
            x = torch.cat([x] * batch)
        out.append(x)
    if graph == "dit_step":
        plans = []
        pl = RingCachePlanner.for_stream(model.cfg.stream)
        for _ in range(batch):  # streams at different positions: their slots and positions differ
            plans.append(pl.plan())
            pl.commit()
        plan = [torch.from_numpy(np.stack([getattr(p, n) for p in plans])) for n in PLAN_INPUTS]
        k = names.index(PLAN_INPUTS[0])
        out = out[:k] + plan + out[k:]
    return names, out, out_names, state


_WRAPPERS = {"audio_encoder": AudioEncoderGraph, "vae_encoder": VAEEncoderGraph, "dit_step": DiTStepGraph,
             "vae_decoder": VAEDecoderGraph}


def _io_spec(values) -> list[dict]:
    """Name, shape and dtype of each graph input/output; a dynamic (batch) axis is written as -1."""
    out = []
    for v in values:
        tt = v.type.tensor_type
        out.append({"name": v.name, "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim],
                    "dtype": _ONNX_DTYPE_NAMES.get(tt.elem_type, str(tt.elem_type))})
    return out


def _batch_dynamic_shapes(wrapper: nn.Module, tensors: list, max_batch: int) -> tuple:
    """``dynamic_shapes`` for ``torch.onnx.export``: axis 0 of every input is the batch, 1..max_batch.
    The graph wrappers take their state tensors as ``*args``, which ``torch.export`` sees as one
    tuple after the named inputs; hence the nesting."""
    import inspect

    batch = torch.export.Dim("batch", min=1, max=max_batch)
    named = sum(p.kind == p.POSITIONAL_OR_KEYWORD for p in inspect.signature(wrapper.forward).parameters.values())
    head = tuple({0: batch} for _ in tensors[:named])
    rest = tuple({0: batch} for _ in tensors[named:])
    return head + ((rest,) if rest else ())


@contextlib.contextmanager
def _quiet():
    """The dynamo exporter prints progress and warnings; keep the CLI's output readable."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _check_max_batch(max_batch, attention: str) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise ExportError(f"max_batch={max_batch!r} must be an integer >= 1 (1: one stream per call, the default)")
    if max_batch > 1 and attention == "plugin":
        raise ExportError(f"max_batch={max_batch} with attention='plugin': the lipforce KV-cache attention plugin "
                          "runs one stream per call (batch 1). Export the portable flavour for batching "
                          f"(attention='decomposed' or 'onnx_attention', `lipforce export --max-batch {max_batch}`), "
                          "or max_batch=1 for the plugin")
    return max_batch


def _export(model: LipSyncModel, graph: str, path: Path, precision: str, attention: str, max_batch: int = 1) -> dict:
    import onnx

    if attention not in ATTENTION_FLAVOURS:
        raise ExportError(f"attention={attention!r} is not one of {sorted(ATTENTION_FLAVOURS)}")
    if precision not in _DTYPES:
        raise ExportError(f"precision={precision!r} is not one of {sorted(_DTYPES)}")
    max_batch = _check_max_batch(max_batch, attention)
    dtype = _DTYPES[precision]
    if next(model.parameters()).dtype != dtype:
        import copy

        model = copy.deepcopy(model).to(dtype)  # never cast the caller's weights in place
    was_training = model.training
    # a batched graph is traced at batch 2 (a batch of 1 would be specialised to a constant)
    names, tensors, out_names, state = example_inputs(model, graph, dtype, batch=2 if max_batch > 1 else None)
    wrapper = _WRAPPERS[graph](model).eval()
    dynamic = _batch_dynamic_shapes(wrapper, tensors, max_batch) if max_batch > 1 else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbytes = sum(p.numel() * p.element_size() for p in wrapper.parameters())
    restore = None
    if graph == "dit_step" and attention == "plugin":
        from .plugin_op import plugin_cache_attention, plugin_translation_table

        restore, model.dit.cache_attention = model.dit.cache_attention, plugin_cache_attention(model.dit.rope)
        table = plugin_translation_table(model.cfg)
    else:
        table = None
    t0 = time.perf_counter()
    try:
        with _quiet(), torch.no_grad():
            prog = torch.onnx.export(wrapper, tuple(tensors), dynamo=True, opset_version=ATTENTION_FLAVOURS[attention],
                                     input_names=names, output_names=out_names, custom_translation_table=table,
                                     dynamic_shapes=dynamic, optimize=True, verbose=False)
            prog.save(str(path), external_data=nbytes > _EXTERNAL_DATA_BYTES)
    except Exception as e:  # the exporter's own errors are long; keep the cause
        raise ExportError(f"exporting {graph} ({precision}, attention={attention}) failed: {e}") from e
    finally:
        if restore is not None:
            model.dit.cache_attention = restore
        model.train(was_training)
    m = onnx.load(str(path), load_external_data=False)
    got_in = [i.name for i in m.graph.input]
    got_out = [o.name for o in m.graph.output]
    if got_in != names or got_out != out_names:
        raise ExportError(f"{graph}: exported I/O names {got_in} -> {got_out} differ from the contract {names} -> {out_names}")
    spec = {"file": path.name, "sha256": sha256_file(path), "inputs": _io_spec(m.graph.input),
            "outputs": _io_spec(m.graph.output), "state": state, "export_seconds": round(time.perf_counter() - t0, 2)}
    odd = [t["name"] for t in spec["inputs"] + spec["outputs"] if max_batch > 1 and t["shape"][:1] != [-1]]
    if odd:
        raise ExportError(f"{graph}: tensors {odd} have no dynamic batch axis in front after tracing with "
                          f"max_batch={max_batch}; the model code specialised the batch size")
    return spec


def _drop_stale_max_batch(out: Path) -> None:
    """A batch-1 export into a directory that held a batched one: its manifest must not keep ``max_batch``
    (``write_manifest`` updates the manifest it finds)."""
    p = out / "manifest.json"
    if p.is_file():
        m = json.loads(p.read_text())
        if m.pop("max_batch", None) is not None:
            p.write_text(json.dumps(m, indent=2, sort_keys=False) + "\n")


def export_audio_encoder(model: LipSyncModel, path, precision: str = "fp32", max_batch: int = 1) -> dict:
    return _export(model, "audio_encoder", Path(path), precision, "decomposed", max_batch)


def export_vae_encoder(model: LipSyncModel, path, precision: str = "fp32", max_batch: int = 1) -> dict:
    return _export(model, "vae_encoder", Path(path), precision, "decomposed", max_batch)


def export_vae_decoder(model: LipSyncModel, path, precision: str = "fp32", max_batch: int = 1) -> dict:
    return _export(model, "vae_decoder", Path(path), precision, "decomposed", max_batch)


def export_dit_step(model: LipSyncModel, path, precision: str = "fp32", attention: str = "decomposed",
                    max_batch: int = 1) -> dict:
    return _export(model, "dit_step", Path(path), precision, attention, max_batch)


def export_model(model: LipSyncModel, out_dir, precision: str = "fp32", attention: str = "decomposed",
                 progress: bool = True, max_batch: int = 1) -> dict:
    """Export all four graphs of ``model`` into ``out_dir`` and write its manifest. ``model`` itself
    is left as it was (the export casts a copy).

    ``max_batch``: 1 (the default) writes the batch-1 graphs; ``B > 1`` gives every tensor a dynamic
    leading batch axis 1..B and the DiT a cache plan per element (``lipforce_sdk.contract``), for
    ``Engine.load(..., max_batch=B)``; the manifest records ``"max_batch": B``. The plugin flavour
    is batch 1 only."""
    import copy

    from tqdm import tqdm

    _check_max_batch(max_batch, attention)
    out = Path(out_dir)
    model = copy.deepcopy(model).to(_DTYPES[precision]).eval()
    graphs = {}
    fns = {"audio_encoder": export_audio_encoder, "vae_encoder": export_vae_encoder, "dit_step": export_dit_step,
           "vae_decoder": export_vae_decoder}
    bar = tqdm(fns.items(), desc="export", unit="graph", disable=not progress)
    for name, fn in bar:
        bar.set_postfix_str(name)
        kw = {"attention": attention} if name == "dit_step" else {}
        graphs[name] = fn(model, out / f"{name}.onnx", precision=precision, max_batch=max_batch, **kw)
    flavour = "plugin" if attention == "plugin" else "portable"
    batch = {"max_batch": max_batch} if max_batch > 1 else {}  # absent: batch 1 (manifests written before)
    if max_batch == 1:
        _drop_stale_max_batch(out)
    return write_manifest(out, model.cfg, flavour=flavour, attention=attention, opset=ATTENTION_FLAVOURS[attention],
                          precision=precision, graphs=graphs, **batch)
