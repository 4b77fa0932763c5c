"""TLS client settings for amqps:// connections: which CA to trust and, for mutual TLS, the client's own
certificate and key. Files only; the SSL context is built from them when connecting."""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_CA, ENV_CERT, ENV_KEY = "FL_TLS_CA", "FL_TLS_CERT", "FL_TLS_KEY"


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: `ca` to verify the broker (None: the system's CAs); `cert` + `key` to present a client
    certificate (both or neither)."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs both cert and key")

    @classmethod
    def from_values(cls, ca: str | None, cert: str | None, key: str | None) -> TlsFiles | None:
        """TlsFiles from option/env values, or None when none is set."""
        if not (ca or cert or key):
            return None
        return cls(Path(ca) if ca else None, Path(cert) if cert else None, Path(key) if key else None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> TlsFiles | None:
        """TlsFiles from FL_TLS_CA / FL_TLS_CERT / FL_TLS_KEY, or None when none is set."""
        return cls.from_values(env.get(ENV_CA), env.get(ENV_CERT), env.get(ENV_KEY))

    def context(self) -> ssl.SSLContext:
        """A client context: TLS 1.2+, the broker's certificate and host name verified."""
        context = ssl.create_default_context(cafile=str(self.ca) if self.ca else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None and self.key is not None:
            context.load_cert_chain(str(self.cert), str(self.key))
        return context


def add_tls_arguments(parser: object) -> None:
    """--tls-ca/--tls-cert/--tls-key options (defaults from FL_TLS_*) for a program's argparse parser."""
    add = parser.add_argument  # type: ignore[attr-defined]
    add("--tls-ca", default=os.environ.get(ENV_CA), help="CA file to verify the broker (amqps://)")
    add("--tls-cert", default=os.environ.get(ENV_CERT), help="client certificate file (mutual TLS)")
    add("--tls-key", default=os.environ.get(ENV_KEY), help="client private key file (mutual TLS)")
