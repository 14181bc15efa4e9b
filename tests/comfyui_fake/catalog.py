"""The fake's node catalog: ``/object_info`` shapes, validation and execution.

Our own report nodes are the real classes from ``comfyui_nodes`` (so the fake runs
the code we ship); LoadImage, DDColor_Colorize and SaveImage are imitations with
the real nodes' interfaces. IMAGE values are PIL images here, not tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from comfyui_nodes.comfygate_report.nodes import NODE_CLASS_MAPPINGS as REPORT_NODES
from PIL import Image, ImageOps

CHECKPOINTS = [
    "ddcolor_paper_tiny.pth",
    "ddcolor_paper.pth",
    "ddcolor_modelscope.pth",
    "ddcolor_artistic.pth",
]

OBJECT_INFO: dict[str, dict[str, Any]] = {
    "LoadImage": {
        "input": {"required": {"image": [[], {"image_upload": True}]}},
        "output": ["IMAGE", "MASK"],
        "output_node": False,
    },
    "DDColor_Colorize": {
        "input": {
            "required": {
                "image": ["IMAGE"],
                "model_input_size": ["INT", {"default": 512, "min": 32, "max": 4096, "step": 32}],
                "checkpoint": [CHECKPOINTS, {"default": "ddcolor_paper.pth"}],
            }
        },
        "output": ["IMAGE"],
        "output_node": False,
    },
    "SaveImage": {
        "input": {
            "required": {"images": ["IMAGE"], "filename_prefix": ["STRING", {"default": "ComfyUI"}]}
        },
        "output": [],
        "output_node": True,
    },
}
for _name, _cls in REPORT_NODES.items():
    OBJECT_INFO[_name] = {
        "input": {k: {n: list(v) for n, v in t.items()} for k, t in _cls.INPUT_TYPES().items()},
        "output": list(_cls.RETURN_TYPES),
        "output_node": False,
    }


def node_info(class_type: str) -> dict[str, Any]:
    info = dict(OBJECT_INFO[class_type])
    info.update(name=class_type, display_name=class_type, category="fake", description="")
    return info


def _error(kind: str, message: str, details: str, name: str) -> dict[str, Any]:
    return {
        "type": kind,
        "message": message,
        "details": details,
        "extra_info": {"input_name": name},
    }


def validate_node(
    node: dict[str, Any], input_dir: Path, missing: list[str]
) -> list[dict[str, Any]]:
    """Errors for one node's literal inputs, in ComfyUI's format."""
    errors = []
    spec = OBJECT_INFO[node["class_type"]]["input"].get("required", {})
    inputs = node.get("inputs", {})
    for name, shape in spec.items():
        if name not in inputs:
            errors.append(_error("required_input_missing", "Required input is missing", name, name))
            continue
        value = inputs[name]
        if isinstance(value, list):  # a link
            continue
        opts = shape[1] if len(shape) > 1 else {}
        if isinstance(shape[0], list) and shape[0] and (value not in shape[0] or value in missing):
            errors.append(
                _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {shape[0]}",
                    name,
                )
            )
        if shape[0] == "INT" and value < opts.get("min", value):
            errors.append(
                _error(
                    "value_smaller_than_min",
                    f"Value {value} smaller than min of {opts['min']}",
                    name,
                    name,
                )
            )
        if shape[0] == "INT" and value > opts.get("max", value):
            errors.append(
                _error(
                    "value_bigger_than_max",
                    f"Value {value} bigger than max of {opts['max']}",
                    name,
                    name,
                )
            )
    if (
        node["class_type"] == "LoadImage"
        and not annotated(input_dir, str(inputs.get("image", ""))).is_file()
    ):
        errors.append(
            _error(
                "custom_validation_failed",
                "Custom validation failed for node",
                f"image - Invalid image file: {inputs.get('image')}",
                "image",
            )
        )
    return errors


def annotated(input_dir: Path, value: str) -> Path:
    """LoadImage's ``name [temp]`` notation; the fake only has input and temp."""
    if value.endswith(" [temp]"):
        return input_dir.parent / "temp" / value[: -len(" [temp]")]
    return input_dir / value


def load_image(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


def colorize(image: Image.Image) -> Image.Image:
    """A cheap, visible "colorization": warm highlights, cool shadows."""
    grey = image.convert("L")
    return ImageOps.colorize(grey, black=(20, 30, 60), white=(255, 235, 200))


def run_report_node(class_type: str, *args: Any) -> Any:
    node = REPORT_NODES[class_type]()
    return getattr(node, node.FUNCTION)(*args)
