"""Helpers of the web tests: a real headless Chromium (Debian's `chromium`, by Playwright).

`make browser` installs the browser (as root); without it these tests skip with one
line, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

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
