"""``workers status`` against fake ComfyUI servers, through its own click group."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from comfygate.entrypoints.cli_workers import register
from tests.comfyui_fake import FakeComfyUI


def _cli() -> click.Group:
    @click.group()
    def cli() -> None:
        pass

    register(cli)
    return cli


def test_status_shows_up_and_down_instances(tmp_path: Path) -> None:
    dead = FakeComfyUI(tmp_path / "dead").start()
    dead.stop()
    with FakeComfyUI(tmp_path / "live") as live:
        env = {"COMFYGATE_COMFYUI_URLS": f"{live.url}, {dead.url}"}
        result = CliRunner().invoke(_cli(), ["workers", "status", "--json"], env=env)
        human = CliRunner().invoke(_cli(), ["workers", "status"], env=env)
    assert result.exit_code == 0, result.output
    rows = {r["url"]: r for r in json.loads(result.output)}
    assert rows[live.url]["up"] and rows[live.url]["capabilities"] == [
        "colorize.building",
        "colorize.person",
    ]
    assert rows[live.url]["devices"][0]["vram_free_mb"] == 6144
    assert rows[live.url]["cold_start_s"] == {}  # status never runs warm-up jobs
    assert not rows[dead.url]["up"] and "unreachable" in rows[dead.url]["last_error"]
    assert f"{live.url}  up  running 0  queue 0" in human.output
    assert f"{dead.url}  DOWN" in human.output


def test_per_capability_pools_from_the_config_file(tmp_path: Path) -> None:
    with FakeComfyUI(tmp_path / "a") as a:
        a.behaviour.auth = "Bearer k"
        config = tmp_path / "comfygate.toml"
        pool = f'[[comfyui_pools."colorize.building"]]\nurl = "{a.url}"\n'
        config.write_text(pool + 'auth_header = "Authorization: Bearer k"\n')
        env = {"COMFYGATE_CONFIG_FILE": str(config), "COMFYGATE_COMFYUI_URLS": ""}
        result = CliRunner().invoke(_cli(), ["workers", "status", "--json"], env=env)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    assert row["up"] and row["serves"] == ["colorize.building"]


def test_no_instances_configured(tmp_path: Path) -> None:
    result = CliRunner().invoke(_cli(), ["workers", "status"], env={"COMFYGATE_COMFYUI_URLS": ""})
    assert result.exit_code == 0
    assert "no ComfyUI instance configured" in result.output


def test_a_pool_without_a_pack_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "comfygate.toml"
    config.write_text('[[comfyui_pools."upscale.x4"]]\nurl = "http://127.0.0.1:9"\n')
    result = CliRunner().invoke(
        _cli(), ["workers", "status"], env={"COMFYGATE_CONFIG_FILE": str(config)}
    )
    assert result.exit_code == 1
    assert "pool 'upscale.x4' has no workflow pack" in result.output
