"""The one exception the engine builder and loader raise."""

from __future__ import annotations

from lipforce_sdk.contract import BackendError

__all__ = ["EngineError"]


class EngineError(BackendError):
    """An engine cannot be built, checked or loaded; the message names the value and the fix.

    A subclass of ``BackendError``, so code that loads any backend catches it the same way.
    """
