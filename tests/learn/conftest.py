"""Fixtures of the learn tests: the real hub in a thread (tests/hub's fixtures) for publishing."""

from tests.hub.conftest import hub_server, hub_server_factory

__all__ = ["hub_server", "hub_server_factory"]
