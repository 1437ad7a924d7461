"""roost.serve.image: the bundled EfficientNet-Lite0 classifier, preprocessing and image requests."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from roost.serve.errors import (
    INVALID_BASE64,
    PATH_NOT_ALLOWED,
    PAYLOAD_TOO_LARGE,
    UNREADABLE_IMAGE,
    WRONG_TYPE,
    ModelError,
    RequestError,
)
from roost.serve.image import (
    IMAGE_NOT_FOUND,
    SAMPLE_IMAGE,
    SAMPLE_MODEL_DIR,
    ImageClassifier,
    load_image_request,
    preprocess,
)
from tests.conftest import require_seed_data

SEED = Path(__file__).resolve().parents[2].parent / "shared" / "seed-data"


@pytest.fixture(scope="module")
def classifier() -> ImageClassifier:
    return ImageClassifier(SAMPLE_MODEL_DIR, threads=1)


def seed_image(name: str) -> bytes:
    return (require_seed_data(name) / name).read_bytes()


def encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def code_of(excinfo: pytest.ExceptionInfo[RequestError]) -> str:
    return excinfo.value.code


# ----------------------------------------------------------------------------- model and labels


def test_labels_are_imagenet_in_standard_order() -> None:
    labels = json.loads((SAMPLE_MODEL_DIR / "labels.json").read_text(encoding="utf-8"))
    assert len(labels) == 1000
    assert labels[144] == "pelican"
    assert labels[88] == "macaw"
    assert labels[0] == "tench, Tinca tinca"
    assert all(isinstance(x, str) and x for x in labels)


def test_bundled_model_is_documented_and_small() -> None:
    assert (SAMPLE_MODEL_DIR / "PROVENANCE.md").is_file()
    assert (SAMPLE_IMAGE.parent / "ATTRIBUTION.md").is_file()
    assert (SAMPLE_MODEL_DIR / "model.onnx").stat().st_size < 8 * 1024 * 1024  # int8, not fp32
    assert SAMPLE_IMAGE.stat().st_size < 300 * 1024


def test_classifier_shape(classifier: ImageClassifier) -> None:
    assert classifier.input_size == 224
    assert len(classifier.labels) == 1000


@pytest.mark.parametrize(("name", "label"), [("pelican.jpeg", "pelican"), ("macaw.jpg", "macaw")])
def test_seed_images_classify(classifier: ImageClassifier, name: str, label: str) -> None:
    top = classifier.classify_bytes(seed_image(name), top_k=5)
    assert top[0][0] == label
    assert top[0][1] > 0.5


def test_sample_image_gives_documented_label(classifier: ImageClassifier) -> None:
    top = classifier.classify_bytes(SAMPLE_IMAGE.read_bytes(), top_k=3)
    assert top[0][0] == "espresso"  # as ATTRIBUTION.md says
    assert top[0][1] > 0.8
    assert "espresso" in (SAMPLE_IMAGE.parent / "ATTRIBUTION.md").read_text(encoding="utf-8")


def test_scores_are_sorted_softmax(classifier: ImageClassifier) -> None:
    top = classifier.classify_bytes(SAMPLE_IMAGE.read_bytes(), top_k=1000)
    scores = [s for _, s in top]
    assert len(top) == 1000
    assert scores == sorted(scores, reverse=True)
    assert sum(scores) == pytest.approx(1.0, abs=1e-4)
    # ImageNet's own list names two classes "crane" (134, the bird; 517, the machine).
    assert len({label for label, _ in top}) == 999
    # top_k larger than the class count is clamped; top_k must be a positive int
    assert len(classifier.classify_bytes(SAMPLE_IMAGE.read_bytes(), top_k=5000)) == 1000
    with pytest.raises(RequestError):
        classifier.classify_bytes(SAMPLE_IMAGE.read_bytes(), top_k=0)
    with pytest.raises(RequestError) as err:
        classifier.classify_bytes(SAMPLE_IMAGE.read_bytes(), top_k="3")  # type: ignore[arg-type]
    assert code_of(err) == WRONG_TYPE


def test_batch_of_two_equals_two_singles(classifier: ImageClassifier) -> None:
    a = classifier.preprocess(SAMPLE_IMAGE.read_bytes())
    b = classifier.preprocess(encode(Image.new("RGB", (300, 200), (30, 140, 60))))
    batch = np.concatenate([a, b])
    assert batch.shape == (2, 3, 224, 224)
    together = classifier.classify(batch, top_k=5)
    singles = [classifier.classify(a, top_k=5)[0], classifier.classify(b, top_k=5)[0]]
    for got, want in zip(together, singles, strict=True):
        assert [label for label, _ in got] == [label for label, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-5)
    np.testing.assert_allclose(
        classifier.logits(batch), np.concatenate([classifier.logits(a), classifier.logits(b)]), atol=1e-4
    )
    assert classifier.classify(batch[:0]) == []


def test_batch_of_wrong_shape_or_dtype(classifier: ImageClassifier) -> None:
    with pytest.raises(RequestError) as err:
        classifier.classify(np.zeros((1, 3, 100, 100), np.float32))
    assert code_of(err) == WRONG_TYPE
    with pytest.raises(RequestError):
        classifier.classify(np.zeros((1, 3, 224, 224), np.float64))


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_normalisation_and_crop() -> None:
    # A white image becomes (255 - 127) / 128 everywhere; black (0 - 127) / 128.
    white = preprocess(encode(Image.new("RGB", (640, 480), (255, 255, 255)), "PNG"))
    assert white.shape == (1, 3, 224, 224)
    assert white.dtype == np.float32
    assert white.flags.c_contiguous
    np.testing.assert_allclose(white, 1.0, atol=1e-6)
    # The centre crop leaves out a border: a wide image with red edges stays green.
    img = Image.new("RGB", (1000, 256), (255, 0, 0))
    img.paste((0, 255, 0), (372, 0, 628, 256))  # the central 256 px column
    out = preprocess(encode(img, "PNG"))
    assert out[0, 1].min() > 0.9
    assert out[0, 0].max() < -0.9


def test_preprocess_channel_order_is_rgb() -> None:
    out = preprocess(encode(Image.new("RGB", (64, 64), (255, 0, 0)), "PNG"))
    assert out[0, 0].mean() == pytest.approx(1.0)
    assert out[0, 1].mean() == pytest.approx(-127 / 128)


def test_preprocess_applies_exif_orientation() -> None:
    img = Image.new("RGB", (400, 100), (0, 0, 255))
    img.paste((255, 255, 0), (0, 0, 100, 100))  # yellow left end
    upright = preprocess(encode(img, "PNG"), size=32)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    rotated_file = encode(img.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes(), quality=95)
    # Stored rotated 90 CCW + orientation 6: shown as the original, upright image.
    shown = preprocess(rotated_file, size=32)
    np.testing.assert_allclose(shown, upright, atol=0.1)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK", "I;16", "1", "LA"])
def test_preprocess_converts_modes(mode: str) -> None:
    img = Image.new("RGB", (50, 40), (10, 200, 30)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    out = preprocess(encode(img, fmt))
    assert out.shape == (1, 3, 224, 224)
    assert np.isfinite(out).all()


def test_transparent_pixels_become_white() -> None:
    out = preprocess(encode(Image.new("RGBA", (30, 30), (0, 0, 0, 0)), "PNG"))
    np.testing.assert_allclose(out, 1.0, atol=1e-6)


def test_tiny_image() -> None:
    assert preprocess(encode(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG")).shape == (1, 3, 224, 224)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00\x01\x02 not an image at all \xff" * 10, "not a format"),  # would be a huge TGA
        (np.random.default_rng(1).bytes(5000), "not a format"),
        (b"Hello, this is a text file.\nIt has lines.\n", "not a format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, ""),
    ],
    ids=["empty", "garbage", "random", "text", "png-header-only"],
)
def test_unreadable_bytes(data: bytes, reason: str) -> None:
    with pytest.raises(RequestError) as err:
        preprocess(data)
    assert code_of(err) == UNREADABLE_IMAGE
    assert reason in err.value.message


def test_truncated_jpeg_names_pillows_reason() -> None:
    full = encode(Image.effect_noise((256, 256), 64).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(RequestError) as err:
        preprocess(full[: len(full) // 2])
    assert code_of(err) == UNREADABLE_IMAGE
    assert "truncated" in err.value.message


def test_decompression_bomb_is_refused() -> None:
    # 8000 x 6000 = 48 Mpx of one colour: a tiny PNG that would decode to 144 MB.
    bomb = encode(Image.new("L", (8000, 6000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(RequestError) as err:
        preprocess(bomb)
    assert code_of(err) == PAYLOAD_TOO_LARGE
    with pytest.raises(RequestError) as err:
        preprocess(encode(Image.new("RGB", (100, 100)), "PNG"), max_pixels=9999)
    assert code_of(err) == PAYLOAD_TOO_LARGE


def test_preprocess_wrong_type() -> None:
    with pytest.raises(RequestError) as err:
        preprocess("not bytes")  # type: ignore[arg-type]
    assert code_of(err) == WRONG_TYPE


# ----------------------------------------------------------------------------- model loading errors


def test_missing_model_dir_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.onnx"):
        ImageClassifier(tmp_path)


def test_corrupt_model_names_the_file(tmp_path: Path) -> None:
    shutil.copy(SAMPLE_MODEL_DIR / "labels.json", tmp_path / "labels.json")
    (tmp_path / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match=r"model\.onnx"):
        ImageClassifier(tmp_path)


@pytest.mark.parametrize(
    "labels",
    [None, "{not json", '{"a": 1}', "[]", '["only", "three", "labels"]', "[1, 2]"],
    ids=["missing", "bad-json", "object", "empty", "wrong-count", "not-strings"],
)
def test_bad_labels_name_the_file(tmp_path: Path, labels: str | None) -> None:
    os.symlink(SAMPLE_MODEL_DIR / "model.onnx", tmp_path / "model.onnx")
    if labels is not None:
        (tmp_path / "labels.json").write_text(labels, encoding="utf-8")
    with pytest.raises(ModelError, match=r"labels\.json"):
        ImageClassifier(tmp_path)


def test_default_threads_loads() -> None:
    assert ImageClassifier(SAMPLE_MODEL_DIR).classify_bytes(SAMPLE_IMAGE.read_bytes(), 1)[0][0] == "espresso"


# ----------------------------------------------------------------------------- requests


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    shutil.copy(SAMPLE_IMAGE, allowed / "coffee.jpg")
    (tmp_path / "secret.jpg").write_bytes(SAMPLE_IMAGE.read_bytes())
    return allowed


def test_file_request(image_dir: Path, classifier: ImageClassifier) -> None:
    data, source = load_image_request({"image_dir": str(image_dir), "fname": "coffee.jpg"}, [image_dir])
    assert data == SAMPLE_IMAGE.read_bytes()
    assert source == os.path.realpath(image_dir / "coffee.jpg")
    assert classifier.classify_bytes(data, 1)[0][0] == "espresso"
    # A subfolder of an allowed folder is allowed; so is a symlink that stays inside.
    (image_dir / "sub").mkdir()
    shutil.copy(SAMPLE_IMAGE, image_dir / "sub" / "c.jpg")
    os.symlink(image_dir / "coffee.jpg", image_dir / "link.jpg")
    assert load_image_request({"image_dir": str(image_dir / "sub"), "fname": "c.jpg"}, [image_dir])[0] == data
    assert load_image_request({"image_dir": str(image_dir), "fname": "link.jpg"}, [image_dir])[0] == data
    # An allowed folder reached through a symlink works too.
    os.symlink(image_dir, image_dir.parent / "alias")
    assert load_image_request({"image_dir": str(image_dir.parent / "alias"), "fname": "coffee.jpg"}, [image_dir])[0]


@pytest.mark.parametrize(
    "doc",
    [
        {"fname": "../secret.jpg"},
        {"fname": "sub/../../secret.jpg"},
        {"fname": "ABSOLUTE_SECRET"},
        {"fname": "/etc/passwd"},
        {"fname": "/etc/no-such-file"},
        {"fname": "escape.jpg"},
        {"fname": "dirlink/secret.jpg"},
        {"fname": "."},
        {"fname": "bad\0name.jpg"},
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "absolute-fname",
        "etc-passwd",
        "missing-outside",
        "symlink-escape",
        "dir-symlink-escape",
        "the-folder-itself",
        "nul-byte",
    ],
)
def test_path_not_allowed(image_dir: Path, doc: dict[str, str]) -> None:
    os.symlink(image_dir.parent / "secret.jpg", image_dir / "escape.jpg")
    os.symlink(image_dir.parent, image_dir / "dirlink")
    if doc["fname"] == "ABSOLUTE_SECRET":
        doc = {"fname": str(image_dir.parent / "secret.jpg")}
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), **doc}, [image_dir])
    assert code_of(err) == PATH_NOT_ALLOWED
    assert repr(os.path.join(str(image_dir), doc["fname"])) in err.value.message


def test_image_dir_outside_allowed(image_dir: Path) -> None:
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir.parent), "fname": "secret.jpg"}, [image_dir])
    assert code_of(err) == PATH_NOT_ALLOWED
    # A sibling whose name starts with the allowed folder's name is outside it.
    sibling = image_dir.parent / (image_dir.name + "2")
    sibling.mkdir()
    shutil.copy(SAMPLE_IMAGE, sibling / "x.jpg")
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(sibling), "fname": "x.jpg"}, [image_dir])
    assert code_of(err) == PATH_NOT_ALLOWED
    # No allowed folders: nothing is allowed.
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "coffee.jpg"}, [])
    assert code_of(err) == PATH_NOT_ALLOWED


def test_missing_file_and_folder(image_dir: Path) -> None:
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "nope.jpg"}, [image_dir])
    assert code_of(err) == IMAGE_NOT_FOUND
    assert "nope.jpg" in err.value.message
    (image_dir / "folder.jpg").mkdir()
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "folder.jpg"}, [image_dir])
    assert code_of(err) == IMAGE_NOT_FOUND
    os.mkfifo(image_dir / "fifo.jpg")  # must not block
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "fifo.jpg"}, [image_dir])
    assert code_of(err) == IMAGE_NOT_FOUND


def test_oversized_file(image_dir: Path) -> None:
    size = (image_dir / "coffee.jpg").stat().st_size
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "coffee.jpg"}, [image_dir], max_bytes=size - 1)
    assert code_of(err) == PAYLOAD_TOO_LARGE
    assert load_image_request({"image_dir": str(image_dir), "fname": "coffee.jpg"}, [image_dir], max_bytes=size)[0]


def test_inline_request() -> None:
    raw = SAMPLE_IMAGE.read_bytes()
    text = base64.b64encode(raw).decode()
    assert load_image_request({"image": text}, []) == (raw, "inline")
    wrapped = base64.encodebytes(raw).decode()  # MIME: newlines every 76 characters
    assert load_image_request({"image": wrapped}, [])[0] == raw
    assert load_image_request({"image": "data:image/jpeg;base64," + text}, [])[0] == raw


@pytest.mark.parametrize("bad", ["not base64!!", "abc", "@@@@", "data:image/png;base64"])
def test_inline_bad_base64(bad: str) -> None:
    with pytest.raises(RequestError) as err:
        load_image_request({"image": bad}, [])
    assert code_of(err) == INVALID_BASE64


def test_inline_oversized() -> None:
    text = base64.b64encode(b"\xff" * 2000).decode()
    with pytest.raises(RequestError) as err:
        load_image_request({"image": text}, [], max_bytes=1000)
    assert code_of(err) == PAYLOAD_TOO_LARGE
    with pytest.raises(RequestError) as err:
        load_image_request({"image": base64.b64encode(b"\xff" * 1001).decode()}, [], max_bytes=1000)
    assert code_of(err) == PAYLOAD_TOO_LARGE
    assert len(load_image_request({"image": base64.b64encode(b"\xff" * 1000).decode()}, [], max_bytes=1000)[0]) == 1000


@pytest.mark.parametrize(
    "doc",
    [
        ["not", "a", "mapping"],
        {"image": 123},
        {"image": None},
        {"image": b"bytes are not JSON"},
        {"image_dir": 5, "fname": "coffee.jpg"},
        {"image_dir": "/tmp", "fname": ["a"]},
        {"image_dir": "/tmp", "fname": ""},
        {"fname": "coffee.jpg"},
    ],
    ids=["list", "int-image", "null-image", "bytes-image", "int-dir", "list-fname", "empty-fname", "no-dir"],
)
def test_wrong_types(doc: object) -> None:
    with pytest.raises(RequestError) as err:
        load_image_request(doc, [Path("/tmp")])  # type: ignore[arg-type]
    assert code_of(err) == WRONG_TYPE


def test_ambiguous_or_empty_request(image_dir: Path) -> None:
    with pytest.raises(RequestError):
        load_image_request({}, [image_dir])
    with pytest.raises(RequestError):
        load_image_request({"image": "", "image_dir": str(image_dir), "fname": "coffee.jpg"}, [image_dir])


def test_requests_errors_serialise(image_dir: Path) -> None:
    with pytest.raises(RequestError) as err:
        load_image_request({"image_dir": str(image_dir), "fname": "../secret.jpg"}, [image_dir])
    assert err.value.to_dict()["code"] == PATH_NOT_ALLOWED
