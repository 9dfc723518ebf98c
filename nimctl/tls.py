"""The server's TLS context, reloaded in place when its key, certificate or CA files change.

cert-manager (and any Secret volume) replaces the files while the server runs; a restart would
cost the model load. The one `ssl.SSLContext` uvicorn serves with is kept, and its certificate
chain and CA store are loaded again: OpenSSL uses them for new handshakes, while connections
already open keep what they were made with.

A changed set is first loaded into a scratch context, so a key that does not match its
certificate, or a half-written file, never reaches the live one: the old pair stays, with a
warning, and the next change is tried again. Only then is the live context loaded, on the event
loop's thread, where its handshakes happen. OpenSSL's CA store only adds: a CA taken out of the
file stays trusted until a restart.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nimctl.errors import ConfigError
from nimctl.settings import NimSettings

logger = logging.getLogger("nimctl.tls")

_Signature = tuple[tuple[int, int, int], ...]


@dataclass(frozen=True)
class TlsFiles:
    key: Path
    cert: Path
    ca: Path | None  # with it, client certificates are required (MTLS)

    def signature(self) -> _Signature:
        """(mtime, size, inode) of each file, following symlinks (a Secret's `..data`)."""
        out = []
        for path in (self.key, self.cert, self.ca):
            if path is None:
                continue
            try:
                st = os.stat(path)
            except OSError:
                out.append((-1, -1, -1))
            else:
                out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        return tuple(out)

    def load_into(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.cert, self.key)
        if self.ca is not None:
            context.load_verify_locations(self.ca)

    def new_context(self) -> ssl.SSLContext:
        """As uvicorn builds its own: TLS server defaults, client certificates if a CA is given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        if self.ca is not None:
            context.verify_mode = ssl.CERT_REQUIRED
        self.load_into(context)
        return context


class ReloadingTls:
    """The live context, and the watch that reloads it."""

    def __init__(self, files: TlsFiles, interval_s: float) -> None:
        self.files = files
        self.interval_s = interval_s
        self._seen = files.signature()
        try:
            self.context = files.new_context()
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"TLS: cannot load {files.cert} and {files.key}: {exc}") from None
        self.reloads = 0

    @classmethod
    def from_settings(cls, settings: NimSettings) -> ReloadingTls | None:
        """None with NIM_SSL_MODE=DISABLED (settings guarantee the files for TLS and MTLS)."""
        if settings.ssl_mode == "DISABLED":
            return None
        assert settings.ssl_key_path is not None and settings.ssl_cert_path is not None
        ca = settings.ssl_ca_certs_path if settings.ssl_mode == "MTLS" else None
        files = TlsFiles(
            settings.ssl_key_path.expanduser(),
            settings.ssl_cert_path.expanduser(),
            ca.expanduser() if ca is not None else None,
        )
        return cls(files, settings.ssl_reload_interval)

    def context_factory(
        self, _config: object, _default: Callable[[], ssl.SSLContext]
    ) -> ssl.SSLContext:
        """uvicorn.Config's `ssl_context_factory`: serve with this context, not one of its own."""
        return self.context

    async def check(self) -> bool:
        """Reload if the files changed and load; True when the live context was reloaded."""
        signature = self.files.signature()
        if signature == self._seen:
            return False
        self._seen = signature  # a broken set is tried again at its next change, not each time
        try:
            await asyncio.to_thread(self.files.new_context)  # file reads off the event loop
        except (OSError, ssl.SSLError) as exc:
            logger.warning(
                "TLS files changed but cannot be used (%s); keeping the certificate loaded before",
                exc,
            )
            return False
        try:
            self.files.load_into(self.context)
        except (OSError, ssl.SSLError) as exc:  # changed again since: look again next time
            self._seen = ()
            logger.warning("TLS files changed while being loaded (%s); trying again", exc)
            return False
        self.reloads += 1
        logger.info("TLS certificate reloaded from %s for new connections", self.files.cert)
        return True

    async def watch(self) -> None:
        """Check every interval until cancelled."""
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()
