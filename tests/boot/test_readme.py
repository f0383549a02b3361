"""The README stays true: every setting is in its configuration table, with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from boot.settings import Settings, env_name

README = Path(__file__).resolve().parents[2] / "README.md"


def _table() -> dict[str, str]:
    rows = {}
    for line in README.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `([A-Z_]+)` \| ([^|]*) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip().strip("`")
    return rows


@pytest.mark.parametrize("field", sorted(Settings.model_fields))
def test_every_setting_is_in_the_readme_with_its_default(field):
    rows = _table()
    name = env_name(field)
    assert name in rows, f"{name} is missing from the README's configuration table"
    default = Settings.model_fields[field].get_default(call_default_factory=True)
    if default in (None, []):
        assert rows[name] == "", f"{name}: the README shows a default, the code has none"
    else:
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert rows[name] == shown, f"{name}: README says {rows[name]!r}, the code {shown!r}"


def test_the_readme_has_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    assert "bash runsv.sh" in text and "bash smoke_test.sh" in text
