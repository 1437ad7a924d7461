"""docs/ipc.md's authorisation table names exactly the operations the IPC server registers."""

from __future__ import annotations

import re
from pathlib import Path

from roost.agent.ipc import operations

DOC = Path(__file__).resolve().parents[2] / "docs" / "ipc.md"
ROW = re.compile(r"^\| `((?:aws\.greengrass|roost)#\w+)` \| (.+) \|$")


def _table() -> dict[str, str]:
    rows: dict[str, str] = {}
    for line in DOC.read_text().splitlines():
        m = ROW.match(line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} appears twice in {DOC}"
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_registered_operation_is_documented_and_nothing_else() -> None:
    table = _table()
    registered = set(operations.registered_operations())
    assert registered, "the server registers no operation?"
    assert sorted(registered - set(table)) == [], "operations missing from docs/ipc.md"
    assert sorted(set(table) - registered) == [], "docs/ipc.md documents operations the server does not have"


def test_every_row_says_what_is_checked() -> None:
    for op, checked in _table().items():
        assert any(word in checked for word in ("accessControl", "own component", "CLI principal", "open")), (
            f"{op}: the table must say what is checked, got {checked!r}"
        )


def test_configuration_reads_say_open_by_default_and_strict_mode() -> None:
    table = _table()
    for op in ("aws.greengrass#GetConfiguration", "aws.greengrass#SubscribeToConfigurationUpdate"):
        assert "open by default" in table[op] and "--strict-config-reads" in table[op], table[op]
        assert "`<component>:<keyPath>`" in table[op], table[op]
    assert "own component only" in table["aws.greengrass#UpdateConfiguration"]
