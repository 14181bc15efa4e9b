"""Finding and loading workflow packs, and checking them against a live server.

A pack is a folder with ``manifest.toml`` (or ``manifest.json``) and the workflow file
it names. Packs ship in ``comfygate/data/workflows``; an operator's extra folder
(``COMFYGATE_COMFYUI_WORKFLOWS_DIR``) adds packs or replaces shipped ones by capability.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from comfygate.adapters.comfyui.client import ComfyUIClient
from comfygate.domain.errors import ValidationFailedError
from comfygate.domain.workflows import ParamSpec, WorkflowPack, parse_pack

MANIFEST_NAMES = ("manifest.toml", "manifest.json")


def shipped_packs_dir() -> Path:
    """The folder of the packs that come with comfygate."""
    return Path(str(resources.files("comfygate") / "data" / "workflows"))


def load_pack(folder: Path) -> WorkflowPack:
    """Read and validate one pack folder; every problem in one ``ValidationFailedError``."""
    manifest_path = next((folder / n for n in MANIFEST_NAMES if (folder / n).is_file()), None)
    if manifest_path is None:
        raise ValidationFailedError(
            f"no manifest in {folder}", errors=[f"{folder}: no manifest.toml"]
        )
    try:
        raw = manifest_path.read_text(encoding="utf-8")
        manifest = tomllib.loads(raw) if manifest_path.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:
        raise ValidationFailedError(
            f"unreadable manifest {manifest_path}", errors=[str(exc)]
        ) from exc
    workflow_file = folder / str(manifest.get("workflow", "workflow.json"))
    try:
        workflow = json.loads(workflow_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationFailedError(
            f"unreadable workflow {workflow_file}", errors=[f"workflow: {exc}"]
        ) from exc
    if not isinstance(workflow, Mapping):
        raise ValidationFailedError(
            f"bad workflow {workflow_file}", errors=["workflow: not an object"]
        )
    return parse_pack(manifest, workflow, name=folder.name)


def load_packs(extra_dirs: Iterable[Path] = ()) -> dict[str, WorkflowPack]:
    """Every pack by capability: shipped ones, then each extra folder (later ones win).

    Raises one ``ValidationFailedError`` listing the problems of every bad pack.
    """
    packs: dict[str, WorkflowPack] = {}
    errors: list[str] = []
    for root in (shipped_packs_dir(), *extra_dirs):
        if not root.is_dir():
            errors.append(f"{root}: workflow pack folder does not exist")
            continue
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if not any((folder / n).is_file() for n in MANIFEST_NAMES):
                continue
            try:
                pack = load_pack(folder)
            except ValidationFailedError as exc:
                errors.extend(f"{folder.name}: {e}" for e in exc.errors)
                continue
            packs[pack.capability] = pack
    if errors:
        raise ValidationFailedError("workflow packs failed validation", errors=errors)
    return packs


def _input_spec(info: Mapping[str, Any], name: str) -> Any:
    inputs = info.get("input", {})
    for section in ("required", "optional"):
        table = inputs.get(section, {}) if isinstance(inputs, Mapping) else {}
        if isinstance(table, Mapping) and name in table:
            return table[name]
    return None


def _choices(spec: Any) -> list[str] | None:
    """A combo input's options: legacy ``[[...], {...}]`` or ``["COMBO", {"options": [...]}]``."""
    if isinstance(spec, list) and spec and isinstance(spec[0], list):
        return [str(c) for c in spec[0]]
    if (
        isinstance(spec, list)
        and len(spec) > 1
        and spec[0] == "COMBO"
        and isinstance(spec[1], Mapping)
    ):
        return [str(c) for c in spec[1].get("options", [])]
    return None


def _check_param(param: ParamSpec, spec: Any, where: str) -> list[str]:
    opts = (
        spec[1] if isinstance(spec, list) and len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    )
    if param.kind == "choice":
        choices = _choices(spec)
        if choices is None:
            return [f"{where}: the server's input is not a list of choices"]
        missing = [a for a in param.allowed if a not in choices]
        return [f"{where}: the server does not offer {', '.join(missing)}"] if missing else []
    if param.kind == "int":
        assert param.min is not None and param.max is not None
        errors = []
        if isinstance(opts.get("min"), int | float) and param.grid()[0] < opts["min"]:
            errors.append(f"{where}: our minimum {param.min} is below the server's {opts['min']}")
        if isinstance(opts.get("max"), int | float) and param.grid()[1] > opts["max"]:
            errors.append(f"{where}: our maximum {param.max} is above the server's {opts['max']}")
        return errors
    return []


async def check_pack_online(client: ComfyUIClient, pack: WorkflowPack) -> list[str]:
    """Problems running ``pack`` on this server (``/object_info``): missing node classes,
    unknown inputs, parameter ranges or checkpoints the server does not accept."""
    infos = {cls: await client.object_info(cls) for cls in sorted(pack.class_types())}
    errors = [
        f"{pack.name}: node class {cls} is not installed" for cls, i in infos.items() if i is None
    ]
    targets: list[tuple[str, str, ParamSpec | None]] = [(pack.image.node, pack.image.input, None)]
    targets += [(p.target.node, p.target.input, p) for p in pack.params.values()]
    for node, name, param in targets:
        info = infos.get(str(pack.workflow[node]["class_type"]))
        if info is None:
            continue
        where = f"{pack.name}: node {node} input {name}"
        spec = _input_spec(info, name)
        if spec is None:
            errors.append(f"{where}: the server's node has no such input")
        elif param is not None:
            errors.extend(_check_param(param, spec, where))
    return errors
