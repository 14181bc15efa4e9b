"""Bad configuration met by the command line: one line on stderr, exit 1, nothing
created (no database, no operator key) and never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COMFYGATE_")}
    return {**clean, "COMFYGATE_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}"}


def refused(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "comfygate", *args],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and "operator" not in done.stdout
    return done.stderr


def test_init_refuses_a_missing_config_file(env: dict[str, str], tmp_path: Path) -> None:
    env["COMFYGATE_CONFIG_FILE"] = str(tmp_path / "nope.toml")
    stderr = refused(env, "init")
    assert stderr == (
        f"error [validation_failed]: the config file {tmp_path / 'nope.toml'}"
        " (COMFYGATE_CONFIG_FILE) does not exist\n"
    )
    assert not (tmp_path / "never.db").exists()


def test_init_refuses_a_config_file_with_a_variable_s_name_in_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    config = tmp_path / "comfygate.toml"
    config.write_text('COMFYGATE_DATABASE_URL = "sqlite:///elsewhere.db"\n', encoding="utf-8")
    env["COMFYGATE_CONFIG_FILE"] = str(config)
    stderr = refused(env, "init")
    assert "COMFYGATE_DATABASE_URL (did you mean database_url?)" in stderr
    assert str(config) in stderr and len(stderr.splitlines()) == 1
    assert not (tmp_path / "never.db").exists()


def test_init_names_a_config_file_that_is_not_toml(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("x = = 1\n", encoding="utf-8")
    env["COMFYGATE_CONFIG_FILE"] = str(config)
    assert refused(env, "init") == (
        f"error [validation_failed]: the config file {config} is not valid TOML:"
        " Invalid value (at line 1, column 5)\n"
    )


def test_init_names_a_dict_setting_that_is_not_json(env: dict[str, str]) -> None:
    env["COMFYGATE_PAYMENT_WEBHOOK_SECRETS"] = "notjson"
    stderr = refused(env, "init")
    assert stderr.startswith("error [validation_failed]: the configuration is invalid\n")
    assert "  - COMFYGATE_PAYMENT_WEBHOOK_SECRETS: not valid JSON (" in stderr


def test_serve_refuses_a_redis_url_that_is_not_one(env: dict[str, str], tmp_path: Path) -> None:
    env["COMFYGATE_REDIS_URL"] = "nonsense"
    assert refused(env, "serve", "--port", "0") == (
        "error [validation_failed]: the configuration is invalid\n"
        "  - COMFYGATE_REDIS_URL: not a Redis URL: it starts redis://, rediss:// or unix://\n"
    )
    assert not (tmp_path / "never.db").exists()


@pytest.mark.parametrize("command", ["init", "serve"])
def test_a_data_dir_that_cannot_be_written_stops_init_and_serve(
    env: dict[str, str], tmp_path: Path, command: str
) -> None:
    (tmp_path / "a-file").write_text("")
    env["COMFYGATE_DATA_DIR"] = str(tmp_path / "a-file" / "data")
    assert refused(env, command, *(["--port", "0"] if command == "serve" else [])) == (
        f"error [validation_failed]: the data dir {tmp_path / 'a-file' / 'data'}"
        " (COMFYGATE_DATA_DIR) is not writable: Not a directory\n"
    )


def test_init_makes_the_data_dir_and_its_folders(env: dict[str, str], tmp_path: Path) -> None:
    env["COMFYGATE_DATA_DIR"] = str(tmp_path / "state" / "data")
    done = subprocess.run(
        [sys.executable, "-m", "comfygate", "init"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "state" / "data").iterdir()) == ["jobs", "tmp"]


def test_init_names_a_plans_file_that_is_not_toml(env: dict[str, str], tmp_path: Path) -> None:
    plans = tmp_path / "plans.toml"
    plans.write_text("[plans\n", encoding="utf-8")
    env["COMFYGATE_PLANS_FILE"] = str(plans)
    stderr = refused(env, "init")
    assert stderr.startswith(f"error [validation_failed]: {plans} is not valid TOML:")
    assert len(stderr.splitlines()) == 1
