"""``GetSecretValue``: a secret the hub deployed to this device, to an authorised component.

Authorised as the nucleus authorises it: ``accessControl`` ``aws.greengrass.SecretManager``, operation
``aws.greengrass#GetSecretValue``, resource = the secret's stored name (its ARN when it was put under an
ARN, also when the component asks by the short name; ``*`` covers every secret). A secret the component
may not read is refused (``UnauthorizedError``) whether or not it is on the device; an authorised
request for a secret, version id or stage the device does not have is ``ResourceNotFoundError`` naming
it. A missing ``secretId`` or both ``versionId`` and ``versionStage`` are ``ServiceError``, as on
Greengrass. ``refresh: true`` asks the hub first (when the device is enrolled and the hub answers).
Values are never logged.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from roost.agent.ipc.types import ConnectionSide
from roost.agent.secrets import REFRESH_ON_REQUEST_TIMEOUT, check_request
from roost.ipc import rpc

#: The ``accessControl`` service of secrets, as on Greengrass.
SECRETS_SERVICE: Final = "aws.greengrass.SecretManager"


async def _get_secret_value(conn: ConnectionSide, sid: int, operation: str, request: dict[str, Any]) -> dict[str, Any]:
    conn.require_principal()
    secret_id, version_id, version_stage = check_request(
        request.get("secretId"), request.get("versionId"), request.get("versionStage"))
    store = conn.core.secret_store()
    name = store.resolve(secret_id) or secret_id
    conn.authorize(SECRETS_SERVICE, operation, name)
    if request.get("refresh") is True and store.refresher is not None:
        try:
            async with asyncio.timeout(REFRESH_ON_REQUEST_TIMEOUT):
                await store.refresher()
        except TimeoutError:
            pass  # the hub is slow: answer from the local copy, as when it is down
        name = store.resolve(secret_id) or secret_id
        conn.authorize(SECRETS_SERVICE, operation, name)
    return store.value(name, version_id, version_stage)


HANDLERS: Final = {rpc.OP_GET_SECRET_VALUE: _get_secret_value}
