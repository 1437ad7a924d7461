#!/usr/bin/env python3
"""Make Roost's sample image from scikit-image's ``coffee.png``.

Writes ``src/roost/samples/artifacts/com.roost.ImageRequester/1.0.0/coffee.jpg``.

The photograph is CC0 (by Rachel Michetti, courtesy of Pikolo Espresso Bar, as stated in
scikit-image's ``skimage/data/_fetchers.py``). scikit-image is not a Roost dependency: take the
file out of its wheel::

    pip download --no-deps -d /tmp/skd scikit-image==0.26.0
    (cd /tmp/skd && python3 -m zipfile -e scikit_image-0.26.0-*.whl .)
    .venv/bin/python scripts/make_sample_image.py /tmp/skd/skimage/data/coffee.png

The PNG (600 x 400, 467 KB) is re-encoded as a baseline JPEG of quality 90 without metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "src/roost/samples/artifacts/com.roost.ImageRequester/1.0.0/coffee.jpg"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="skimage/data/coffee.png")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with Image.open(args.source) as img:
        rgb = img.convert("RGB")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rgb.save(args.out, "JPEG", quality=90, optimize=True)
    for path in (args.source, args.out):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(f"{path}: {path.stat().st_size} bytes, sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
