"""The fleet hub: device registry, component registry and artifact store, deployments, REST API.

``roost hub serve`` runs :func:`roost.hub.app.create_app` under uvicorn. Every request reads and
writes the database (SQLite by default, PostgreSQL by URL), so several hub processes can share one
PostgreSQL. The layers: :mod:`roost.hub.store` (storage, no FastAPI), :mod:`roost.hub.desired` and
:mod:`roost.hub.rollout` (rules), :mod:`roost.hub.artifacts` (files on disk), :mod:`roost.hub.api`
(thin routers) and :mod:`roost.hub.errors` (the exception tree, mapped to HTTP at the boundary).
"""
