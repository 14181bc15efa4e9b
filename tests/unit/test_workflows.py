"""Workflow packs: manifest validation (all errors at once), parameters, prompts."""

from __future__ import annotations

import copy
import json
import tomllib
from typing import Any

import pytest

from comfygate.adapters.comfyui.packs import load_pack, load_packs, shipped_packs_dir
from comfygate.domain.errors import InvalidOptionError, ValidationFailedError
from comfygate.domain.workflows import WorkflowPack, build_prompt, parse_pack, resolve_params

SHIPPED = shipped_packs_dir()


def _raw(pack: str) -> tuple[dict[str, Any], dict[str, Any]]:
    folder = SHIPPED / pack
    manifest = tomllib.loads((folder / "manifest.toml").read_text())
    return manifest, json.loads((folder / "workflow.json").read_text())


def test_shipped_packs_load_with_the_seed_ranges() -> None:
    packs = load_packs()
    person, building = packs["colorize.person"], packs["colorize.building"]
    assert (person.params["image_size"].min, person.params["image_size"].max) == (460, 680)
    assert (building.params["image_size"].min, building.params["image_size"].max) == (960, 1280)
    assert person.params["image_size"].default == 512
    assert building.params["image_size"].default == 1024
    assert "ddcolor_modelscope.pth" in person.params["checkpoint"].allowed


def test_person_and_building_share_node_ids_so_the_model_stays_resident() -> None:
    packs = load_packs()
    person, building = packs["colorize.person"], packs["colorize.building"]
    assert person.workflow.keys() == building.workflow.keys()
    assert person.params["image_size"].target == building.params["image_size"].target
    ddcolor = person.params["checkpoint"].target.node
    assert person.workflow[ddcolor]["class_type"] == "DDColor_Colorize"
    assert person.class_types() == {
        "LoadImage",
        "ComfygateStart",
        "DDColor_Colorize",
        "ComfygateResourceReport",
        "SaveImage",
    }


def test_every_manifest_error_is_reported_at_once() -> None:
    manifest, workflow = _raw("ddcolor-person")
    manifest["capability"] = ""
    manifest["image"] = {"node": "42", "input": "image"}
    manifest["output"] = {"node": "5", "prefix_input": "nope"}
    manifest["params"]["image_size"].update(min=700, max=600)
    manifest["params"]["checkpoint"]["default"] = "other.pth"
    manifest["params"]["fp16"] = {"node": "3", "input": "fp16", "type": "float", "default": 1}
    with pytest.raises(ValidationFailedError) as info:
        parse_pack(manifest, workflow, name="broken")
    errors = "\n".join(info.value.errors)
    assert len(info.value.errors) == 7, errors
    for needle in (
        "capability",
        "node '42'",
        "no input 'nope'",
        "min 700 is above max 600",
        "'other.pth' is not in 'allowed'",
        "params.fp16: node '3' has no input 'fp16'",
        "'type'",
    ):
        assert needle in errors


def test_defaults_must_sit_on_the_step_grid() -> None:
    manifest, workflow = _raw("ddcolor-person")
    manifest["params"]["image_size"]["default"] = 500
    with pytest.raises(ValidationFailedError, match="invalid") as info:
        parse_pack(manifest, workflow, name="p")
    assert info.value.errors == ["params.image_size: default 500 is not a multiple of step 32"]


def test_a_workflow_in_ui_format_is_refused() -> None:
    manifest, _ = _raw("ddcolor-person")
    ui_format = {"nodes": [{"id": 1}], "links": []}
    with pytest.raises(ValidationFailedError) as info:
        parse_pack(manifest, ui_format, name="ui")
    assert all("API format" in e for e in info.value.errors)


def _person() -> WorkflowPack:
    return load_packs()["colorize.person"]


@pytest.mark.parametrize(
    ("requested", "applied"),
    [
        (None, 512),
        (512, 512),
        (460, 480),
        (680, 672),
        (600, 608),
        (496, 512),
        (100, 480),
        (9000, 672),
    ],
)
def test_image_size_is_clamped_and_snapped_like_the_builtin_engine(
    requested: int | None, applied: int
) -> None:
    params = {} if requested is None else {"image_size": requested}
    assert resolve_params(_person(), params)["image_size"] == applied


def test_bad_options_are_all_listed_and_unknown_keys_ignored() -> None:
    with pytest.raises(InvalidOptionError) as info:
        resolve_params(_person(), {"image_size": "big", "checkpoint": "nope.pth", "upscale": 2})
    errors = info.value.details["errors"]
    assert len(errors) == 2
    assert "image_size: must be an integer" in errors[0]
    assert "nope.pth" in errors[1]


def test_build_prompt_sets_values_and_leaves_the_pack_untouched() -> None:
    pack = _person()
    before = copy.deepcopy(dict(pack.workflow))
    params = resolve_params(pack, {"image_size": 640, "checkpoint": "ddcolor_artistic.pth"})
    prompt = build_prompt(
        pack, image_name="comfygate/a.png", params=params, output_prefix="comfygate/job_1"
    )
    assert prompt["1"]["inputs"]["image"] == "comfygate/a.png"
    assert prompt["3"]["inputs"]["model_input_size"] == 640
    assert prompt["3"]["inputs"]["checkpoint"] == "ddcolor_artistic.pth"
    assert prompt["5"]["inputs"]["filename_prefix"] == "comfygate/job_1"
    assert prompt["3"]["inputs"]["image"] == ["2", 0]
    assert dict(pack.workflow) == before


def test_extra_pack_folder_adds_a_capability_without_code(tmp_path: Any) -> None:
    _, workflow = _raw("ddcolor-person")
    folder = tmp_path / "restore-old"
    folder.mkdir()
    text = (SHIPPED / "ddcolor-person" / "manifest.toml").read_text()
    (folder / "manifest.toml").write_text(text.replace("colorize.person", "colorize.old"))
    (folder / "workflow.json").write_text(json.dumps(workflow))
    packs = load_packs([tmp_path])
    assert {"colorize.person", "colorize.building", "colorize.old"} <= packs.keys()
    assert load_pack(folder).name == "restore-old"


def test_bad_extra_packs_are_reported_together(tmp_path: Any) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.toml").write_text(
            'capability = "x"\nworkflow = "missing.json"\n'
        )
    with pytest.raises(ValidationFailedError) as info:
        load_packs([tmp_path, tmp_path / "nowhere"])
    assert len(info.value.errors) == 3
    assert info.value.errors[0].startswith("a: workflow:")
