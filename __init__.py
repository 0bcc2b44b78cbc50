"""Forget-It-All for ComfyUI: the pack's entry point.

ComfyUI reads WEB_DIRECTORY and then looks for NODE_CLASS_MAPPINGS before comfy_entrypoint;
only comfy_entrypoint is exported so that the V3 path is the one taken. Outside ComfyUI
(pytest, scripts) importing this file registers nothing.
"""

WEB_DIRECTORY = "./web"

try:
    import comfy_api.latest  # noqa: F401  (present only inside ComfyUI)
except ImportError:
    __all__ = []
else:
    from .nodes import comfy_entrypoint

    __all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
