"""The Sectigo IoT Manager REST paths, written once for the client and the local service.

Each :class:`Route` names one endpoint: the client builds its URL with
:meth:`Route.path`, the local service (:mod:`.emulator`) matches requests with
:attr:`Route.pattern` and dispatches to its handler ``_h_<name>`` (``/`` → ``_``).
``{}`` in a template is one path segment (an authority, profile or batch id).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = [
    "AUTHORITIES",
    "AUTH_PWD",
    "AUTH_REFRESH",
    "BALANCE",
    "BATCH",
    "BATCH_CREATE",
    "BATCH_DOWNLOAD",
    "BATCH_INFO",
    "BATCH_STATUS",
    "BATCH_UPLOAD",
    "CERTIFICATES_FIND",
    "CERTIFICATES_REVOKE",
    "DEVICES",
    "LOCAL_CRL",
    "LOCAL_STATUS",
    "LOCAL_TRUST",
    "ORGANIZATION",
    "PROFILE",
    "PROFILES",
    "PROFILE_PARAMS",
    "ROUTES",
    "Route",
]


@dataclass(frozen=True)
class Route:
    """One endpoint: ``name`` (handler and counter key), HTTP ``method``, path
    ``template`` and whether it needs a bearer token."""

    name: str
    method: str
    template: str
    auth: bool = True
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = "([^/]+)".join(re.escape(part) for part in self.template.split("{}"))
        object.__setattr__(self, "pattern", re.compile(regex))

    def path(self, *segments: object) -> str:
        """The template with ``segments`` filled in: ``BATCH.path(7)`` → ``/api/v1/batches/7``."""
        return self.template.format(*segments)


AUTH_PWD = Route("auth/pwd", "POST", "/auth/pwd", auth=False)
AUTH_REFRESH = Route("auth/refresh", "POST", "/auth/refresh", auth=False)
AUTHORITIES = Route("authorities", "GET", "/api/v1/authorities/allowed")
BALANCE = Route("balance", "GET", "/api/v1/authorities/{}/balanceavailable")
DEVICES = Route("devices", "GET", "/api/v1/devices")
PROFILES = Route("profiles", "GET", "/api/v1/profiles")
PROFILE = Route("profile", "GET", "/api/v1/profiles/{}")
PROFILE_PARAMS = Route("profile/params", "GET", "/api/v1/profiles/{}/parameters")
ORGANIZATION = Route("organization", "GET", "/api/v1/organizations/user")
BATCH_CREATE = Route("batches/create", "PUT", "/api/v1/batches/createSingleCertBatch")
BATCH_UPLOAD = Route("batches/upload", "POST", "/api/v1/batches/upload")
BATCH = Route("batch", "GET", "/api/v1/batches/{}")
BATCH_STATUS = Route("batch/status", "GET", "/api/v1/batches/{}/status")
BATCH_INFO = Route("batch/info", "GET", "/api/v1/batches/{}/processing_info")
BATCH_DOWNLOAD = Route("batch/download", "GET", "/api/v1/batches/{}/download")
CERTIFICATES_FIND = Route("certificates/find", "POST", "/api/v1/certificates/find")
CERTIFICATES_REVOKE = Route("certificates/revoke", "POST", "/api/v1/certificates/{}/revoke")

# Served only by the local service: health, and the CA's CRL and trust bundle.
LOCAL_STATUS = Route("status", "GET", "/status", auth=False)
LOCAL_CRL = Route("crl", "GET", "/ca/crl.pem", auth=False)
LOCAL_TRUST = Route("trust", "GET", "/ca/trust.pem", auth=False)

#: Every route the local service answers, in matching order.
ROUTES: tuple[Route, ...] = (
    LOCAL_STATUS, LOCAL_CRL, LOCAL_TRUST,
    AUTH_PWD, AUTH_REFRESH,
    AUTHORITIES, BALANCE, DEVICES, PROFILES, PROFILE, PROFILE_PARAMS, ORGANIZATION,
    BATCH_CREATE, BATCH_UPLOAD, BATCH, BATCH_STATUS, BATCH_INFO, BATCH_DOWNLOAD,
    CERTIFICATES_FIND, CERTIFICATES_REVOKE,
)
