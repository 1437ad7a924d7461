"""`roost serve` joint-mode options refused at start-up (before any centre is contacted): each bad one
is a RoostError with its code, naming what was wrong."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from roost.errors import RoostError
from roost.ipc.client import IpcClient
from roost.serve.service import InferenceService, ServeOptions

pytestmark = pytest.mark.timeout(60)

URL = "ws://127.0.0.1:9/v1/stream"


def _load(tmp_path: Path, **joint: Any) -> RoostError:
    model = tmp_path / "edge.json"
    model.write_text("{}")  # never read: every case fails before the model loads
    service = InferenceService(cast(IpcClient, None), ServeOptions(model=model, **joint))
    with pytest.raises(RoostError) as err:
        asyncio.run(service.load())
    service.executor.shutdown()
    return err.value


def test_bad_joint_options_fail_at_start_up(tmp_path: Path) -> None:
    token = tmp_path / "centre.token"
    token.write_text("secret-token\n")
    err = _load(tmp_path, joint_filter="bogus", joint_centre=URL, joint_centre_token_file=token)
    assert err.code == "FILTER_UNKNOWN" and "bogus" in err.message
    err = _load(tmp_path, joint_filter="margin", joint_threshold=1.5, joint_centre=URL, joint_centre_token_file=token)
    assert err.code == "FILTER_THRESHOLD_INVALID" and "1.5" in err.message
    err = _load(tmp_path, joint_filter="margin")
    assert err.code == "INVALID_ARGUMENT" and "--joint-centre" in err.message
    err = _load(tmp_path, joint_centre=URL, joint_centre_token_file=tmp_path / "missing.token")
    assert err.code == "INVALID_ARGUMENT" and "missing.token" in err.message
    empty = tmp_path / "empty.token"
    empty.write_text("  \n")
    err = _load(tmp_path, joint_centre=URL, joint_centre_token_file=empty)
    assert err.code == "INVALID_ARGUMENT" and "empty" in err.message
