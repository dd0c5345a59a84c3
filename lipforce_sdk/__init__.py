"""lipforce: real-time, few-step autoregressive diffusion lip sync on the edge.

    from lipforce_sdk import Engine
    engine = Engine.load()                      # the bundled default (tiny) model, torch backend
    session = engine.session()
    for out in session.push(audio_chunk, frame):
        show(out.image)
"""

from .config import ConfigError, ModelConfig, from_name
from .face import FaceBox, FaceNotFoundError
from .manifest import SDK_VERSION as __version__
from .session import Engine, InputError, OutputFrame, Session, SessionStats, default_model_dir

__all__ = [
    "ConfigError", "Engine", "FaceBox", "FaceNotFoundError", "InputError", "ModelConfig", "OutputFrame",
    "Session", "SessionStats", "default_model_dir", "from_name", "__version__",
]
