"""One TLS context per process for every httpx client datagora makes.

``httpx.Client()`` builds a fresh :class:`ssl.SSLContext` each time it is made, and
loading the CA bundle into it costs 15-250 ms of CPU (more on a loaded machine),
even when the client only ever speaks plain ``http://``. A consumer opening a data
key used to make several clients per download; handing them this context instead
makes each new client cost well under a millisecond. The context is built by
httpx's own rules (``SSL_CERT_FILE``/``SSL_CERT_DIR``, else certifi's bundle), so
what is trusted does not change; an ``SSLContext`` may be shared by any number of
connections and threads.
"""

from __future__ import annotations

import functools
import ssl

import httpx

__all__ = ["verify_context"]


@functools.cache
def verify_context() -> ssl.SSLContext:
    """The process's certificate-verifying context: pass it as httpx's ``verify=``."""
    return httpx.create_ssl_context()
