"""The README's configuration table and the settings agree, and every documented setting does something.

A row of the table is a promise: `parley config --markdown` renders the table from the settings
themselves, and a setting that no code reads would be a knob that turns nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from parley import cli
from parley.config import Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "parley"
ROW = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \|")
#: rows whose default the README words for people instead of printing it
WORDED_DEFAULTS = {"PARLEY_SYSTEM_PROMPT": "(the seed app's prompt)"}


def readme_rows() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if ROW.match(line)]


def fields_by_env() -> dict[str, str]:
    # settings_table() lists the fields in declaration order
    return {env: name for name, (env, _, _) in zip(Settings.model_fields, settings_table(), strict=True)}


def read_attributes() -> set[str]:
    """Attribute names read off a Settings object anywhere under src/ (`settings.x`, `self.settings.x`,
    `svc.settings.x`, ...), and inside config.py off `self` (its properties build on fields)."""
    names: set[str] = set()
    for path in SRC.rglob("*.py"):
        code = path.read_text()
        names.update(re.findall(r"settings\.([a-z_][a-z0-9_]*)", code))
        if path == SRC / "config.py":
            names.update(re.findall(r"\bself\.([a-z_][a-z0-9_]*)", code))
    return names


def test_the_readme_table_is_what_parley_config_renders(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["config", "--markdown"]) == 0
    rendered = [line for line in capsys.readouterr().out.splitlines() if ROW.match(line)]
    for env, worded in WORDED_DEFAULTS.items():
        rendered = [
            re.sub(r"^(\| `[A-Z_]+` \| )[^|]*( \|)", rf"\g<1>{worded}\g<2>", line)
            if line.startswith(f"| `{env}` |")
            else line
            for line in rendered
        ]
    assert readme_rows() == rendered


def test_every_documented_setting_is_a_setting_and_every_setting_is_documented() -> None:
    documented = [ROW.match(line).group(1) for line in readme_rows()]  # type: ignore[union-attr]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(fields_by_env())


def test_every_documented_setting_is_read_by_the_code() -> None:
    fields = fields_by_env()
    read = read_attributes()
    documented = [ROW.match(line).group(1) for line in readme_rows()]  # type: ignore[union-attr]
    unread = [env for env in documented if env in fields and fields[env] not in read]
    assert unread == [], f"documented in README.md but never read under src/: {unread}"
