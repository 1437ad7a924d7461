"""The SuperNode component's Run step (``roost learn supernode``, sample ``com.roost.FlowerSuperNode``).

A device takes part in a federated job by running Flower's SuperNode from the device's Flower venv
(``flowerBin``) against the job's SuperLink (``superlink``, verified with the job's CA, ``caCert``),
training on the device's own CSV (``dataPath``): the rows never leave the device. The step checks the
data path (``LEARN_DATA_MISSING``) and the Flower bin folder (``LEARN_FLOWER_MISSING``) first, then
starts ``flower-supernode`` (:func:`roost.learn.superlink.start_supernode`) and supervises it: it lives
as long as the SuperNode, stops it on SIGTERM/SIGINT (the agent stopping the component), and fails
with ``LEARN_FLOWER_FAILED`` and the SuperNode's last log lines when it exits on its own with an error.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from roost.errors import InvalidInputError
from roost.learn.errors import DataMissingError, FlowerProcessError
from roost.learn.superlink import flower_bin, free_port, start_supernode

__all__ = ["SuperNodeOptions", "ca_cert_file", "run_supernode"]

log = logging.getLogger(__name__)

_PEM = "-----BEGIN CERTIFICATE-----"
_JOB = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ADDRESS = re.compile(r"[A-Za-z0-9.\-\[\]:]{1,255}:\d{1,5}")
MAX_CA_BYTES = 64 * 1024


@dataclass(frozen=True)
class SuperNodeOptions:
    job: str
    superlink: str
    data_path: Path
    flower_bin: str | None
    ca_cert: str | None  # PEM text or a path; None: an insecure SuperLink (tests only)
    work_dir: Path
    port: int = 0


def ca_cert_file(value: str, work_dir: Path) -> Path:
    """The job's CA certificate as a file: ``value`` is its PEM text (written to ``work_dir``) or a path."""
    if value.lstrip().startswith(_PEM):
        if len(value) > MAX_CA_BYTES:
            raise InvalidInputError(f"caCert is {len(value)} bytes; at most {MAX_CA_BYTES}", code="INVALID_ARGUMENT")
        work_dir.mkdir(parents=True, exist_ok=True)
        path = work_dir / "job-ca.pem"
        path.write_text(value.strip() + "\n")
        return path
    path = Path(value)
    if not path.is_file():
        raise InvalidInputError(f"caCert {value[:200]!r} is neither PEM text nor an existing file",
                                code="INVALID_ARGUMENT")
    if not path.read_text(errors="replace").lstrip().startswith(_PEM):
        raise InvalidInputError(f"caCert file {path} holds no PEM certificate", code="INVALID_ARGUMENT")
    return path


def check(options: SuperNodeOptions) -> Path:
    """Check every input before anything starts; returns the Flower bin folder."""
    if not _JOB.fullmatch(options.job):
        raise InvalidInputError(f"job {options.job!r}: expected 1..64 letters, digits, '.', '_' or '-'",
                                code="INVALID_ARGUMENT")
    if not _ADDRESS.fullmatch(options.superlink):
        raise InvalidInputError(f"superlink {options.superlink!r}: expected host:port", code="INVALID_ARGUMENT")
    if not options.data_path.is_file():
        raise DataMissingError(f"job {options.job}: the data path {options.data_path} does not exist or is not a file")
    return flower_bin(options.flower_bin)


def run_supernode(options: SuperNodeOptions) -> int:
    """Check the inputs, start ``flower-supernode`` and supervise it until it ends or we are stopped.

    Returns 0 when stopped by a signal or when the SuperNode ended cleanly; raises FlowerProcessError
    when it exited with an error on its own."""
    bin_dir = check(options)
    ca = ca_cert_file(options.ca_cert, options.work_dir) if options.ca_cert else None
    home = options.work_dir / "flwr-home"
    home.mkdir(parents=True, exist_ok=True)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: stopping the SuperNode", signum)
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, stop)
    node = start_supernode(bin_dir, options.superlink, options.data_path.resolve(),
                           options.work_dir / "supernode.log", runtime_port=options.port or free_port(),
                           ca_cert=ca, home=home)
    log.info("job %s: SuperNode (pid %d) joining %s with data %s", options.job, node.proc.pid, options.superlink,
             options.data_path)
    try:
        while node.alive() and not stopping.wait(0.5):
            pass
    finally:
        node.stop()
    code = node.proc.returncode
    if stopping.is_set() or code == 0:
        log.info("job %s: SuperNode ended (exit %s)", options.job, code)
        return 0
    raise FlowerProcessError(f"job {options.job}: flower-supernode exited with {code}: {node.tail(1500)}")
