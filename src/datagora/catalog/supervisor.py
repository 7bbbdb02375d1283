"""Running an :class:`~datagora.catalog.indexer.Indexer` so that it cannot die quietly.

Two threads: one follows the chain (:meth:`Indexer.sync` every poll interval),
one fetches missing metadata documents and manifests (for the datasets' sizes) on
a back-off schedule (:meth:`Indexer.retry_pending`, :meth:`Indexer.retry_sizes`),
so a slow metadata server never holds up the events. Each loop survives any error:
it records it, backs off (doubling from the poll interval up to ``max_backoff``
seconds) and tries again. A chain that
is down, a database that is locked for a while, a web3 error, a bug hit by one
odd event: each shows in :meth:`Supervisor.health` instead of ending the loop.

:meth:`Supervisor.health` says how it is doing: ``ok``; ``degraded`` (the last
attempt of a loop failed, its error is given, but progress was made within
``stall_after`` seconds); ``stalled`` (no progress for longer); ``dead`` (a
thread is gone). The last two are unhealthy: the HTTP API answers 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from datagora.catalog.indexer import Indexer

__all__ = ["Supervisor"]

_log = logging.getLogger(__name__)


def _describe(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first[:300]}" if first else type(exc).__name__


@dataclass
class _Loop:
    name: str
    thread: threading.Thread | None = None
    last_success: float | None = None
    last_error: str | None = None
    last_error_at: float | None = None
    failures: int = 0  # consecutive

    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class Supervisor:
    """Keeps an indexer following the chain and its pending metadata fetched."""

    def __init__(
        self,
        indexer: Indexer,
        poll_interval: float = 0.1,
        *,
        retry_every: float = 1.0,
        max_backoff: float = 30.0,
        stall_after: float = 120.0,
    ) -> None:
        self.indexer = indexer
        self.poll_interval = poll_interval
        self.retry_every = retry_every
        self.max_backoff = max_backoff
        self.stall_after = stall_after
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._progress = time.monotonic()  # the last sync or page that succeeded
        self._index = _Loop("catalog-indexer")
        self._metadata = _Loop("catalog-metadata")
        indexer.on_progress = self._on_progress

    def _on_progress(self, _block: int) -> None:
        self._progress = time.monotonic()

    # -- the loops -----------------------------------------------------------------------
    def _run(self, loop: _Loop, step: Callable[[], object], interval: float) -> None:
        while not self._stop.is_set():
            try:
                step()
            except Exception as exc:  # any error: recorded and retried, never the end
                message = _describe(exc)
                repeated = message == loop.last_error
                # The error before the count: /health, read from another thread, shows
                # failures only with their error.
                loop.last_error, loop.last_error_at = message, time.monotonic()
                loop.failures += 1
                if not repeated:
                    _log.warning("%s failed (will retry): %s", loop.name, message, exc_info=True)
                # The exponent is capped: 2**1024 would not fit a float after hours of
                # failures, and raising here would end the loop this is here to keep.
                delay = min(interval * 2 ** min(loop.failures, 32), self.max_backoff)
                self._stop.wait(max(delay, interval))
                continue
            loop.failures = 0
            loop.last_success = time.monotonic()
            self._stop.wait(interval)

    def _sync(self) -> None:
        self.indexer.sync()
        self._progress = time.monotonic()

    def _fetch(self) -> None:
        self.indexer.retry_pending(due_only=True)
        self.indexer.retry_sizes(due_only=True)

    def start(self) -> None:
        """Start both threads (daemons; :meth:`stop` ends them)."""
        self._stop.clear()
        self._started = self._progress = time.monotonic()
        for loop, step, interval in (
            (self._index, self._sync, self.poll_interval),
            (self._metadata, self._fetch, self.retry_every),
        ):
            loop.thread = threading.Thread(
                target=self._run, args=(loop, step, interval), name=loop.name, daemon=True
            )
            loop.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask both threads to stop and wait for them (at most `timeout` seconds each)."""
        self._stop.set()
        for loop in (self._index, self._metadata):
            if loop.thread is not None:
                loop.thread.join(timeout=timeout)

    # -- health --------------------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, fields)``: liveness, lag and the last error of each loop."""
        now = time.monotonic()
        try:
            indexed: int | None = self.indexer.last_block()
            pending: int | None = self.indexer.pending_count()
            unreadable = None
        except SQLAlchemyError as exc:
            indexed = pending = None
            unreadable = f"database unreadable: {_describe(exc)}"
        head = self.indexer.chain_head
        lag = (
            None
            if head is None or indexed is None
            else max(0, head - self.indexer.confirmations - indexed)
        )
        since = now - self._progress
        if not (self._index.alive() and self._metadata.alive()):
            status = "dead"
        elif since > self.stall_after or unreadable is not None:
            status = "stalled"
        elif self._index.failures or self._metadata.failures:
            status = "degraded"
        else:
            status = "ok"
        failing = [loop.last_error for loop in (self._index, self._metadata) if loop.failures]
        error = unreadable or (failing[0] if failing else None)
        fields: dict[str, Any] = {
            "status": status,
            "indexed_block": indexed,
            "chain_head": head,
            "lag_blocks": lag,
            "seconds_since_progress": round(since, 3),
            "indexer": self._loop_fields(self._index, now),
            "metadata_worker": self._loop_fields(self._metadata, now),
            "pending_metadata": pending,
            "error": error,
        }
        return status in ("ok", "degraded"), fields

    @staticmethod
    def _loop_fields(loop: _Loop, now: float) -> dict[str, Any]:
        return {
            "alive": loop.alive(),
            "failures": loop.failures,
            "last_error": loop.last_error,
            "seconds_since_error": (
                None if loop.last_error_at is None else round(now - loop.last_error_at, 3)
            ),
            "seconds_since_success": (
                None if loop.last_success is None else round(now - loop.last_success, 3)
            ),
        }
