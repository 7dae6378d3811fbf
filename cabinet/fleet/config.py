"""The `fleet:` section of cabinet.yaml: the broker, the cabinet's credentials, the back
office's public key. Without it the cabinet runs alone (no agent is started).

    fleet:
      broker: mqtts://broker.example.com:8883     # mqtt:// plain TCP (tests, a lab)
      region: tokyo                               # also take region/tokyo/down/<kind>
      public_key: /etc/cabinet/fleet-signing.pub  # the back office's Ed25519 key (PEM)
      username: cab-0042
      password_file: /etc/cabinet/mqtt-password
      tls_ca_file: /etc/cabinet/fleet-ca.pem       # none: the system's CA store
      tls_cert_file: /etc/cabinet/cab-0042.crt     # client certificate (optional)
      tls_key_file: /etc/cabinet/cab-0042.key

Only pydantic here, so `cabinet config validate` stays fast; the files are read at start.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


class FleetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    broker: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    public_key: str = Field(description="The back office's Ed25519 public key (PEM) that "
                            "signs down messages")
    region: str | None = Field(default=None, description="Region broadcasts to follow")
    username: str | None = None
    password_file: str | None = Field(default=None, description="A file holding the password")
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=60, le=2**32 - 1,
                                  description="How long the broker keeps orders for an "
                                  "absent cabinet")
    collect_every_s: float = Field(default=1.0, gt=0, le=3600)
    health_every_s: float = Field(default=60.0, gt=0, le=86400)
    reconnect_first_s: float = Field(default=1.0, gt=0, le=600)
    reconnect_max_s: float = Field(default=60.0, gt=0, le=3600)
    max_inflight: int = Field(default=20, ge=1, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _floats(cls, data: Any) -> Any:
        names = ("collect_every_s", "health_every_s", "reconnect_first_s", "reconnect_max_s")
        if isinstance(data, dict):
            return {k: (float(v) if k in names and isinstance(v, int)
                        and not isinstance(v, bool) else v) for k, v in data.items()}
        return data

    @field_validator("broker")
    @classmethod
    def _broker(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("expected mqtt://host[:port] or mqtts://host[:port]")
        try:
            parts.port
        except ValueError:
            raise ValueError("the port is not a number 1-65535") from None
        if parts.username or parts.password or parts.path not in ("", "/"):
            raise ValueError("only scheme, host and port here; credentials go in username "
                             "and password_file")
        return v

    @field_validator("region")
    @classmethod
    def _region(cls, v: str | None) -> str | None:
        if v is not None and not _LEVEL.match(v):
            raise ValueError("1-64 letters, digits or _.:- (one MQTT topic level)")
        return v

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.broker).port or (8883 if self.tls else 1883)


def check_fleet(cfg: Any) -> list[tuple[tuple, str]]:
    """Cross-field checks of the fleet section, located at the key to fix."""
    f = getattr(cfg, "fleet", None)
    if f is None:
        return []
    problems: list[tuple[tuple, str]] = []
    if not f.tls:
        for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            if getattr(f, key) is not None:
                problems.append((("fleet", key), "TLS files need an mqtts:// broker"))
    if (f.tls_cert_file is None) != (f.tls_key_file is None):
        key = "tls_key_file" if f.tls_key_file is None else "tls_cert_file"
        problems.append((("fleet", key), "a client certificate needs both tls_cert_file and "
                         "tls_key_file"))
    if f.password_file is not None and f.username is None:
        problems.append((("fleet", "password_file"), "a password needs a username"))
    if f.reconnect_first_s > f.reconnect_max_s:
        problems.append((("fleet", "reconnect_first_s"),
                         f"must not exceed reconnect_max_s ({f.reconnect_max_s:g})"))
    return problems
