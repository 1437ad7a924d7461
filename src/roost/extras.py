"""Roost's optional part: which modules only the hub's extra installs, and the error when one is missing.

A device installs the core (``pip install roost``): the agent, inference, cluster replicas, metrics
and the hub client. The hub and the operator's tools (``roost hub``, ``roost device add --ssh``,
``roost inventory``, the Kubernetes backend, ``roost stream --plot``) also need ``roost[hub]``.
A command that reaches one of those modules without it fails with ``EXTRA_NOT_INSTALLED`` naming
the module and the install command, never a traceback (:func:`roost.cli.main.main`).
"""

from __future__ import annotations

from roost.errors import RoostError

__all__ = ["HUB_EXTRA_MODULES", "extra_missing"]

#: Top-level module of every distribution in the ``hub`` extra of pyproject.toml
#: (tests/layout/test_extras.py keeps the two in step).
HUB_EXTRA_MODULES: dict[str, str] = {
    "fastapi": "fastapi",
    "uvicorn": "uvicorn",
    "httptools": "httptools",
    "sqlalchemy": "sqlalchemy",
    "alembic": "alembic",
    "psycopg": "psycopg[binary]",
    "multipart": "python-multipart",
    "python_multipart": "python-multipart",
    "jinja2": "jinja2",
    "itsdangerous": "itsdangerous",
    "kubernetes": "kubernetes",
    "matplotlib": "matplotlib",
    "asyncssh": "asyncssh",
    "ansible": "ansible-core",
    "ansible_runner": "ansible-runner",
}


def extra_missing(err: ModuleNotFoundError) -> RoostError | None:
    """The ``EXTRA_NOT_INSTALLED`` error for ``err`` if the missing module is the hub extra's, else None."""
    top = (err.name or "").split(".")[0]
    dist = HUB_EXTRA_MODULES.get(top)
    if dist is None:
        return None
    return RoostError(f"this command needs {dist} ({top}), which only Roost's hub extra installs: "
                      "pip install 'roost[hub]' (a device needs only the core: pip install roost)",
                      code="EXTRA_NOT_INSTALLED")
