"""A model on the gateway: the verified artifact, its ONNX Runtime session, loading and SIGHUP reloads."""

from typing import TYPE_CHECKING

from runtime._lazy import lazy_exports as _lazy_exports

if TYPE_CHECKING:
    from runtime.model.artifact import Artifact, load_artifact
    from runtime.model.loading import LoadedModel, load_model
    from runtime.model.reload import ReloadPlan, prepare_reload
    from runtime.model.session import SessionReport, create_session

__all__ = [
    "Artifact",
    "LoadedModel",
    "ReloadPlan",
    "SessionReport",
    "create_session",
    "load_artifact",
    "load_model",
    "prepare_reload",
]

__getattr__ = _lazy_exports(
    __name__,
    {
        "Artifact": "runtime.model.artifact",
        "LoadedModel": "runtime.model.loading",
        "ReloadPlan": "runtime.model.reload",
        "SessionReport": "runtime.model.session",
        "create_session": "runtime.model.session",
        "load_artifact": "runtime.model.artifact",
        "load_model": "runtime.model.loading",
        "prepare_reload": "runtime.model.reload",
    },
)
