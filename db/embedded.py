"""Starts the embedded PostgreSQL (the ``pgserver`` package) in a data directory."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any


class EmbeddedPostgres:
    """A pgserver instance kept in ``<data_dir>/pgdata``; data survives restarts."""

    def __init__(self, data_dir: Path) -> None:
        self.pgdata = (data_dir / "pgdata").resolve()
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return its DSN."""
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            # pgserver asks platformdirs for a runtime dir; root has no XDG_RUNTIME_DIR.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
            import pgserver

            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
        return str(self._server.get_uri())

    def stop(self) -> None:
        """Release this process's handle; the server stops when no process uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
