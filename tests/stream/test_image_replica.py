"""An image replica (the sample EfficientNet-Lite0 ONNX model) in this process on real sockets: the
sample coffee photo through the stream client (Roost and original protocol), undecodable images."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from roost.cluster.errors import StreamDataError
from roost.cluster.protocol import encode_image_frame
from roost.cluster.replica import Replica, ReplicaOptions
from roost.cluster.stream_client import StreamOptions, stream
from roost.cluster.tokens import TokenSigner
from roost.serve.image import SAMPLE_IMAGE
from tests.stream.conftest import REPLICA_ID, http_get, running, session_token, stream_url


@pytest.fixture
async def image_replica(image_options: ReplicaOptions) -> AsyncIterator[Replica]:
    async with running(image_options) as replica:
        yield replica


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(SAMPLE_IMAGE, folder / "coffee.jpg")
    (folder / "notes.txt").write_text("not an image")  # not sent: only image suffixes are
    return folder


async def test_the_coffee_photo_is_an_espresso(image_replica: Replica, signer: TokenSigner, photos: Path) -> None:
    status, health = await http_get(image_replica, "/healthz")
    assert (status, health["kind"], health["features"]) == (200, "image", [])
    report = await stream(StreamOptions(endpoint=stream_url(image_replica), session_token=session_token(signer),
                                        type="image", images=photos, max_windows=2, duration=30))
    assert report.lost is None and report.errors == [] and len(report.windows) == 2
    assert report.warmup is not None
    for labels in [report.warmup.result] + [w.result for w in report.windows]:
        assert len(labels) == 5 and labels[0]["label"] == "espresso"
        assert labels[0]["score"] >= labels[1]["score"]
    assert report.windows[0].sent > SAMPLE_IMAGE.stat().st_size  # the whole photo crossed the socket


async def test_an_undecodable_image_gets_image_invalid_and_the_session_goes_on(image_replica: Replica,
                                                                               signer: TokenSigner) -> None:
    ws = await connect(stream_url(image_replica), additional_headers={"Authorization": f"Bearer "
                                                                      f"{session_token(signer)}"})
    try:
        assert json.loads(await ws.recv())["kind"] == "image"
        await ws.send(encode_image_frame(0, b"\x89PNG\r\n\x1a\n but then nothing"))
        error = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (error["type"], error["code"], error["seq"]) == ("error", "IMAGE_INVALID", 0)
        await ws.send('{"type": "window"}')
        assert json.loads(await asyncio.wait_for(ws.recv(), 30))["code"] == "STREAM_MESSAGE_INVALID"
        await ws.send(encode_image_frame(1, SAMPLE_IMAGE.read_bytes()))
        ready = json.loads(await asyncio.wait_for(ws.recv(), 30))
        assert (ready["type"], ready["seq"], ready["labels"][0]["label"]) == ("ready", 1, "espresso")
    finally:
        await ws.close()


async def test_the_original_image_protocol_with_a_claim(image_replica: Replica, signer: TokenSigner,
                                                        photos: Path) -> None:
    report = await stream(StreamOptions(endpoint=stream_url(image_replica), type="image", images=photos,
                                        format="legacy", max_windows=2, duration=30,
                                        claim_token=signer.sign("claim", "old-client", REPLICA_ID, 60)))
    assert report.lost is None and len(report.windows) == 2
    assert report.windows[0].result[0]["label"] == "espresso"


async def test_a_tabular_client_on_an_image_replica_is_told(image_replica: Replica, signer: TokenSigner,
                                                            tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("a\n1\n")
    with pytest.raises(StreamDataError, match="serves image sessions"):
        await stream(StreamOptions(endpoint=stream_url(image_replica), session_token=session_token(signer), data=csv))
    with pytest.raises(StreamDataError, match="holds no image"):
        await stream(StreamOptions(endpoint=stream_url(image_replica), session_token=session_token(signer),
                                   images=tmp_path))
