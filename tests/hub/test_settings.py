"""Settings from ``HUB_*`` variables: parsing, one-line errors naming the variable, demo mode."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from hub.errors import Unauthorized
from hub.settings import Settings, SettingsError, demo_secret, load_settings
from hub.tokens import Tokens


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No HUB_* variable from the outside, and a working directory without ``.env``."""
    for name in list(os.environ):
        if name.startswith("HUB_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def settings_error(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> str:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    return str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HUB_DATABASE_URL", "not a url"),
        ("HUB_DATABASE_URL", "mysql://db.example/hub"),
        ("HUB_DATABASE_POOLER", "session"),
        ("HUB_REDIS_URL", "redis://localhost:99999/0"),
        ("HUB_REDIS_URL", "redis://localhost:port/0"),
        ("HUB_REDIS_URL", "http://localhost:6379"),
        ("HUB_REDIS_URL", "redis://"),
        ("HUB_REDIS_URL", "redis+cluster://"),
        ("HUB_REDIS_URL", "redis+cluster://cache:6379/2"),
        ("HUB_JWT_SECRET", "only-twenty-characters"),
        ("HUB_JWT_PUBLIC_KEY", "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----"),
        ("HUB_REDIS_PREFIX", "has space:"),
        ("HUB_DB_POOL_MAX", "lots"),
        ("HUB_RETENTION_DAYS", "0"),
        ("HUB_HISTORY_DAYS", "3"),
        ("HUB_HISTORY_MIN_EVENTS", "10"),
        ("HUB_HEARTBEAT_SECONDS", "-1"),
        ("HUB_JWT_LEEWAY_SECONDS", "-1"),
        ("HUB_JWT_LEEWAY_SECONDS", "301"),
        ("HUB_MAX_BODY_BYTES", "12kb"),
        ("HUB_WS_PER_MESSAGE_DEFLATE", "maybe"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    message = settings_error(monkeypatch, name, value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


def test_a_short_secret_says_how_long_it_must_be(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "HUB_JWT_SECRET", "x" * 31)
    assert message == "HUB_JWT_SECRET: must be at least 32 bytes"


def test_a_bad_redis_port_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = settings_error(monkeypatch, "HUB_REDIS_URL", "redis://localhost:99999/0")
    assert message == "HUB_REDIS_URL: has a bad port"


def test_a_cluster_url_with_a_database_says_a_cluster_has_only_0(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    message = settings_error(monkeypatch, "HUB_REDIS_URL", "redis+cluster://cache:7000/3")
    assert message == ("HUB_REDIS_URL: names a database other than 0, which a Redis "
                       "Cluster has not")


def test_a_hash_tag_in_the_prefix_is_refused_on_a_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUB_REDIS_URL", "redis+cluster://cache:7000")
    message = settings_error(monkeypatch, "HUB_REDIS_PREFIX", "{hub}:")
    assert message == "HUB_REDIS_PREFIX: must not contain { or } on a Redis Cluster"
    monkeypatch.setenv("HUB_REDIS_URL", "redis://cache:6379/0")
    assert load_settings().redis_prefix == "{hub}:"  # one Redis has no slots


def test_cluster_urls_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    for url in ("redis+cluster://cache:7000", "rediss+cluster://:pw@cache:7000/0"):
        monkeypatch.setenv("HUB_REDIS_URL", url)
        assert load_settings().redis_url == url


def test_comma_separated_lists_are_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_API_KEYS", " key-one, key-two ,,key-three")
    monkeypatch.setenv("HUB_ALLOWED_ORIGINS", "https://app.example,http://localhost:3000")
    settings = load_settings()
    assert settings.api_keys == ["key-one", "key-two", "key-three"]
    assert settings.allowed_origins == ["https://app.example", "http://localhost:3000"]


def test_defaults_match_the_documented_ones() -> None:
    settings = load_settings()
    assert settings.database_url is None
    assert settings.database_pooler == "none"
    assert settings.redis_url is None
    assert settings.data_dir == Path(".notifyhub")
    assert settings.api_keys == [] and settings.allowed_origins == []
    assert settings.redis_prefix == "hub:"
    assert settings.history_days == 7 and settings.history_min_events == 1000
    assert settings.ws_max_frame_bytes == 64 * 1024
    assert settings.jwt_leeway_seconds == 30
    assert settings.demo_mode is True


def test_good_values_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", "postgresql://hub:pw@db:5432/hub")
    monkeypatch.setenv("HUB_REDIS_URL", "rediss://:pw@cache:6380/2")
    monkeypatch.setenv("HUB_JWT_SECRET", "s" * 32)
    monkeypatch.setenv("HUB_WS_PER_MESSAGE_DEFLATE", "true")
    monkeypatch.setenv("HUB_CLEANUP_INTERVAL_SECONDS", "60")
    monkeypatch.setenv("HUB_DATABASE_POOLER", "transaction")
    settings = load_settings()
    assert settings.database_url == "postgresql://hub:pw@db:5432/hub"
    assert settings.database_pooler == "transaction"
    assert settings.redis_url == "rediss://:pw@cache:6380/2"
    assert settings.ws_per_message_deflate is True
    assert settings.cleanup_interval_seconds == 60.0
    assert settings.demo_mode is False


def test_empty_urls_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_DATABASE_URL", "")
    monkeypatch.setenv("HUB_REDIS_URL", "")
    settings = load_settings()
    assert settings.database_url is None and settings.redis_url is None


def test_a_dotenv_file_supplies_values_and_the_environment_wins(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("HUB_REDIS_PREFIX=fromfile:\nHUB_API_KEYS=a,b\n")
    monkeypatch.setenv("HUB_API_KEYS", "c")
    settings = load_settings()
    assert settings.redis_prefix == "fromfile:"
    assert settings.api_keys == ["c"]


def test_demo_secret_is_created_once_and_kept_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    secret = demo_secret(settings)
    path = tmp_path / "data" / "jwt_secret"
    assert path.read_text() == secret
    assert len(secret.encode()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert demo_secret(Settings(data_dir=tmp_path / "data")) == secret


def test_demo_tokens_survive_a_restart(tmp_path: Path) -> None:
    token = Tokens(Settings(data_dir=tmp_path / "data")).issue("alice")
    # A new process builds new settings; the secret on disk is the same.
    assert Tokens(Settings(data_dir=tmp_path / "data")).verify(token).user_id == "alice"
    with pytest.raises(Unauthorized):
        Tokens(Settings(data_dir=tmp_path / "other")).verify(token)
