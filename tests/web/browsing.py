"""Helpers of the web tests: a real headless Chromium (Debian's `chromium`, by Playwright).

`make browser` installs the browser (as root); without it these tests skip with one
line, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

# At module level: FastAPI reads the relay's annotations (`Request`) from here.
from fastapi import FastAPI, Request
from fastapi.responses import Response

CHROMIUM = os.environ.get("DATAGORA_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(
    os.environ.get("DATAGORA_WEB_ARTIFACTS", Path(__file__).resolve().parent / "artifacts")
)

# A wallet for tests: an EIP-1193 provider that forwards every call to anvil, whose
# unlocked development accounts sign (eth_sendTransaction, eth_signTypedData_v4).
SHIM = """
(() => {
  const RPC = %(rpc)r, ACCOUNT = %(account)r;
  let id = 0;
  window.ethereum = {
    isDatagoraTestWallet: true,
    async request({ method, params }) {
      if (method === "eth_requestAccounts" || method === "eth_accounts") return [ACCOUNT];
      if (method === "wallet_switchEthereumChain") return null;
      const r = await fetch(RPC, { method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ jsonrpc: "2.0", id: ++id, method, params: params || [] }) });
      const answer = await r.json();
      if (answer.error) {
        const err = new Error(answer.error.message);
        err.code = answer.error.code; err.data = answer.error.data;
        throw err;
      }
      return answer.result;
    },
    on() {}, removeListener() {},
  };
})();
"""


def browser_missing() -> str | None:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        return f"no chromium at {CHROMIUM}: run `make browser` (as root: apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[dev]'"
    return None


def wallet_page(browser: Any, rpc: str, account: str) -> Any:
    """A page whose window.ethereum is a development account on the chain at `rpc`."""
    context = browser.new_context()
    context.add_init_script(SHIM % {"rpc": rpc, "account": account})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.errors = errors
    return page


class LyingWebNode:
    """A web node that lies about one dataset: it passes everything on to a real web
    node, but its page of `dataset` names a forged manifest (the real one with another
    plaintext size, so the same shares and Merkle root), which its storage relay serves.
    A page that trusted its web node for the commitment would go on with it."""

    def __init__(self, upstream: str, dataset: int) -> None:
        import hashlib
        import json

        import httpx

        from datagora.node.inprocess import ThreadServer

        self.upstream = upstream.rstrip("/")
        self.client = httpx.Client(timeout=60)
        page = self.client.get(f"{self.upstream}/datasets/{dataset}").text
        self.real = page.split('data-manifest="')[1].split('"')[0]
        nodes = self.client.get(f"{self.upstream}/api/config").json()["storage"]
        answers = (self.client.get(f"{node}/shares/{self.real}") for node in nodes)
        manifest = json.loads(next(r.content for r in answers if r.status_code == 200))
        manifest["plaintext_size"] += 1
        self.forged = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
        self.forged_name = hashlib.sha256(self.forged).hexdigest()
        app = FastAPI()

        @app.api_route("/{path:path}", methods=["GET", "POST"])
        async def relay(path: str, request: Request) -> Response:
            if path.endswith(f"/shares/{self.forged_name}"):
                return Response(self.forged, media_type="application/octet-stream")
            headers = {
                k: v
                for k, v in request.headers.items()
                if k in ("content-type", "x-datagora-request")
            }
            r = self.client.request(
                request.method,
                f"{self.upstream}/{path}",
                params=dict(request.query_params),
                content=await request.body() or None,
                headers=headers,
            )
            body = r.content
            if path == f"datasets/{dataset}":
                body = body.replace(self.real.encode(), self.forged_name.encode())
            return Response(
                body, r.status_code, media_type=r.headers.get("content-type", "text/plain")
            )

        self.server = ThreadServer(lambda: app, "lying-web").start()

    @property
    def url(self) -> str:
        return self.server.url

    def close(self) -> None:
        self.server.stop()
        self.client.close()
