"""TLS (and mutual TLS) for the gRPC and HTTP ports, reloaded when the files change.

gRPC asks for the certificate configuration at each new handshake; we answer with a new one only
when a file's identity or modification time changed, so a rotated certificate (a Kubernetes
secret update swaps the files at once) is served without a restart. Live connections keep theirs.
The HTTP port's `ssl.SSLContext` does the same from its SNI callback, which runs at each
handshake: a changed file gives the handshake a new context.
"""

from __future__ import annotations

import logging
import os
import ssl
from pathlib import Path

import grpc

log = logging.getLogger(__name__)

Stamp = tuple[tuple[int, int, int], ...]


class CertificateFiles:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        self.paths = [cert, key] if client_ca is None else [cert, key, client_ca]
        self.require_client_auth = client_ca is not None

    def _stat(self) -> Stamp:
        stats = [os.stat(path) for path in self.paths]
        return tuple((s.st_ino, s.st_mtime_ns, s.st_size) for s in stats)

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        cert, key, *ca = (path.read_bytes() for path in self.paths)
        return grpc.ssl_server_certificate_configuration(
            [(key, cert)], root_certificates=ca[0] if ca else None
        )

    def credentials(self) -> grpc.ServerCredentials:
        """Credentials for one gRPC server (each needs its own: gRPC takes the first
        configuration over), which reload the files when they change."""
        stamp = self._stat()
        configuration = self._configuration()

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            """The new configuration when a file changed, else None (keep the current one)."""
            nonlocal stamp
            try:
                now = self._stat()
                if now == stamp:
                    return None
                changed = self._configuration()
            except OSError as exc:  # mid-rotation: keep serving the certificate we have
                log.warning("TLS files not reloaded: %s", exc)
                return None
            stamp = now
            log.info("TLS certificate files changed: reloaded")
            return changed

        return grpc.dynamic_ssl_server_credentials(
            configuration,
            # gRPC documents None as "unchanged"; the stubs say a configuration is required.
            fetch,  # type: ignore[arg-type]
            require_client_authentication=self.require_client_auth,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.paths[0], self.paths[1])
        if self.require_client_auth:
            context.load_verify_locations(self.paths[2])
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def ssl_context(self) -> ssl.SSLContext:
        """The HTTP port's context; each handshake takes a new one once a file has changed."""
        current = self._ssl_context()
        stamp = self._stat()

        def on_hello(connection: ssl.SSLObject, name: str | None, base: ssl.SSLContext) -> None:
            nonlocal current, stamp
            try:
                now = self._stat()
                if now != stamp:
                    current = self._ssl_context()
                    stamp = now
                    log.info("TLS certificate files changed: reloaded (HTTP)")
            except (OSError, ssl.SSLError) as exc:  # mid-rotation: keep the one we have
                log.warning("TLS files not reloaded (HTTP): %s", exc)
            if current is not base:
                connection.context = current

        current.sni_callback = on_hello  # set on the first context: the one the port holds
        return current
