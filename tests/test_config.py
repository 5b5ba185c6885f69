"""Settings: every one documented in the README, names fixed, secrets hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from parley.config import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [env for env, _, _ in settings_table() if f"| `{env}` |" not in readme]
    assert missing == []


def test_names_fixed_by_the_issue_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "PARLEY_LLM": "openai",
        "PARLEY_LLM_MODEL": "m",
        "PARLEY_LLM_BASE_URL": "http://127.0.0.1:1/v1",
        "PARLEY_LLM_API_KEY": "k-123",
        "PARLEY_STT": "workers-ai",
        "PARLEY_STT_MODEL": "@cf/openai/whisper-large-v3-turbo",
        "CLOUDFLARE_ACCOUNT_ID": "acc",
        "CLOUDFLARE_API_TOKEN": "tok-456",
        "PARLEY_WORKERS_AI_BASE_URL": "http://127.0.0.1:2/client/v4",
        "PARLEY_SYSTEM_PROMPT": "Be brief.",
        "PARLEY_DATA_DIR": "/tmp/parley-x",
        "PARLEY_HISTORY_LIMIT": "7",
        "PARLEY_MAX_TOKENS": "99",
        "PARLEY_HOST": "0.0.0.0",
        "PARLEY_PORT": "9000",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.llm, s.llm_model, s.llm_base_url, s.stt, s.stt_model) == (
        "openai",
        "m",
        "http://127.0.0.1:1/v1",
        "workers-ai",
        "@cf/openai/whisper-large-v3-turbo",
    )
    assert s.llm_api_key is not None and s.llm_api_key.get_secret_value() == "k-123"
    assert s.cloudflare_account_id == "acc"
    assert s.cloudflare_api_token is not None and s.cloudflare_api_token.get_secret_value() == "tok-456"
    assert (s.history_limit, s.max_tokens, s.host, s.port) == (7, 99, "0.0.0.0", 9000)
    assert "tok-456" not in repr(s) and "k-123" not in repr(s)


def test_defaults_match_the_seed() -> None:
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (s.port, s.history_limit, s.max_tokens) == (8787, 20, 512)
    assert s.workers_ai_base_url == "https://api.cloudflare.com/client/v4"
    assert s.system_prompt.startswith("You are a helpful, friendly, and knowledgeable AI assistant.")


def test_a_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_HISTORY_LIMIT", "-1")
    with pytest.raises(ValidationError, match="history_limit"):
        Settings(_env_file=None)  # type: ignore[call-arg]


def test_parley_config_hides_secrets() -> None:
    env = {"CLOUDFLARE_API_TOKEN": "very-secret-token-value", "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-m", "parley.cli", "config"], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert "CLOUDFLARE_API_TOKEN=(set)" in out
    assert "very-secret-token-value" not in out


def test_parley_config_masks_exactly_the_secret_fields(tmp_path: Path) -> None:
    def config(env: dict[str, str]) -> dict[str, str]:
        # cwd: no stray .env file of the working tree may add settings
        out = subprocess.run(
            [sys.executable, "-m", "parley.cli", "config"],
            env=env | {"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines())

    fields = zip(Settings.model_fields.values(), settings_table(), strict=True)
    secrets = {
        env: f"secret-{i}" for i, (f, (env, _, _)) in enumerate(fields) if f.annotation == SecretStr | None
    }
    assert len(secrets) >= 6 and {"PARLEY_LLM_API_KEY", "PARLEY_SECRET_KEY"} <= set(secrets)
    # Names that merely look secret: a token limit, a key's id.
    plain = {"PARLEY_MAX_TOKENS": "99", "CLOUDFLARE_TURN_KEY_ID": "key-id-7"}
    shown = config(secrets | plain)
    assert {name for name, value in shown.items() if value == "(set)"} == set(secrets)
    assert not set(secrets.values()) & set(shown.values())
    assert shown["PARLEY_MAX_TOKENS"] == "99" and shown["CLOUDFLARE_TURN_KEY_ID"] == "key-id-7"
    # Unset, a secret prints empty like any unset setting, and the defaults show as they are.
    unset = config({})
    assert "(set)" not in unset.values() and unset["PARLEY_LLM_API_KEY"] == ""
    assert unset["PARLEY_MAX_TOKENS"] == "512"


def test_secrets_can_come_from_a_secrets_directory(tmp_path: Path) -> None:
    (tmp_path / "CLOUDFLARE_API_TOKEN").write_text("token-from-a-file")
    (tmp_path / "PARLEY_LLM_API_KEY").write_text("key-from-a-file")
    env = {"PARLEY_SECRETS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    code = (
        "from parley.config import load_settings; s = load_settings(); "
        "print(s.cloudflare_api_token.get_secret_value(), s.llm_api_key.get_secret_value())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=tmp_path
    ).stdout
    assert out.split() == ["token-from-a-file", "key-from-a-file"]
