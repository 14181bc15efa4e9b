"""Workflow packs: a ComfyUI API-format workflow plus a manifest that says where things go.

A pack is data, not code: the manifest names the node and input that receive the
uploaded image, the output node whose images are the result, our resource-report node,
and every user-settable parameter (``image_size``, ``checkpoint``, ``fp16`` ...) with
its node, input, type, range and default. A new capability is a new pack plus a
price-book entry. Parsing returns every problem at once (``ValidationFailedError``).

Pure: takes already-decoded mappings (the loader in ``adapters/comfyui`` reads files).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from comfygate.domain.errors import InvalidOptionError, ValidationFailedError

PARAM_KINDS = ("int", "choice", "bool")


@dataclass(frozen=True, slots=True)
class NodeInput:
    """One input of one node of the workflow."""

    node: str
    input: str


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """A user-settable parameter mapped onto a node input."""

    name: str
    target: NodeInput
    kind: str
    default: Any
    min: int | None = None
    max: int | None = None
    step: int = 1
    allowed: tuple[str, ...] = ()

    def grid(self) -> tuple[int, int]:
        """The smallest and largest multiples of ``step`` inside [min, max]."""
        assert self.min is not None and self.max is not None
        return math.ceil(self.min / self.step) * self.step, self.max // self.step * self.step


@dataclass(frozen=True, slots=True)
class WorkflowPack:
    """A validated workflow pack."""

    name: str
    capability: str
    workflow: Mapping[str, Any]
    image: NodeInput
    output_node: str
    output_prefix: NodeInput | None = None
    report_node: str | None = None
    params: Mapping[str, ParamSpec] = field(default_factory=dict)
    description: str = ""

    def class_types(self) -> frozenset[str]:
        """Every node class the workflow needs installed."""
        return frozenset(str(node["class_type"]) for node in self.workflow.values())


def _node_input(raw: Any, where: str, workflow: Mapping[str, Any], errors: list[str]) -> NodeInput:
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: must be a table with 'node' and 'input'")
        return NodeInput("", "")
    node, name = str(raw.get("node", "")), str(raw.get("input", ""))
    if node not in workflow:
        errors.append(f"{where}: node {node!r} is not in the workflow")
    elif name not in workflow[node].get("inputs", {}):
        errors.append(f"{where}: node {node!r} has no input {name!r}")
    return NodeInput(node, name)


def _int_field(raw: Mapping[str, Any], key: str, where: str, errors: list[str]) -> int | None:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        errors.append(f"{where}: '{key}' must be an integer")
        return None
    return value


def _parse_int_param(
    spec: ParamSpec, raw: Mapping[str, Any], where: str, errors: list[str]
) -> ParamSpec:
    lo, hi = _int_field(raw, "min", where, errors), _int_field(raw, "max", where, errors)
    default = _int_field(raw, "default", where, errors)
    step = raw.get("step", 1)
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        errors.append(f"{where}: 'step' must be a positive integer")
        step = 1
    if lo is None or hi is None or default is None:
        return spec
    if lo > hi:
        errors.append(f"{where}: min {lo} is above max {hi}")
    elif not lo <= default <= hi:
        errors.append(f"{where}: default {default} is outside [{lo}, {hi}]")
    elif default % step:
        errors.append(f"{where}: default {default} is not a multiple of step {step}")
    elif math.ceil(lo / step) * step > hi:
        errors.append(f"{where}: no multiple of step {step} lies in [{lo}, {hi}]")
    return ParamSpec(spec.name, spec.target, "int", default, lo, hi, step)


def _parse_param(name: str, raw: Any, workflow: Mapping[str, Any], errors: list[str]) -> ParamSpec:
    where = f"params.{name}"
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: must be a table")
        return ParamSpec(name, NodeInput("", ""), "int", None)
    target = _node_input(raw, where, workflow, errors)
    kind = raw.get("type")
    spec = ParamSpec(name, target, str(kind), raw.get("default"))
    if kind == "int":
        return _parse_int_param(spec, raw, where, errors)
    if kind == "choice":
        allowed = raw.get("allowed")
        if (
            not isinstance(allowed, list)
            or not allowed
            or not all(isinstance(a, str) for a in allowed)
        ):
            errors.append(f"{where}: 'allowed' must be a non-empty list of strings")
            allowed = []
        if spec.default not in allowed:
            errors.append(f"{where}: default {spec.default!r} is not in 'allowed'")
        return ParamSpec(name, target, "choice", spec.default, allowed=tuple(allowed))
    if kind == "bool":
        if not isinstance(spec.default, bool):
            errors.append(f"{where}: default must be true or false")
        return spec
    errors.append(f"{where}: 'type' must be one of {', '.join(PARAM_KINDS)}")
    return spec


def _check_workflow(workflow: Mapping[str, Any], errors: list[str]) -> None:
    if not workflow:
        errors.append(
            "workflow: is empty (API-format JSON expected: {node_id: {class_type, inputs}})"
        )
    for node_id, node in workflow.items():
        if not isinstance(node, Mapping) or not isinstance(node.get("class_type"), str):
            errors.append(f"workflow: node {node_id!r} has no class_type (is it API format?)")
        elif not isinstance(node.get("inputs", {}), Mapping):
            errors.append(f"workflow: node {node_id!r} has no inputs table")


def parse_pack(
    manifest: Mapping[str, Any], workflow: Mapping[str, Any], *, name: str
) -> WorkflowPack:
    """Validate a manifest against its workflow; raise ``ValidationFailedError`` with all errors."""
    errors: list[str] = []
    _check_workflow(workflow, errors)
    if errors:
        raise ValidationFailedError(f"workflow pack {name!r} is invalid", errors=errors, pack=name)
    capability = manifest.get("capability")
    if not isinstance(capability, str) or not capability:
        errors.append("capability: must be a non-empty string")
    image = _node_input(manifest.get("image"), "image", workflow, errors)
    output = manifest.get("output")
    output_node, prefix = "", None
    if not isinstance(output, Mapping) or str(output.get("node", "")) not in workflow:
        errors.append("output: 'node' must name a node of the workflow")
    else:
        output_node = str(output["node"])
        if "prefix_input" in output:
            raw_prefix = {"node": output_node, "input": output["prefix_input"]}
            prefix = _node_input(raw_prefix, "output.prefix_input", workflow, errors)
    report = manifest.get("report")
    report_node = None
    if report is not None:
        if not isinstance(report, Mapping) or str(report.get("node", "")) not in workflow:
            errors.append("report: 'node' must name a node of the workflow")
        else:
            report_node = str(report["node"])
    raw_params = manifest.get("params", {})
    params: dict[str, ParamSpec] = {}
    if not isinstance(raw_params, Mapping):
        errors.append("params: must be a table of parameter tables")
    else:
        params = {key: _parse_param(key, raw, workflow, errors) for key, raw in raw_params.items()}
    if errors:
        raise ValidationFailedError(f"workflow pack {name!r} is invalid", errors=errors, pack=name)
    return WorkflowPack(
        name=name,
        capability=str(capability),
        workflow=copy.deepcopy(dict(workflow)),
        image=image,
        output_node=output_node,
        output_prefix=prefix,
        report_node=report_node,
        params=params,
        description=str(manifest.get("description", "")),
    )


def _resolve_one(spec: ParamSpec, value: Any, errors: list[str]) -> Any:
    if spec.kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{spec.name}: must be an integer")
            return None
        if value <= 0:
            errors.append(f"{spec.name}: must be positive")
            return None
        # Same rule as the built-in engine (domain.workflow_params): clamp into the
        # range, then snap to the nearest multiple of step (ties up) inside it, since
        # models want sizes on a grid (DDColor: multiples of 32).
        lo, hi = spec.grid()
        nearest = (value + spec.step // 2) // spec.step * spec.step
        return min(max(nearest, lo), hi)
    if spec.kind == "choice":
        if value not in spec.allowed:
            errors.append(f"{spec.name}: {value!r} is not one of {', '.join(spec.allowed)}")
        return value
    if not isinstance(value, bool):
        errors.append(f"{spec.name}: must be true or false")
    return value


def resolve_params(pack: WorkflowPack, params: Mapping[str, Any]) -> dict[str, Any]:
    """Every declared parameter's value for a job: given (checked, snapped) or default.

    Integers are clamped into [min, max] and snapped to ``step``; keys the pack does
    not declare (pricing options such as ``upscale``) are ignored; raises
    ``InvalidOptionError`` listing every value of the wrong type or not allowed.
    """
    errors: list[str] = []
    resolved: dict[str, Any] = {}
    for name, spec in pack.params.items():
        value = params.get(name)
        resolved[name] = spec.default if value is None else _resolve_one(spec, value, errors)
    if errors:
        raise InvalidOptionError(f"invalid options for {pack.capability}", errors=errors)
    return resolved


def build_prompt(
    pack: WorkflowPack,
    *,
    image_name: str,
    params: Mapping[str, Any],
    output_prefix: str | None = None,
) -> dict[str, Any]:
    """The API-format prompt for one job: a deep copy of the workflow with values set.

    ``params`` must come from ``resolve_params``.
    """
    prompt: dict[str, Any] = copy.deepcopy(dict(pack.workflow))
    prompt[pack.image.node]["inputs"][pack.image.input] = image_name
    for name, spec in pack.params.items():
        prompt[spec.target.node]["inputs"][spec.target.input] = params[name]
    if output_prefix is not None and pack.output_prefix is not None:
        prompt[pack.output_prefix.node]["inputs"][pack.output_prefix.input] = output_prefix
    return prompt
