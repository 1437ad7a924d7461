"""In-process CLI tests (Typer's CliRunner) against a real hub in a thread (tests/hub's fixtures)."""

from tests.hub.conftest import hub_server, hub_server_factory

__all__ = ["hub_server", "hub_server_factory"]
