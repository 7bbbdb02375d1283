// The page's wallet actions, through the visitor's EIP-1193 wallet (window.ethereum).
// The page holds no key: every transaction is sent and every request signed by the wallet.
// Reading works without any of this (the pages are server-rendered).

const CONSUMER_PURPOSE = "datagora consumer key v1: sign only on a datagora page or tool";
const ZERO32 = "0x" + "00".repeat(32);

const ABI = {
  exchange: [
    "function buy_and_order(uint256 dataset, uint256 service_id, bytes consumer_key, uint256 max_price, uint256 min_expires_at, uint256 deadline, uint8 v, bytes32 r, bytes32 s) returns (uint256)",
  ],
  dispenser: [
    "function dispense_and_order(uint256 dataset, uint256 service_id, bytes consumer_key, uint256 min_expires_at) returns (uint256)",
  ],
  token: [
    "function nonces(address owner) view returns (uint256)",
    "function eip712Domain() view returns (bytes1, string, string, uint256, address, bytes32, uint256[])",
  ],
  access: [
    "function request(uint256 dataset, string purpose, bytes consumer_key) returns (uint256)",
    "function grant(uint256 request_id, uint256 expires_at)",
    "function deny(uint256 request_id, string reason)",
    "function revoke(uint256 request_id)",
  ],
};

const state = { account: null, signer: null, provider: null, config: null, umbral: null, consumer: null };

function say(text, isError = false) {
  const box = document.getElementById("notice");
  box.hidden = false;
  box.textContent = text;
  box.classList.toggle("error", isError);
}

function reason(err) {
  // A revert's reason or the wallet's message, on one line.
  const r = err?.reason || err?.info?.error?.message || err?.shortMessage || err?.message || String(err);
  return String(r).split("\n")[0];
}

async function config() {
  if (!state.config) {
    const r = await fetch("/api/config");
    if (!r.ok) throw new Error((await r.json()).detail || "no chain configured on this node");
    state.config = await r.json();
  }
  return state.config;
}

function contract(name, abiName) {
  const address = state.config.contracts[name];
  return new window.ethers.Contract(address, ABI[abiName], state.signer);
}

async function connect(ask) {
  const eth = window.ethereum;
  if (!eth || !window.ethers) return;
  const accounts = await eth.request({ method: ask ? "eth_requestAccounts" : "eth_accounts" });
  if (!accounts.length) return;
  const cfg = await config();
  const chainId = parseInt(await eth.request({ method: "eth_chainId" }), 16);
  if (chainId !== cfg.chainId) {
    try {
      await eth.request({ method: "wallet_switchEthereumChain", params: [{ chainId: "0x" + cfg.chainId.toString(16) }] });
    } catch (err) {
      say(`Your wallet is on chain ${chainId}; this marketplace is on chain ${cfg.chainId}. Switch networks in your wallet.`, true);
      return;
    }
  }
  state.provider = new window.ethers.BrowserProvider(eth);
  state.signer = await state.provider.getSigner(accounts[0]);
  state.account = window.ethers.getAddress(accounts[0]);
  document.getElementById("wallet-status").textContent = `Connected: ${state.account}`;
  document.getElementById("connect").hidden = true;
  const link = document.getElementById("account-link");
  link.href = `/account?address=${state.account}`;
  const field = document.getElementById("address");
  if (field && !field.value) field.value = state.account;
  document.querySelectorAll(".needs-wallet").forEach((el) => { el.hidden = false; });
  document.body.dataset.connected = "1";
}

// ---- the consumer key: derived from a wallet signature (docs/sharing.md) ----

async function loadUmbral() {
  if (!state.umbral) {
    const bg = await import("/vendor/umbral/umbral_pre_wasm_bg.js");
    const response = await fetch("/vendor/umbral/umbral_pre_wasm_bg.wasm");
    const { instance } = await WebAssembly.instantiate(await response.arrayBuffer(), { "./umbral_pre_wasm_bg.js": bg });
    bg.__wbg_set_wasm(instance.exports);
    state.umbral = bg;
  }
  return state.umbral;
}

export async function consumerKey() {
  if (state.consumer) return state.consumer;
  const cfg = await config();
  const domain = { name: "datagora", version: "1", chainId: cfg.chainId };
  const types = { ConsumerKey: [{ name: "purpose", type: "string" }, { name: "account", type: "address" }] };
  const message = { purpose: CONSUMER_PURPOSE, account: state.account };
  const signature = window.ethers.Signature.from(await state.signer.signTypedData(domain, types, message));
  const rs = window.ethers.getBytes(window.ethers.concat([signature.r, signature.s]));
  const ikm = await crypto.subtle.importKey("raw", rs, "HKDF", false, ["deriveBits"]);
  const seed = new Uint8Array(await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new TextEncoder().encode("datagora"), info: new TextEncoder().encode("umbral consumer key v1") },
    ikm, 256,
  ));
  const umbral = await loadUmbral();
  const secret = umbral.SecretKeyFactory.fromSecureRandomness(seed).makeKey(new TextEncoder().encode("datagora-consumer-v1"));
  seed.fill(0);
  state.consumer = { secret, publicKey: secret.publicKey().toCompressedBytes() };
  return state.consumer;
}

// ---- buyer: buy-and-order with a permit, free orders, access requests ----

async function buy(button) {
  const dataset = BigInt(document.getElementById("dataset").dataset.dataset);
  const free = document.getElementById("dataset").dataset.pricing === "free";
  const service = BigInt(button.dataset.service);
  const minExpires = BigInt(button.dataset.minExpires);
  const key = (await consumerKey()).publicKey;
  let tx;
  if (free) {
    tx = await contract("Dispenser", "dispenser").dispense_and_order(dataset, service, key, minExpires);
  } else {
    const maxPrice = BigInt(button.dataset.maxPrice);
    const token = new window.ethers.Contract(state.config.contracts.MarketToken, ABI.token, state.signer);
    const [, name, version, chainId, verifyingContract] = await token.eip712Domain();
    const nonce = await token.nonces(state.account);
    const block = await state.provider.getBlock("latest");
    const deadline = BigInt(block.timestamp) + 3600n;
    const exchange = state.config.contracts.FixedRateExchange;
    const permit = window.ethers.Signature.from(await state.signer.signTypedData(
      { name, version, chainId, verifyingContract },
      { Permit: [
        { name: "owner", type: "address" }, { name: "spender", type: "address" },
        { name: "value", type: "uint256" }, { name: "nonce", type: "uint256" },
        { name: "deadline", type: "uint256" },
      ] },
      { owner: state.account, spender: exchange, value: maxPrice, nonce, deadline },
    ));
    tx = await contract("FixedRateExchange", "exchange").buy_and_order(
      dataset, service, key, maxPrice, minExpires, deadline, permit.v, permit.r, permit.s,
    );
  }
  say(`Order sent: ${tx.hash}; waiting for it to be mined…`);
  const receipt = await tx.wait();
  say(`Ordered: transaction ${receipt.hash} mined in block ${receipt.blockNumber}.`);
  document.body.dataset.ordered = receipt.hash;
}

async function requestAccess(form) {
  const dataset = BigInt(document.getElementById("dataset").dataset.dataset);
  const key = (await consumerKey()).publicKey;
  const tx = await contract("AccessRegistry", "access").request(dataset, form.purpose.value, key);
  const receipt = await tx.wait();
  say(`Access requested: transaction ${receipt.hash}. The owner will answer on chain.`);
}

// ---- owner: answer requests ----

async function ownerTx(row, send, done) {
  const tx = await send();
  say(`Transaction sent: ${tx.hash}; waiting…`);
  const receipt = await tx.wait();
  row.querySelector(".status").textContent = done;
  row.querySelectorAll(".needs-wallet").forEach((el) => { el.hidden = true; });
  say(`${done}: transaction ${receipt.hash} mined in block ${receipt.blockNumber}.`);
}

// ---- owner: compute jobs, through the EIP-712 OwnerJobRequest the CLI signs ----

function randomHex32() {
  const b = crypto.getRandomValues(new Uint8Array(32));
  return window.ethers.hexlify(b);
}

async function ownerRequest(action, job, reasonText = "") {
  const cfg = await config();
  const reasonHash = reasonText
    ? window.ethers.hexlify(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(reasonText))))
    : ZERO32;
  const message = {
    owner: state.account, job: String(job), action, reason: reasonHash,
    nonce: randomHex32(), expires: Math.floor(Date.now() / 1000) + 120,
  };
  const domain = { name: "datagora", version: "1", chainId: cfg.chainId };
  const types = { OwnerJobRequest: [
    { name: "owner", type: "address" }, { name: "job", type: "uint256" },
    { name: "action", type: "string" }, { name: "reason", type: "bytes32" },
    { name: "nonce", type: "bytes32" }, { name: "expires", type: "uint64" },
  ] };
  const signature = await state.signer.signTypedData(domain, types, message);
  const signed = {
    format: "datagora.signed-request.v1", type: "OwnerJobRequest", domain, message,
    signature: signature.toLowerCase(),
  };
  const raw = new TextEncoder().encode(JSON.stringify(signed));
  let text = "";
  raw.forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function computeCall(method, path, header, body) {
  const r = await fetch(`/api/compute${path}`, {
    method, headers: { "X-Datagora-Request": header, "Content-Type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(data.detail || data.error || `the compute node answered ${r.status}`);
  return data;
}

async function review(button) {
  const job = button.dataset.job;
  const data = await computeCall("GET", `/owner/jobs/${job}/review`, await ownerRequest("review", job));
  const pre = document.getElementById(`code-${job}`);
  pre.textContent = `# parameters: ${JSON.stringify(data.params)}\n${data.code}`;
  pre.hidden = false;
  pre.focus();
}

async function decideJob(row, job, approve, reasonText) {
  if (approve) {
    await computeCall("POST", `/owner/jobs/${job}/approve`, await ownerRequest("approve", job));
  } else {
    await computeCall("POST", `/owner/jobs/${job}/deny`, await ownerRequest("deny", job, reasonText), { reason: reasonText });
  }
  row.querySelector(".status").textContent = approve ? "approved" : "denied";
  row.querySelectorAll(".needs-wallet").forEach((el) => { el.hidden = true; });
  say(`Job ${job} ${approve ? "approved" : "denied"}; the compute node recorded it on chain.`);
}

// ---- wiring ----

function guard(fn) {
  return async (event) => {
    event.preventDefault();
    const target = event.currentTarget;
    target.setAttribute("aria-busy", "true");
    try {
      await fn(target);
    } catch (err) {
      say(reason(err), true);
    } finally {
      target.removeAttribute("aria-busy");
    }
  };
}

function wire() {
  const connectButton = document.getElementById("connect");
  if (!window.ethereum) {
    document.getElementById("wallet-status").textContent = "No browser wallet found: reading only.";
    return;
  }
  connectButton.hidden = false;
  connectButton.addEventListener("click", guard(() => connect(true)));
  document.querySelectorAll("button.buy").forEach((b) => b.addEventListener("click", guard(buy)));
  document.querySelectorAll("form.request-access").forEach((f) => f.addEventListener("submit", guard(requestAccess)));
  document.querySelectorAll("button.grant").forEach((b) => b.addEventListener("click", guard((t) => ownerTx(
    t.closest("tr"), () => contract("AccessRegistry", "access").grant(BigInt(t.dataset.request), BigInt(t.dataset.expires)), "granted"))));
  document.querySelectorAll("form.deny").forEach((f) => f.addEventListener("submit", guard((t) => ownerTx(
    t.closest("tr"), () => contract("AccessRegistry", "access").deny(BigInt(t.dataset.request), t.reason.value), "denied"))));
  document.querySelectorAll("button.revoke").forEach((b) => b.addEventListener("click", guard((t) => ownerTx(
    t.closest("tr"), () => contract("AccessRegistry", "access").revoke(BigInt(t.dataset.request)), "revoked"))));
  document.querySelectorAll("button.review").forEach((b) => b.addEventListener("click", guard(review)));
  document.querySelectorAll("button.approve").forEach((b) => b.addEventListener("click", guard((t) => decideJob(t.closest("tr"), t.dataset.job, true))));
  document.querySelectorAll("form.deny-job").forEach((f) => f.addEventListener("submit", guard((t) => decideJob(t.closest("tr"), t.dataset.job, false, t.reason.value))));
  window.ethereum.on?.("accountsChanged", () => window.location.reload());
  connect(false).catch((err) => say(reason(err), true));
}

window.datagora = { consumerKey, loadUmbral, state };
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
else wire();
