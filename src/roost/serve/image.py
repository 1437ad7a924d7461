"""The ONNX image classifier and the decoding of image requests.

A model folder holds ``model.onnx`` (input ``N x 3 x H x W`` float32, output ``N x C`` logits) and
``labels.json`` (a JSON list of ``C`` class names in output order). The bundled sample is
EfficientNet-Lite0 (``roost/samples/artifacts/com.roost.ImageClassifier/1.0.0``, int8, 1000 ImageNet classes; see its
PROVENANCE.md).

Preprocessing is the one the EfficientNet-Lite weights were trained and evaluated with (the
TensorFlow ``efficientnet/lite`` reference): decode to RGB (EXIF orientation applied, transparency
composed onto white), take the centred square whose side is ``size / (size + 32)`` of the shorter
side, resize it to ``size x size`` (bicubic), then ``(pixel - 127) / 128`` per channel.

Requests come in two shapes (the upstream Greengrass sample and an inline variant)::

    {"image_dir": "/path/to/folder", "fname": "pelican.jpeg"}
    {"image": "<base64 of the encoded image>"}

:func:`load_image_request` turns either into bytes. A file must resolve (symlinks followed) to a
place inside one of the allowed folders, or the request gets ``PATH_NOT_ALLOWED``.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import os
import stat
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]  # onnxruntime ships no type information
from PIL import Image, ImageOps, UnidentifiedImageError

from roost.serve.errors import (
    INVALID_BASE64,
    PATH_NOT_ALLOWED,
    PAYLOAD_TOO_LARGE,
    UNREADABLE_IMAGE,
    WRONG_TYPE,
    ModelError,
    RequestError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CROP_PADDING",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "IMAGE_NOT_FOUND",
    "IMAGE_SIZE",
    "LABELS_FILE",
    "MEAN_RGB",
    "MODEL_FILE",
    "SAMPLE_IMAGE",
    "SAMPLE_MODEL_DIR",
    "STDDEV_RGB",
    "ImageClassifier",
    "load_image_request",
    "preprocess",
]

#: Code of a request whose file does not exist (or is not a regular file). Kept here, not in
#: ``roost.serve.errors``, because only image requests name files.
IMAGE_NOT_FOUND = "IMAGE_NOT_FOUND"

MODEL_FILE = "model.onnx"
LABELS_FILE = "labels.json"

#: Input side of EfficientNet-Lite0, and the centre-crop margin of its reference evaluation.
IMAGE_SIZE = 224
CROP_PADDING = 32
#: Per-channel normalisation of the EfficientNet-Lite weights, on 0-255 RGB.
MEAN_RGB = 127.0
STDDEV_RGB = 128.0

#: Largest encoded image accepted from a file or inline (bytes).
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
#: Largest decoded image accepted (pixels): a guard against decompression bombs, far below
#: Pillow's own limit (about 89 Mpx) and above any camera of a small device.
DEFAULT_MAX_PIXELS = 40_000_000

#: The encodings accepted. Pillow knows many more, some without a signature (TGA), which would read
#: random bytes as a huge image; fewer decoders also means less attack surface. (JPEG includes the
#: multi-picture JPEGs of many cameras, which Pillow opens as MPO.)
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")

_SAMPLES = Path(__file__).resolve().parent.parent / "samples"
#: The bundled model folder and sample image (see their PROVENANCE.md / ATTRIBUTION.md).
SAMPLE_MODEL_DIR = _SAMPLES / "artifacts" / "com.roost.ImageClassifier" / "1.0.0"
SAMPLE_IMAGE = _SAMPLES / "artifacts" / "com.roost.ImageRequester" / "1.0.0" / "coffee.jpg"

FloatArray = npt.NDArray[np.float32]


# --------------------------------------------------------------------------------------------
# Decoding and preprocessing
# --------------------------------------------------------------------------------------------


def _decode(image_bytes: bytes, *, draft_side: int, max_pixels: int) -> Image.Image:
    """Decode to an RGB image (EXIF orientation applied) or raise UNREADABLE_IMAGE/PAYLOAD_TOO_LARGE."""
    if not isinstance(image_bytes, bytes | bytearray | memoryview):
        raise RequestError(f"image must be bytes, got {type(image_bytes).__name__}", code=WRONG_TYPE)
    if len(image_bytes) == 0:
        raise RequestError("unreadable image: empty (0 bytes)", code=UNREADABLE_IMAGE)
    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) between its limit and twice it: make that an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(image_bytes), formats=IMAGE_FORMATS)
            width, height = img.size
            if width * height > max_pixels:
                raise RequestError(
                    f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}",
                    code=PAYLOAD_TOO_LARGE,
                )
            if img.format in ("JPEG", "MPO"):
                # Let libjpeg decode at 1/2, 1/4 or 1/8 scale while the result stays at least
                # draft_side on both sides: much faster for big photos, same crop afterwards.
                img.draft("RGB", (draft_side, draft_side))
            upright = ImageOps.exif_transpose(img)  # decodes the pixels
            upright.load()
            return _to_rgb(upright)
    except RequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise RequestError(f"image too large to decode safely: {err}", code=PAYLOAD_TOO_LARGE) from err
    except UnidentifiedImageError as err:
        raise RequestError(
            f"unreadable image ({len(image_bytes)} bytes): not a format Pillow recognises among "
            f"{', '.join(IMAGE_FORMATS)}",
            code=UNREADABLE_IMAGE,
        ) from err
    except Exception as err:
        # Pillow's decoders raise OSError for truncated data, and SyntaxError, ValueError,
        # struct.error, EOFError, IndexError... for malformed headers: all mean "bad bytes".
        reason = str(err) or type(err).__name__
        raise RequestError(f"unreadable image ({len(image_bytes)} bytes): {reason}", code=UNREADABLE_IMAGE) from err


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    has_alpha = "A" in img.getbands() or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def preprocess(
    image_bytes: bytes,
    *,
    size: int = IMAGE_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FloatArray:
    """Decode encoded image bytes into a ``1 x 3 x size x size`` float32 batch.

    Raises :class:`RequestError` ``UNREADABLE_IMAGE`` (with Pillow's reason) for bytes that are not
    a decodable image, and ``PAYLOAD_TOO_LARGE`` for more than ``max_pixels`` pixels.
    """
    img = _decode(image_bytes, draft_side=size + CROP_PADDING, max_pixels=max_pixels)
    width, height = img.size
    crop = max(1, int(size / (size + CROP_PADDING) * min(width, height)))
    left = (width - crop + 1) // 2
    top = (height - crop + 1) // 2
    img = img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + crop, top + crop))
    pixels = np.asarray(img, dtype=np.float32)  # H x W x 3
    normalised = (pixels - np.float32(MEAN_RGB)) / np.float32(STDDEV_RGB)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis])


# --------------------------------------------------------------------------------------------
# The classifier
# --------------------------------------------------------------------------------------------


def _load_labels(path: Path) -> list[str]:
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise ModelError(f"labels file {path} is missing") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"labels file {path} cannot be read: {err}") from err
    try:
        labels = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ModelError(f"labels file {path} is not valid JSON: {err}") from err
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelError(f"labels file {path} must be a non-empty JSON list of strings")
    return labels


class ImageClassifier:
    """An ONNX image classifier: ``model.onnx`` + ``labels.json`` from ``model_dir``.

    ``threads`` sets onnxruntime's intra-op threads (``None``: onnxruntime's default, one per
    core). Instances are safe to share between threads (onnxruntime sessions are).
    Raises :class:`ModelError`, naming the file, when the model or labels are missing or corrupt or
    do not fit together.
    """

    def __init__(self, model_dir: Path, *, threads: int | None = None) -> None:
        self.model_dir = Path(model_dir)
        model_path = self.model_dir / MODEL_FILE
        labels_path = self.model_dir / LABELS_FILE
        if not model_path.is_file():
            raise ModelError(f"model file {model_path} is missing")
        self.labels = _load_labels(labels_path)

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            if threads < 1:
                raise ModelError(f"threads must be at least 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(model_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own pybind exception types
            raise ModelError(f"model file {model_path} cannot be loaded: {err}") from err

        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) < 1:
            raise ModelError(f"model file {model_path} must have one input and an output of logits")
        shape = list(inputs[0].shape)
        if len(shape) != 4 or shape[1] != 3 or not isinstance(shape[2], int) or shape[2] != shape[3]:
            raise ModelError(f"model file {model_path}: input must be N x 3 x S x S, got {shape}")
        self.input_name: str = inputs[0].name
        self.output_name: str = outputs[0].name
        self.input_size: int = shape[2]
        classes = outputs[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.labels):
            raise ModelError(
                f"labels file {labels_path} has {len(self.labels)} labels but model file {model_path} "
                f"has {classes} outputs"
            )
        logger.info(
            "Loaded image classifier %s (%d classes, input %dx%d, threads=%s)",
            model_path,
            len(self.labels),
            self.input_size,
            self.input_size,
            threads if threads is not None else "default",
        )

    def preprocess(self, image_bytes: bytes) -> FloatArray:
        """Encoded image bytes to a ``1 x 3 x S x S`` batch for this model (see :func:`preprocess`)."""
        return preprocess(image_bytes, size=self.input_size)

    def logits(self, batch: FloatArray) -> FloatArray:
        """Raw model output for a ``N x 3 x S x S`` float32 batch."""
        s = self.input_size
        if not isinstance(batch, np.ndarray) or batch.dtype != np.float32 or batch.shape[1:] != (3, s, s):
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch).__name__
            raise RequestError(f"batch must be float32 N x 3 x {s} x {s}, got {got}", code=WRONG_TYPE)
        out = self._session.run([self.output_name], {self.input_name: np.ascontiguousarray(batch)})[0]
        return np.asarray(out, dtype=np.float32)

    def classify(self, batch: FloatArray, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top ``top_k`` ``(label, softmax score)`` per image of the batch, best first."""
        if isinstance(top_k, bool) or not isinstance(top_k, int):
            raise RequestError(f"top_k must be an integer, got {type(top_k).__name__}", code=WRONG_TYPE)
        if top_k < 1:
            raise RequestError(f"top_k must be at least 1, got {top_k}")
        if len(batch) == 0:
            return []
        logits = self.logits(batch)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        probs = exp / exp.sum(axis=1, keepdims=True)
        k = min(top_k, probs.shape[1])
        results: list[list[tuple[str, float]]] = []
        for row in probs:
            best = np.argpartition(-row, k - 1)[:k]
            best = best[np.argsort(-row[best], kind="stable")]
            results.append([(self.labels[i], float(row[i])) for i in best])
        return results

    def classify_bytes(self, image_bytes: bytes, top_k: int = 5) -> list[tuple[str, float]]:
        """Classify one encoded image: its top ``top_k`` ``(label, score)``, best first."""
        return self.classify(self.preprocess(image_bytes), top_k)[0]


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def load_image_request(
    doc: Mapping[str, Any],
    allowed_dirs: Sequence[Path],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> tuple[bytes, str]:
    """The encoded image a request names, and where it came from (a resolved path, or ``"inline"``).

    ``{"image_dir": ..., "fname": ...}`` reads a file that must resolve, symlinks followed, to a
    place inside one of ``allowed_dirs`` (``PATH_NOT_ALLOWED`` otherwise, also for a missing file
    outside them; ``IMAGE_NOT_FOUND`` for a missing file inside). ``{"image": "<base64>"}``
    carries the image inline (``INVALID_BASE64`` when it does not decode). More than
    ``max_bytes`` gives ``PAYLOAD_TOO_LARGE``; a value of the wrong type ``WRONG_TYPE``.
    """
    if not isinstance(doc, Mapping):
        raise RequestError(f"an image request must be a JSON object, got {type(doc).__name__}", code=WRONG_TYPE)
    has_inline = "image" in doc
    has_file = "fname" in doc or "image_dir" in doc
    if has_inline and has_file:
        raise RequestError("an image request carries either 'image' or 'image_dir' and 'fname', not both")
    if has_inline:
        return _inline_image(doc["image"], max_bytes), "inline"
    if has_file:
        return _file_image(doc.get("image_dir"), doc.get("fname"), allowed_dirs, max_bytes)
    raise RequestError("an image request needs 'image' (base64) or 'image_dir' and 'fname'")


def _inline_image(value: Any, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise RequestError(f"'image' must be a base64 string, got {type(value).__name__}", code=WRONG_TYPE)
    text = value
    if text.startswith("data:"):  # a data URL: data:image/jpeg;base64,....
        _, sep, text = text.partition(",")
        if not sep:
            raise RequestError("'image' is a data URL without a comma", code=INVALID_BASE64)
    text = "".join(text.split())  # MIME base64 wraps lines
    if len(text) // 4 * 3 > max_bytes + 2:
        raise RequestError(
            f"inline image is about {len(text) // 4 * 3} bytes; the limit is {max_bytes}", code=PAYLOAD_TOO_LARGE
        )
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise RequestError(f"'image' is not valid base64: {err}", code=INVALID_BASE64) from err
    if len(data) > max_bytes:
        raise RequestError(f"inline image is {len(data)} bytes; the limit is {max_bytes}", code=PAYLOAD_TOO_LARGE)
    return data


def _is_inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _file_image(image_dir: Any, fname: Any, allowed_dirs: Sequence[Path], max_bytes: int) -> tuple[bytes, str]:
    if not isinstance(fname, str) or not fname:
        raise RequestError(f"'fname' must be a non-empty string, got {type(fname).__name__}", code=WRONG_TYPE)
    if not isinstance(image_dir, str) or not image_dir:
        raise RequestError(f"'image_dir' must be a non-empty string, got {type(image_dir).__name__}", code=WRONG_TYPE)
    requested = os.path.join(image_dir, fname)  # an absolute fname replaces image_dir
    if "\0" in requested:
        raise RequestError(f"image path {requested!r} contains a NUL byte", code=PATH_NOT_ALLOWED)
    resolved = os.path.realpath(requested)
    roots = [os.path.realpath(d) for d in allowed_dirs]
    if not any(_is_inside(resolved, root) and resolved != root for root in roots):
        logger.debug("Refused image path %r (resolves to %s; allowed: %s)", requested, resolved, roots)
        raise RequestError(f"image path {requested!r} is outside the allowed image folders", code=PATH_NOT_ALLOWED)

    # O_NOFOLLOW: the last component must not have become a symlink since realpath();
    # O_NONBLOCK: a FIFO planted in the folder must not hang the server (no effect on files).
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(resolved, flags)
    except FileNotFoundError as err:
        raise RequestError(f"image file {requested!r} does not exist", code=IMAGE_NOT_FOUND) from err
    except OSError as err:
        raise RequestError(f"image file {requested!r} cannot be opened: {err.strerror}", code=UNREADABLE_IMAGE) from err
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise RequestError(f"image path {requested!r} is not a regular file", code=IMAGE_NOT_FOUND)
    with os.fdopen(fd, "rb") as fh:
        proc_link = f"/proc/self/fd/{fd}"
        if os.path.exists(proc_link):
            # Re-check what was actually opened: a folder on the way may have been swapped for a
            # symlink between realpath() and open().
            opened = os.path.realpath(proc_link)
            if not any(_is_inside(opened, root) for root in roots):
                raise RequestError(
                    f"image path {requested!r} is outside the allowed image folders", code=PATH_NOT_ALLOWED
                )
        if st.st_size > max_bytes:
            raise RequestError(
                f"image file {requested!r} is {st.st_size} bytes; the limit is {max_bytes}", code=PAYLOAD_TOO_LARGE
            )
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise RequestError(f"image file {requested!r} is over the limit of {max_bytes} bytes", code=PAYLOAD_TOO_LARGE)
    return data, resolved
