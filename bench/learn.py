"""The collaborative-AI benchmarks of issue 13, one after the other: federated, joint, parallel.

Each runs as its own process (one at a time, so they do not share the 2 cores) and writes its own
results file, which ``bench/README.md`` cites:

- ``bench/learn_federated.py`` → ``results-learn-federated.json``: Flower on the non-IID wine split,
  3 SuperNodes, 10 rounds, every strategy; RMSE against central training, bytes per round, and a
  scan of every Flower message for training rows;
- ``bench/learn_joint.py`` → ``results-learn-joint.json`` and ``docs/joint-inference.png``: the
  accuracy / share-sent / latency / bytes curve of each hard-example filter, with a centre replica;
- ``bench/learn_parallel.py`` → ``results-learn-parallel.json``: throughput over 1, 2 and 4 replicas.

``--quick`` runs a short version of each (3 rounds, a coarse threshold grid, 1 repeat) and writes
nothing over the committed results unless ``--out-dir`` is given. ``--only`` picks some of them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = ("federated", "joint", "parallel")


def _argv(name: str, quick: bool, out_dir: Path | None) -> list[str]:
    script = HERE / f"learn_{name}.py"
    args = [sys.executable, str(script)]
    if name == "federated":
        args += ["--rounds", "3", "--strategies", "fedavg"] if quick else \
            ["--strategies", "fedxgb-bagging,fedxgb-cyclic,fedavg,fedprox"]
    elif name == "joint" and quick:
        args += ["--quick"]
    elif name == "parallel":
        args += ["--repeats", "1" if quick else "5"]
    if out_dir is not None:
        args += ["--out", str(out_dir / f"results-learn-{name}.json")]
        if name == "joint":
            args += ["--plot", str(out_dir / "joint-inference.png")]
    elif quick:
        raise SystemExit("--quick needs --out-dir: a short run must not replace the committed results")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs (needs --out-dir)")
    parser.add_argument("--only", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    parser.add_argument("--out-dir", type=Path, default=None, help="write the results here, not in bench/")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(BENCHES))
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
    if args.out_dir is not None:
        args.out_dir.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in chosen:
        started = time.perf_counter()
        print(f"== {name}", flush=True)
        code = subprocess.call(_argv(name, args.quick, args.out_dir), cwd=HERE.parent)
        print(f"== {name}: exit {code} in {time.perf_counter() - started:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
