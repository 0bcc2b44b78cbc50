"""Run a real ComfyUI in this process, on the CPU, for the integration tests.

ComfyUI is not a package: it is a source tree found through ``COMFYUI_PATH``
(see tests/integration/README.md for how to set one up). Nothing here starts the
HTTP server; prompts go straight through ComfyUI's own ``validate_prompt`` and
``PromptExecutor``, the same calls ``server.py`` and ``main.py`` make.

Everything ComfyUI keeps is process-global (the node registry, the model
folders, the loaded models), so there is one host per process: ``boot()``
returns the same ``ComfyHost`` every time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("fia.tests.comfy_host")

_HOST: ComfyHost | None = None


class ComfyUnavailable(RuntimeError):
    """COMFYUI_PATH is unset or does not point at a ComfyUI source tree."""


class PromptValidationError(RuntimeError):
    """ComfyUI refused the prompt; ``error`` and ``node_errors`` are ComfyUI's own dicts."""

    def __init__(self, error: dict, node_errors: dict):
        self.error = error
        self.node_errors = node_errors
        lines = [f"{error.get('message')}: {error.get('details')}"]
        for node_id, info in node_errors.items():
            for reason in info.get("errors", []):
                lines.append(
                    f"  node {node_id} ({info.get('class_type')}): {reason.get('message')}: {reason.get('details')}"
                )
        super().__init__("\n".join(lines))


class PromptExecutionError(RuntimeError):
    """A node raised while the prompt ran (or the run was interrupted)."""

    def __init__(self, event: str, data: dict):
        self.event = event
        self.data = data
        text = f"{event} in node {data.get('node_id')} ({data.get('node_type')})"
        if "exception_message" in data:
            text += f": {data.get('exception_type')}: {data['exception_message']}\n" + "".join(
                data.get("traceback", [])
            )
        super().__init__(text)


def comfyui_path() -> Path:
    """The ComfyUI tree named by COMFYUI_PATH, or ComfyUnavailable saying why not."""
    raw = os.environ.get("COMFYUI_PATH", "").strip()
    if not raw:
        raise ComfyUnavailable("COMFYUI_PATH is not set (see tests/integration/README.md)")
    path = Path(raw).expanduser().resolve()
    for marker in (
        "nodes.py",
        "execution.py",
        "folder_paths.py",
        "comfy/model_management.py",
        "comfy_api/latest/__init__.py",
    ):
        if not (path / marker).is_file():
            raise ComfyUnavailable(f"COMFYUI_PATH={raw} is not a ComfyUI tree with the V3 API: {marker} is missing")
    return path


class RecordingServer:
    """What PromptExecutor needs of ``server.PromptServer``: it records every message.

    The executor reads ``client_id``, ``last_node_id`` and calls ``send_sync``;
    the progress handler also reads ``sockets_metadata``.
    """

    def __init__(self) -> None:
        self.client_id: str | None = None
        self.last_node_id: str | None = None
        self.last_prompt_id: str | None = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[Any, Any]] = []

    def send_sync(self, event, data, sid=None) -> None:
        self.messages.append((event, data))


@dataclass
class PromptResult:
    """What one executed prompt produced.

    ``outputs[node_id]`` is a tuple with one entry per output socket of that
    node (only nodes that ran or came from the cache are present); an entry is
    the value itself, or a list when the node produced a list of values.
    ``ui[node_id]`` is what the node sent to the frontend (e.g. ``{"images": [...]}``).
    ``progress`` holds ``(node_id, value, total)`` for every progress-bar update.
    """

    prompt_id: str
    outputs: dict[str, tuple]
    ui: dict[str, dict]
    messages: list[tuple[str, dict]]
    progress: list[tuple[str | None, float, float]] = field(default_factory=list)


def _settle_torchvision_before_comfyui() -> None:
    """Let transformers and diffusers look for torchvision before ComfyUI's folder is on sys.path.

    Where no torchvision wheel matches the installed torch, the test setup puts a pure-Python
    torchvision stub inside the ComfyUI folder (README.md): ComfyUI only needs to import it,
    but transformers and diffusers would take it for the real library. Both cache the answer.
    """
    try:
        import diffusers.utils.import_utils  # noqa: F401  (computes its answer on import)
        from transformers.utils.import_utils import is_torchvision_available

        is_torchvision_available()
    except ImportError:
        pass


class ComfyHost:
    """One booted ComfyUI: its modules, a recording server and a PromptExecutor."""

    def __init__(self, root: Path, base_directory: Path):
        self.root = root
        self.base_directory = base_directory
        self.progress: list[tuple[str | None, float, float]] = []
        self._boot()

    def _boot(self) -> None:
        _settle_torchvision_before_comfyui()
        if str(self.root) not in sys.path:
            sys.path.insert(0, str(self.root))
        import comfy.options

        comfy.options.enable_args_parsing(False)  # never parse pytest's argv
        import comfy.cli_args

        comfy.cli_args.args.cpu = True  # read once, when comfy.model_management is first imported
        import comfy.model_management as mm

        # main.py imports ComfyUI's top-level `utils` package before `nodes`; nodes.py
        # puts comfy/ first on sys.path, after which `import utils` finds comfy/utils.py.
        import utils.extra_config  # noqa: F401

        if mm.get_torch_device().type != "cpu":
            raise RuntimeError("comfy.model_management was imported before --cpu could be set")
        import comfy.utils
        import execution
        import folder_paths

        import nodes

        self.mm, self.nodes, self.execution, self.folder_paths = mm, nodes, execution, folder_paths
        for kind in ("output", "input", "temp"):
            d = self.base_directory / kind
            d.mkdir(parents=True, exist_ok=True)
            getattr(folder_paths, f"set_{kind}_directory")(str(d))

        failed = asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        del failed  # init_extra_nodes logs the comfy_extras files it could not import
        comfy.utils.set_progress_bar_global_hook(self._progress_hook)
        self.server = RecordingServer()
        self.executor = execution.PromptExecutor(self.server, cache_type=execution.CacheType.CLASSIC)

    def _progress_hook(self, value, total, preview_image, prompt_id=None, node_id=None):
        # The same contract as main.py's hijack_progress: progress updates are where a
        # pending interrupt is raised.
        from comfy_execution.progress import get_progress_state
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if node_id is None and context is not None:
            node_id = context.node_id
        self.mm.throw_exception_if_processing_interrupted()
        self.progress.append((node_id, value, total))
        get_progress_state().update_progress(node_id, value, total, preview_image)

    # -- node packs -------------------------------------------------------------
    def load_pack(self, directory: str | os.PathLike) -> list[str]:
        """Load a custom node pack the way ComfyUI loads one from custom_nodes/.

        Returns the node ids it registered; raises if ComfyUI reports a failure
        (the reason is in ComfyUI's log).
        """
        before = set(self.nodes.NODE_CLASS_MAPPINGS)
        path = str(Path(directory).resolve())
        ok = asyncio.run(self.nodes.load_custom_node(path, module_parent="custom_nodes"))
        if not ok:
            raise RuntimeError(f"ComfyUI could not load the node pack at {path}; see the log above")
        return sorted(set(self.nodes.NODE_CLASS_MAPPINGS) - before)

    def node_class(self, class_type: str):
        try:
            return self.nodes.NODE_CLASS_MAPPINGS[class_type]
        except KeyError:
            raise KeyError(f"ComfyUI has no node {class_type!r}") from None

    # -- models -----------------------------------------------------------------
    def add_model_folder(self, folder_name: str, directory: str | os.PathLike) -> None:
        self.folder_paths.add_model_folder_path(folder_name, str(directory))

    # -- prompts ----------------------------------------------------------------
    def run_prompt(self, prompt: dict, *, fresh: bool = False) -> PromptResult:
        """Validate and execute an API-format prompt; return what every node produced.

        ComfyUI caches node outputs by their inputs across prompts, so a prompt
        identical to an earlier one returns cached values; ``fresh=True`` drops
        the cache first.
        """
        prompt = {str(k): v for k, v in prompt.items()}
        prompt_id = str(uuid.uuid4())
        valid, error, outputs_to_run, node_errors = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid:
            raise PromptValidationError(error, node_errors)
        if fresh:
            self.executor.reset()
        self.progress = []
        self.server.last_prompt_id = prompt_id
        self.executor.execute(prompt, prompt_id, {}, outputs_to_run)
        for event, data in self.executor.status_messages:
            if event in ("execution_error", "execution_interrupted"):
                raise PromptExecutionError(event, data)
        outputs = {}
        for node_id in prompt:
            data = self.executor.caches.outputs.get(node_id)
            if data is not None:
                outputs[node_id] = tuple(v[0] if len(v) == 1 else list(v) for v in data)
        return PromptResult(
            prompt_id=prompt_id,
            outputs=outputs,
            ui=dict(self.executor.history_result.get("outputs", {})),
            messages=list(self.executor.status_messages),
            progress=list(self.progress),
        )

    def workflow_to_prompt(self, workflow: dict) -> dict:
        """Convert a UI-format workflow (what the frontend saves) to an API-format prompt."""
        from comfy_workflow import workflow_to_prompt

        return workflow_to_prompt(workflow, self.nodes.NODE_CLASS_MAPPINGS)


def boot(base_directory: str | os.PathLike) -> ComfyHost:
    """Boot ComfyUI once per process (CPU only); later calls return the same host.

    ``base_directory`` receives ComfyUI's output/, input/ and temp/ folders so
    that nothing is written into the ComfyUI tree.
    """
    global _HOST
    if _HOST is None:
        _HOST = ComfyHost(comfyui_path(), Path(base_directory))
    return _HOST
