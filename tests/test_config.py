"""from_config: routes, weights and policies from TOML; keys only from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from dify_lc import ChatDify, ChatRelay, ConfigurationError, from_config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "routes.toml"
ENV = {"DIFY_API_KEY": "app-config-test-0123456789", "RELAY_API_KEY": "sk-config-test-0123456789"}


def test_example_file_builds_the_whole_model() -> None:
    model = from_config(EXAMPLE, env=ENV)
    assert [r.name for r in model.routes] == ["official", "relay"]
    official, relay = model.routes
    assert isinstance(official.runnable, ChatDify)
    assert isinstance(relay.runnable, ChatRelay)
    assert official.runnable.api_key.get_secret_value() == ENV["DIFY_API_KEY"]  # type: ignore[union-attr]
    assert relay.weight == 0.05
    assert official.weight == 0.0
    assert model.deadline == 30
    assert model.retry.max_retries == 2
    assert official.breaker.policy.slow_call_duration == 10
    assert not official.idempotent  # Dify: no blind retry after a read timeout
    assert relay.idempotent


def test_ramp_is_a_one_line_change(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    for weight in ("0.2", "0.5", "1.0"):
        path = tmp_path / "routes.toml"
        path.write_text(text.replace("weight = 0.05", f"weight = {weight}"))
        assert from_config(path, env=ENV).route("relay").weight == float(weight)


def test_per_route_breaker_override() -> None:
    data = {
        "breaker": {"fail_max": 5, "reset_timeout": 30},
        "routes": [
            {"name": "a", "type": "dify", "base_url": "https://x.example/v1"},
            {
                "name": "b",
                "type": "relay",
                "model": "m",
                "base_url": "https://y.example/v1",
                "breaker": {"fail_max": 2},
            },
        ],
    }
    model = from_config(data, env=ENV)
    assert model.route("a").breaker.policy.fail_max == 5
    assert model.route("b").breaker.policy.fail_max == 2
    assert model.route("b").breaker.policy.reset_timeout == 30


@pytest.mark.parametrize(
    ("routes", "fragment"),
    [
        (
            [{"name": "a", "type": "dify", "api_key": "app-in-the-file-0123456789"}],
            "must not be in the file",
        ),
        ([{"name": "a", "type": "dify", "api_key_env": "NOPE_NOT_SET"}], "NOPE_NOT_SET"),
        ([{"name": "a", "type": "carrier-pigeon"}], "type must be one of"),
        ([{"name": "a", "type": "dify", "weight": 0.5}], "primary"),
        (
            [
                {"name": "a", "type": "dify"},
                {
                    "name": "b",
                    "type": "relay",
                    "model": "m",
                    "base_url": "https://y/v1",
                    "weight": 2,
                },
            ],
            "weight",
        ),
        ([{"name": "a", "type": "dify", "read_timout": 3}], "unknown fields"),
        ([{"name": "a", "type": "relay", "base_url": "https://y/v1"}], "model"),
        ([], "at least one"),
    ],
)
def test_bad_config_is_a_clear_error(routes: list[dict[str, object]], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment) as info:
        from_config({"routes": routes}, env=ENV)
    assert "app-in-the-file-0123456789" not in str(info.value)
    assert ENV["DIFY_API_KEY"] not in str(info.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[routes]\nname=")
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        from_config(path, env=ENV)
