"""`roost learn supernode`'s checks: each bad input fails before any Flower process starts, with its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.learn.supernode import ca_cert_file
from roost.learn.wine_task import write_partitions
from tests.conftest import InProcessCli

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_partitions(tmp_path / "data", 1)[0]


def _run(tmp_path: Path, *args: str) -> tuple[int, dict[str, object]]:
    out = InProcessCli(tmp_path).run("learn", "supernode", "--json", "--work-dir", str(tmp_path / "work"), *args,
                                     root=False)
    line = next(line for line in out.stdout.splitlines() if line.startswith('{"error"'))
    return out.returncode, json.loads(line)["error"]


def test_a_missing_data_path_names_it(tmp_path: Path) -> None:
    code, err = _run(tmp_path, "--job", "j1", "--superlink", "127.0.0.1:9092", "--data-path",
                     str(tmp_path / "gone.csv"), "--ca-cert", PEM)
    assert code == 4 and err["code"] == "LEARN_DATA_MISSING" and str(tmp_path / "gone.csv") in err["message"]


def test_a_missing_flower_bin_names_the_command(tmp_path: Path, data: Path) -> None:
    code, err = _run(tmp_path, "--job", "j1", "--superlink", "127.0.0.1:9092", "--data-path", str(data),
                     "--ca-cert", PEM, "--flower-bin", str(tmp_path / "no-venv" / "bin"))
    assert code == 4 and err["code"] == "LEARN_FLOWER_MISSING" and "no-venv" in err["message"]


@pytest.mark.parametrize(("args", "what"), [
    (("--job", "../x", "--superlink", "127.0.0.1:9092", "--ca-cert", PEM), "job '../x'"),
    (("--job", "j1", "--superlink", "unassigned", "--ca-cert", PEM), "superlink 'unassigned'"),
    (("--job", "j1", "--superlink", "127.0.0.1:9092"), "--ca-cert"),
])
def test_bad_arguments_are_named(tmp_path: Path, data: Path, args: tuple[str, ...], what: str) -> None:
    code, err = _run(tmp_path, *args, "--data-path", str(data))
    assert code == 3 and err["code"] == "INVALID_ARGUMENT" and what in err["message"]


def test_the_ca_is_pem_text_or_a_pem_file(tmp_path: Path) -> None:
    written = ca_cert_file(PEM, tmp_path / "work")
    assert written.read_text() == PEM and ca_cert_file(str(written), tmp_path) == written
    (tmp_path / "not.pem").write_text("hello")
    for bad in (str(tmp_path / "not.pem"), str(tmp_path / "absent.pem"), PEM + "x" * 70_000):
        with pytest.raises(Exception, match="caCert") as info:
            ca_cert_file(bad, tmp_path / "work")
        assert getattr(info.value, "code", None) == "INVALID_ARGUMENT"
