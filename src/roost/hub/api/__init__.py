"""The REST API under ``/v1``: thin routers (parse, call the store, serialise)."""
