"""Many lipforce streams on NVIDIA Triton Inference Server: the model repository is
``deploy/triton`` (Python backend, sequence batcher: one correlation ID per stream);
``server.TritonServer`` starts a ``tritonserver`` for it (needs ``nvidia-pytriton``),
``client.RemoteEngine`` / ``RemoteSession`` stream to it as a local ``Engine`` / ``Session`` is
used (needs the ``triton`` extra: ``tritonclient[grpc]``)."""

from __future__ import annotations

__all__ = ["RemoteEngine", "RemoteSession", "RemoteStreamError", "TritonServer", "TritonNotInstalledError",
           "TritonServerError", "prepare_repository"]

_WHERE = {"RemoteEngine": "client", "RemoteSession": "client", "RemoteStreamError": "client",
          "TritonServer": "server", "TritonNotInstalledError": "server", "TritonServerError": "server",
          "prepare_repository": "server"}


def __getattr__(name):  # the client needs tritonclient, the server does not: import each on first use
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
