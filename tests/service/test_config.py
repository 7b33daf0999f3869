"""configs/service.yaml: validated once, overridable from the environment, with a sensible data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from nanobanana.errors import ConfigError
from nanobanana.service.config import default_data_dir, load_service_config


def test_the_shipped_configuration_loads():
    config = load_service_config(environ={})
    assert config.credits.signup_grant >= 0 and config.storage.anonymous_expiry_hours == 1
    assert config.storage.account_expiry_hours == 168 and config.database_url is None


def test_environment_variables_override_values_and_the_two_aliases_work(tmp_path):
    config = load_service_config(environ={
        "NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": "7",
        "NANOBANANA_SERVICE__ALLOWANCE__ANONYMOUS_IMAGES_PER_DAY": "2",
        "NANOBANANA_DATA_DIR": str(tmp_path / "d"),
        "NANOBANANA_DATABASE_URL": "postgresql+psycopg://u@127.0.0.1/db",
    })
    assert config.credits.signup_grant == 7 and config.allowance.anonymous_images_per_day == 2
    assert config.data_dir == (tmp_path / "d").resolve()
    assert config.database_url == "postgresql+psycopg://u@127.0.0.1/db"


def test_an_invalid_value_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="signup_grant"):
        load_service_config(environ={"NANOBANANA_SERVICE__CREDITS__SIGNUP_GRANT": "-1"})


def test_the_default_data_folder_is_persistent_storage_on_a_space_else_the_working_directory():
    on_space = Path("/data").is_dir()
    expected = Path("/data/nanobanana") if on_space else Path.cwd() / "data"
    assert default_data_dir({"SYSTEM": "spaces"}) == expected
    assert default_data_dir({}) == Path.cwd() / "data"
