"""Where the agent's IoT Core operations go: the MQTT broker settings (URI, TLS, credentials, spool).

Two sources, the command line winning over the file:

* ``roost agent start --mqtt-broker mqtt://127.0.0.1:1883`` (``mqtts://`` with ``--mqtt-ca``,
  ``--mqtt-cert``, ``--mqtt-key``; ``--mqtt-username``, ``--mqtt-password-file``), the same
  options on ``python -m roost.agent``;
* the ``mqtt:`` section of ``ROOT/agent.yaml``, the agent's own settings file (the only section
  the agent reads from it today; other top-level keys are left alone)::

      mqtt:
        broker: mqtts://broker.example:8883   # mqtt:// (1883) or mqtts:// (8883); tcp:// and ssl:// too
        ca: /etc/roost/ca.pem                 # CA bundle to verify the broker (default: the system's)
        cert: /etc/roost/device.pem           # client certificate (with key): mutual TLS
        key: /etc/roost/device.key
        username: device-1
        passwordFile: /etc/roost/mqtt.password  # or $ROOST_MQTT_PASSWORD; never logged
        clientId: device-1                    # default: the thing name, as on Greengrass
        keepAliveSeconds: 60
        reconnectMaxDelaySeconds: 30          # backoff doubles from 1 s up to this
        maxMessageSizeInBytes: 131072         # Greengrass' default (AWS IoT Core's 128 KiB)
        spooler:                              # publishes made while the broker is away
          maxMessages: 10000
          maxSizeInBytes: 2621440             # the nucleus' default (2.5 MiB)
          keepQos0WhenOffline: true           # false: refuse QoS 0 publishes while offline, as the nucleus does

The password is read from the file (first line) or the environment, kept out of ``repr`` and
never logged. The client speaks MQTT 5 (Mosquitto 2, EMQX, HiveMQ and AWS IoT Core do).
"""

from __future__ import annotations

import argparse
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit

import yaml

from roost.agent.mqtt_spool import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES
from roost.errors import InvalidInputError

AGENT_CONFIG_FILE: Final = "agent.yaml"
PASSWORD_ENV: Final = "ROOST_MQTT_PASSWORD"
#: AWS IoT Core's message size limit, Greengrass' default ``mqtt.maxMessageSizeInBytes``.
DEFAULT_MAX_MESSAGE_SIZE: Final = 128 * 1024
_SCHEMES: Final = {"mqtt": (False, 1883), "tcp": (False, 1883), "mqtts": (True, 8883), "ssl": (True, 8883)}
_KEYS: Final = {"broker", "ca", "cert", "key", "username", "passwordFile", "clientId", "keepAliveSeconds",
                "reconnectMaxDelaySeconds", "maxMessageSizeInBytes", "spooler"}
_SPOOLER_KEYS: Final = {"maxMessages", "maxSizeInBytes", "keepQos0WhenOffline"}


def _invalid(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="MQTT_CONFIG_INVALID")


@dataclass(frozen=True)
class BrokerAddress:
    """A parsed broker URI."""

    uri: str
    host: str
    port: int
    tls: bool

    @classmethod
    def parse(cls, uri: object, what: str = "the MQTT broker URI") -> BrokerAddress:
        if not isinstance(uri, str) or not uri:
            raise _invalid(f"{what} must be a URI such as mqtt://127.0.0.1:1883, got {uri!r}")
        try:
            parts = urlsplit(uri)
            port = parts.port
        except ValueError as err:
            raise _invalid(f"{what} {uri!r} is malformed: {err}") from err
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            raise _invalid(f"{what} {uri!r}: the scheme must be mqtt:// or mqtts:// (also tcp://, ssl://), "
                           f"not {parts.scheme or 'missing'}")
        if not parts.hostname:
            raise _invalid(f"{what} {uri!r} names no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise _invalid(f"{what} {uri!r}: a broker URI has no path, query or fragment")
        if parts.username or parts.password:
            raise _invalid(f"{what}: put credentials in --mqtt-username / --mqtt-password-file, not in the URI")
        tls, default_port = _SCHEMES[scheme]
        return cls(uri, parts.hostname, port or default_port, tls)


@dataclass(frozen=True)
class MqttSettings:
    """Everything needed to reach a broker. ``password`` is never shown (``repr=False``)."""

    broker: BrokerAddress
    client_id: str
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    keep_alive: int = 60
    reconnect_max_delay: int = 30
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    spool_max_messages: int = DEFAULT_MAX_MESSAGES
    spool_max_bytes: int = DEFAULT_MAX_BYTES
    keep_qos0_when_offline: bool = True

    def describe(self) -> str:
        """For logs: the URI, TLS files and user, never the password."""
        extra = [f"user {self.username}"] if self.username else []
        if self.cert:
            extra.append("client certificate")
        return self.broker.uri + (f" ({', '.join(extra)})" if extra else "")


def tls_context(settings: MqttSettings) -> ssl.SSLContext:
    """The TLS context of an ``mqtts://`` broker: verifies it (``ca``, else the system's CAs, and its
    host name), and presents the client certificate when one is given."""
    try:
        context = ssl.create_default_context(cafile=str(settings.ca) if settings.ca else None)
        if settings.cert is not None and settings.key is not None:
            context.load_cert_chain(str(settings.cert), str(settings.key))
    except (ssl.SSLError, OSError) as err:
        raise _invalid(f"the MQTT TLS files cannot be used (ca {settings.ca}, cert {settings.cert}, "
                       f"key {settings.key}): {err}") from err
    return context


def _path(value: object, key: str) -> Path:
    if not isinstance(value, str | os.PathLike) or not str(value):
        raise _invalid(f"mqtt.{key} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    if not path.is_file():
        raise _invalid(f"mqtt.{key}: {path} is not a readable file")
    return path


def _int(value: object, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _invalid(f"mqtt.{key} must be an integer from {low} to {high}, got {value!r}")
    return value


def read_agent_config(root: Path) -> dict[str, Any]:
    """``ROOT/agent.yaml`` as a mapping (``{}`` when there is none)."""
    path = root / AGENT_CONFIG_FILE
    if not path.exists():
        return {}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise _invalid(f"{path} cannot be read as YAML: {err}") from err
    if not isinstance(doc, dict):
        raise _invalid(f"{path} must hold a mapping of settings, got {type(doc).__name__}")
    return doc


def load_mqtt_settings(root: Path, client_id: str, overrides: Mapping[str, Any] | None = None
                       ) -> MqttSettings | None:
    """The broker settings from ``ROOT/agent.yaml``'s ``mqtt:`` with ``overrides`` (the command line,
    same keys) on top; ``None`` when no broker is named anywhere (IoT Core operations then answer
    ``IOT_CORE_NOT_CONFIGURED``)."""
    section = read_agent_config(root).get("mqtt") or {}
    if not isinstance(section, dict):
        raise _invalid(f"{root / AGENT_CONFIG_FILE}: mqtt must be a mapping, got {section!r}")
    doc = {**section, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise _invalid(f"unknown mqtt setting(s) {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    if "broker" not in doc:
        if len(doc):
            raise _invalid(f"mqtt settings ({', '.join(sorted(doc))}) are given but no broker: "
                           "add mqtt.broker to agent.yaml or pass --mqtt-broker")
        return None
    broker = BrokerAddress.parse(doc["broker"])
    spooler = doc.get("spooler") or {}
    if not isinstance(spooler, dict) or set(spooler) - _SPOOLER_KEYS:
        raise _invalid(f"mqtt.spooler must be a mapping of {', '.join(sorted(_SPOOLER_KEYS))}, got {spooler!r}")
    keep_qos0 = spooler.get("keepQos0WhenOffline", True)
    if not isinstance(keep_qos0, bool):
        raise _invalid(f"mqtt.spooler.keepQos0WhenOffline must be true or false, got {keep_qos0!r}")
    settings = MqttSettings(
        broker=broker, client_id=str(doc.get("clientId") or client_id),
        keep_alive=_int(doc.get("keepAliveSeconds", 60), "keepAliveSeconds", 5, 65535),
        reconnect_max_delay=_int(doc.get("reconnectMaxDelaySeconds", 30), "reconnectMaxDelaySeconds", 1, 3600),
        max_message_size=_int(doc.get("maxMessageSizeInBytes", DEFAULT_MAX_MESSAGE_SIZE), "maxMessageSizeInBytes",
                              1, 256 * 1024 * 1024),
        spool_max_messages=_int(spooler.get("maxMessages", DEFAULT_MAX_MESSAGES), "spooler.maxMessages",
                                1, 10_000_000),
        spool_max_bytes=_int(spooler.get("maxSizeInBytes", DEFAULT_MAX_BYTES), "spooler.maxSizeInBytes",
                             1, 1 << 40),
        keep_qos0_when_offline=keep_qos0,
    )
    settings = replace(settings, ca=_path(doc["ca"], "ca") if doc.get("ca") is not None else None,
                       cert=_path(doc["cert"], "cert") if doc.get("cert") is not None else None,
                       key=_path(doc["key"], "key") if doc.get("key") is not None else None)
    if (settings.cert is None) != (settings.key is None):
        raise _invalid("mqtt.cert and mqtt.key go together (a client certificate needs its key)")
    if (settings.ca or settings.cert) and not broker.tls:
        raise _invalid(f"TLS files are given but the broker URI {broker.uri} is not mqtts://")
    username = doc.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        raise _invalid("mqtt.username must be a non-empty string")
    password = os.environ.get(PASSWORD_ENV) or None
    if doc.get("passwordFile") is not None:
        pw_path = _path(doc["passwordFile"], "passwordFile")
        try:
            password = pw_path.read_text().splitlines()[0] if pw_path.stat().st_size else ""
        except OSError as err:
            raise _invalid(f"mqtt.passwordFile {pw_path} cannot be read: {err.strerror}") from err
    if password is not None and username is None:
        raise _invalid("an MQTT password is given (passwordFile or $ROOST_MQTT_PASSWORD) without mqtt.username")
    settings = replace(settings, username=username, password=password)
    if broker.tls:
        tls_context(settings)  # a CA, certificate or key that does not load fails here, naming the files
    return settings




#: The command-line options (``roost agent start`` and ``python -m roost.agent``) → settings keys.
CLI_OPTIONS: Final = {"--mqtt-broker": "broker", "--mqtt-ca": "ca", "--mqtt-cert": "cert", "--mqtt-key": "key",
                      "--mqtt-username": "username", "--mqtt-password-file": "passwordFile"}


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--mqtt-*`` options of ``python -m roost.agent``."""
    parser.add_argument("--mqtt-broker", default=None,
                        help="MQTT broker behind the IoT Core IPC operations: mqtt://HOST:PORT or mqtts://HOST:PORT "
                             "(also mqtt.broker in ROOT/agent.yaml)")
    parser.add_argument("--mqtt-ca", default=None, help="CA bundle that verifies an mqtts:// broker")
    parser.add_argument("--mqtt-cert", default=None, help="client certificate for mutual TLS (with --mqtt-key)")
    parser.add_argument("--mqtt-key", default=None, help="private key of --mqtt-cert")
    parser.add_argument("--mqtt-username", default=None, help="MQTT user name")
    parser.add_argument("--mqtt-password-file", default=None,
                        help=f"file whose first line is the MQTT password (or ${PASSWORD_ENV}); never logged")


def mqtt_options(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line gives (``None`` values left out)."""
    return {key: getattr(args, opt[2:].replace("-", "_")) for opt, key in CLI_OPTIONS.items()
            if getattr(args, opt[2:].replace("-", "_")) is not None}


__all__ = ["AGENT_CONFIG_FILE", "CLI_OPTIONS", "PASSWORD_ENV", "BrokerAddress", "MqttSettings", "add_mqtt_arguments",
           "load_mqtt_settings", "mqtt_options", "read_agent_config", "tls_context"]
