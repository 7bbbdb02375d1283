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
  dataNft: [
    "function get_dataset(uint256 dataset) view returns (tuple(address controller, address datatoken, uint32 version, uint8 state, bytes32 metadata_hash, bytes32 manifest_hash, bytes32 merkle_root, string metadata_uri))",
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

function computeDomain(cfg) {
  // Compute requests are valid on one deployment: its ComputeRegistry (docs/compute.md).
  return { name: "datagora", version: "1", chainId: cfg.chainId,
    verifyingContract: cfg.computeRequest.verifyingContract };
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
  const domain = computeDomain(cfg);
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
  document.getElementById("download")?.addEventListener("click", guard(download));
  document.querySelectorAll("form.compute-submit").forEach((f) => f.addEventListener("submit", guard(submitJob)));
  document.getElementById("job-refresh")?.addEventListener("click", guard(jobStatus));
  document.getElementById("job-result")?.addEventListener("click", guard(jobResult));
  document.querySelectorAll("button.review").forEach((b) => b.addEventListener("click", guard(review)));
  document.querySelectorAll("button.approve").forEach((b) => b.addEventListener("click", guard((t) => decideJob(t.closest("tr"), t.dataset.job, true))));
  document.querySelectorAll("form.deny-job").forEach((f) => f.addEventListener("submit", guard((t) => decideJob(t.closest("tr"), t.dataset.job, false, t.reason.value))));
  window.ethereum.on?.("accountsChanged", () => window.location.reload());
  connect(false).catch((err) => say(reason(err), true));
}

window.datagora = { consumerKey, loadUmbral, state };
if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", wire);
else wire();

// ---- download in the page: key from the proxies, shares verified, AES-GCM in WebCrypto ----
// Formats: docs/formats.md (manifest v2 and v3, datagora.share.v1 and v2, rfc6962-sha256, datagora.chunk.v1)
// and docs/sharing.md (datagora.reencrypt-request.v1). The data key and the plaintext
// exist only in this page; the web node relays ciphertext, capsule fragments and requests.

const enc = new TextEncoder();
const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
const unhex = (h) => window.ethers.getBytes("0x" + h);
const sha256 = async (b) => new Uint8Array(await crypto.subtle.digest("SHA-256", b));
const equal = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
const concat = (parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
};
const be = (value, size) => {
  const out = new Uint8Array(size);
  let v = BigInt(value);
  for (let i = size - 1; i >= 0; i--) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
};

class DownloadRefused extends Error {
  constructor(message, command = null) {
    super(message);
    this.command = command;  // the CLI command that can do what the page cannot
  }
}

async function merkleRoot(leaves) {
  // RFC 6962 tree hash over `leaves` (share names, raw 32 bytes each; or a share's blocks).
  if (leaves.length === 0) return sha256(new Uint8Array());
  let level = await Promise.all(leaves.map((d) => sha256(concat([new Uint8Array([0]), d]))));
  const mth = async (nodes) => {
    if (nodes.length === 1) return nodes[0];
    let m = 1;
    while (m * 2 < nodes.length) m *= 2;
    return sha256(concat([new Uint8Array([1]), await mth(nodes.slice(0, m)), await mth(nodes.slice(m))]));
  };
  return mth(level);
}

const BLOCK_SIZE = 1024; // datagora.share.v2: a share is named by the tree head over its 1 KiB blocks

async function contentAddress(bytes) {
  // A v2 share ("DGS2"): the RFC 6962 tree head over its blocks; anything else: SHA-256.
  if (bytes.length >= 4 && equal(bytes.subarray(0, 4), enc.encode("DGS2"))) {
    const blocks = [];
    for (let at = 0; at < Math.max(bytes.length, 1); at += BLOCK_SIZE) blocks.push(bytes.subarray(at, at + BLOCK_SIZE));
    return merkleRoot(blocks);
  }
  return sha256(bytes);
}

async function fetchBlob(name, nodes) {
  // The blob named `name` (its content address) from the first of `nodes` that serves it intact.
  for (const index of nodes) {
    const r = await fetch(`/api/relay/storage/${index}/shares/${name}`);
    if (!r.ok) continue;
    const bytes = new Uint8Array(await r.arrayBuffer());
    if (hex(await contentAddress(bytes)) === name) return bytes;
  }
  return null;
}

async function signedFragmentRequest(dataset, version, capsule) {
  // The fields and domain this network's proxies parse (docs/sharing.md), from /api/config.
  const cfg = await config();
  const spec = cfg.fragmentRequest;
  const values = {
    consumer: state.account, dataset: String(dataset), version: Number(version), service: 0,
    capsule: "0x" + hex(await sha256(capsule)), nonce: randomHex32(),
    expires: Math.floor(Date.now() / 1000) + 120,
  };
  const message = Object.fromEntries(spec.fields.map((f) => [f.name, values[f.name]]));
  const domain = { name: "datagora", version: "1", chainId: cfg.chainId };
  if (spec.verifyingContract) domain.verifyingContract = spec.verifyingContract;
  const signature = (await state.signer.signTypedData(domain, { FragmentRequest: spec.fields }, message)).toLowerCase();
  return { format: "datagora.signed-request.v1", type: "FragmentRequest", domain, message, signature };
}

async function dataKey(art, wrap, say) {
  const cfg = await config();
  const umbral = await loadUmbral();
  const me = await consumerKey();
  const capsuleBytes = unhex(wrap.capsule);
  const capsule = umbral.Capsule.fromBytes(capsuleBytes);
  const delegating = umbral.PublicKey.fromCompressedBytes(unhex(wrap.delegating_key));
  const verifying = umbral.PublicKey.fromCompressedBytes(unhex(art.verifyingKey));
  const receiving = me.secret.publicKey();
  const deadline = Date.now() + 60_000;
  let refusals = [];
  for (;;) {
    const body = { format: "datagora.reencrypt-request.v1", capsule: hex(capsuleBytes),
      request: await signedFragmentRequest(art.dataset, art.version, capsuleBytes) };
    const batches = new Map();
    refusals = [];
    await Promise.all(cfg.proxies.map(async (_, i) => {
      const r = await fetch(`/api/relay/proxy/${i}/reencrypt`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const answer = await r.json().catch(() => ({}));
      if (!r.ok) { refusals.push(answer); return; }
      for (const { batch, cfrag } of answer.cfrags || []) {
        try {
          const verified = umbral.CapsuleFrag.fromBytes(unhex(cfrag)).verify(capsule, verifying, delegating, receiving);
          if (!batches.has(batch)) batches.set(batch, new Map());
          batches.get(batch).set(cfrag, verified);  // the same fragment twice counts once
        } catch (err) {
          refusals.push({ error: "bad_fragment", detail: `proxy ${i} sent a fragment that does not verify` });
        }
      }
    }));
    const enough = [...batches.values()].find((b) => b.size >= cfg.threshold);
    if (enough) {
      const chosen = [...enough.values()].slice(0, cfg.threshold);
      return umbral.decryptReencrypted(me.secret, delegating, capsule, chosen, unhex(wrap.ciphertext));
    }
    const final = refusals.find((r) => r.error && !["no_kfrag", "request_pending"].includes(r.error));
    if (final || Date.now() > deadline) {
      const why = (final || refusals[0] || {}).detail || "too few proxies answered";
      throw new DownloadRefused(`The proxies refuse the key: ${why}`);
    }
    say("Waiting for the owner's agent to hand the proxies your key fragments…");
    await new Promise((done) => setTimeout(done, 1000));
  }
}

function expectedHeader(m, i, b, k, n, size) {
  const magic = m.format_version === 3 ? "DGS2" : "DGS1";
  return concat([enc.encode(magic), unhex(m.dataset_id), be(m.version, 4), be(i, 8), be(b, 2),
    be(k, 2), be(n, 2), be(size, 4)]);
}

async function chainCommitment(dataset) {
  // What the chain records for the dataset's current version, read through the visitor's
  // wallet (its own connection to the chain), not from this web node: the manifest hash
  // and Merkle root every byte below is checked against.
  if (!state.provider) throw new DownloadRefused("Connect your wallet: the page reads the dataset's commitment from the chain through it.");
  const cfg = await config();
  const nft = new window.ethers.Contract(cfg.contracts.DataNFT, ABI.dataNft, state.provider);
  let info;
  try {
    info = await nft.get_dataset(BigInt(dataset));
  } catch (err) {
    throw new DownloadRefused(`Your wallet's chain knows no dataset ${dataset}: ${reason(err)}`);
  }
  return {
    version: Number(info.version),
    manifest: info.manifest_hash.slice(2).toLowerCase(),
    root: info.merkle_root.slice(2).toLowerCase(),
  };
}

export async function downloadInPage(onStatus = () => {}) {
  const page = document.getElementById("dataset").dataset;
  const cfg = await config();
  const say = (t) => { onStatus(t); const el = document.getElementById("download-status"); if (el) el.textContent = t; };
  const allNodes = cfg.storage.map((_, i) => i);
  say("Reading the dataset's commitment from the chain through your wallet…");
  const chain = await chainCommitment(page.dataset);
  if (page.manifest && (page.manifest !== chain.manifest || page.root !== chain.root || Number(page.version) !== chain.version)) {
    // The web node rendered another version than the chain holds: it is stale or lying.
    throw new DownloadRefused(`This web node names manifest ${page.manifest.slice(0, 12)}… (version ${page.version}), but the chain records manifest ${chain.manifest.slice(0, 12)}… (version ${chain.version}) for dataset ${page.dataset}: refused. Reload the page, or use another web node.`);
  }
  const art = { dataset: page.dataset, verifyingKey: page.verifyingKey, ...chain };
  say("Fetching the manifest…");
  const manifestBytes = await fetchBlob(art.manifest, allNodes);
  if (!manifestBytes) throw new DownloadRefused("No storage node serves the manifest the chain records for this version.");
  const m = JSON.parse(new TextDecoder().decode(manifestBytes));
  if (m.format === "datagora.manifest" && m.format_version === 4) {
    // A paged manifest (docs/formats.md): datasets over ~5 GiB, more than a page should hold.
    throw new DownloadRefused(`This version is too large to download in the page (its manifest is paged); use the command line: datagora download ${art.dataset} -o dataset-${art.dataset}.bin`);
  }
  if (m.format !== "datagora.manifest" || ![2, 3].includes(m.format_version) || m.key_wrap.scheme !== "umbral-pre-v1") {
    throw new DownloadRefused("This version's manifest is not one the page can read (its key is not shared through proxies).");
  }
  const { k, n } = m.erasure;
  const leaves = m.chunks.flatMap((c) => c.shares.map(unhex));
  const root = hex(await merkleRoot(leaves));
  if (root !== m.merkle.root || root !== art.root) {
    throw new DownloadRefused("The share hashes do not make the Merkle root recorded on chain: refused.");
  }
  // Where each share is: the placement record with the highest sequence (a hint only).
  const where = new Map();
  for (const index of allNodes) {
    const r = await fetch(`/api/relay/storage/${index}/placements?manifest=${art.manifest}`);
    if (!r.ok) continue;
    const records = ((await r.json()).records || []).sort((a, b) => b.sequence - a.sequence);
    if (!records.length) continue;
    const raw = await fetchBlob(records[0].hash, allNodes);
    if (!raw) continue;
    const placement = JSON.parse(new TextDecoder().decode(raw));
    if (placement.manifest_hash !== art.manifest) continue;
    for (const [share, urls] of Object.entries(placement.placement)) {
      where.set(share, urls.map((u) => cfg.storage.indexOf(u)).filter((x) => x >= 0));
    }
    break;
  }
  say("Asking the proxies for your key…");
  const raw = await dataKey(art, m.key_wrap, say);
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  raw.fill(0);
  const parts = [];
  const started = performance.now();
  for (let i = 0; i < m.chunks.length; i++) {
    const chunk = m.chunks[i];
    const size = chunk.ciphertext_size;
    const blockSize = Math.max(1, Math.ceil(size / k));
    const blocks = await Promise.all([...Array(k).keys()].map(async (b) => {
      const name = chunk.shares[b];
      const order = [...(where.get(name) || []), ...allNodes.filter((x) => !(where.get(name) || []).includes(x))];
      const share = await fetchBlob(name, order);
      if (!share) {
        const command = `datagora download ${art.dataset} -o dataset-${art.dataset}.bin`;
        throw new DownloadRefused(`Share ${b} of chunk ${i} (a primary share) is on no node that answers: the chunk must be decoded from its parity shares, which the page does not do; use the command line: ${command}`, command);
      }
      const header = expectedHeader(m, i, b, k, n, size);
      if (share.length !== 58 + blockSize || !equal(share.subarray(0, 58), header)) {
        throw new DownloadRefused(`Share ${b} of chunk ${i} is not the one the manifest names.`);
      }
      return share.subarray(58);
    }));
    const padded = concat(blocks);
    if (padded.subarray(size).some((x) => x !== 0)) throw new DownloadRefused(`Chunk ${i} has non-zero padding.`);
    const final = i === m.chunks.length - 1 ? 1 : 0;
    const nonce = concat([new Uint8Array([0, 0, 0, final]), be(i, 8)]);
    const ad = concat([enc.encode("datagora.chunk.v1"), unhex(m.dataset_id), be(m.version, 4), be(i, 8), new Uint8Array([final])]);
    try {
      parts.push(new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: ad, tagLength: 128 }, key, padded.subarray(0, size))));
    } catch (err) {
      throw new DownloadRefused(`Chunk ${i} fails authentication: refused.`);
    }
    say(`Decrypted chunk ${i + 1} of ${m.chunks.length}…`);
  }
  const total = parts.reduce((s, p) => s + p.length, 0);
  if (total !== m.plaintext_size) throw new DownloadRefused("The decrypted size is not the manifest's: refused.");
  const seconds = (performance.now() - started) / 1000;
  return { parts, total, seconds };
}

async function download(button) {
  const art = document.getElementById("dataset").dataset;
  document.getElementById("download-cli").hidden = true;
  try {
    const { parts, total, seconds } = await downloadInPage();
    const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `dataset-${art.dataset}-v${art.version}.bin`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    document.getElementById("download-status").textContent =
      `Saved ${total} bytes, every share and chunk verified (${seconds.toFixed(2)} s).`;
  } catch (err) {
    document.getElementById("download-status").textContent = reason(err);
    const fallback = document.getElementById("download-cli");
    if (fallback && err instanceof DownloadRefused && err.command) {
      fallback.querySelector("code").textContent = err.command;
      fallback.hidden = false;
    }
    throw err;
  }
}

window.datagora.downloadInPage = downloadInPage;

// ---- compute: submit a job, follow it, fetch its result (sealed to the consumer key) ----

function canonical(value) {
  // As the node's canonical_params: sorted keys, no spaces (JSON of what it parses).
  if (Array.isArray(value)) return `[${value.map(canonical).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical(value[k])}`).join(",")}}`;
  }
  return JSON.stringify(value);
}

async function signedRequest(type, fields, message) {
  const cfg = await config();
  const domain = computeDomain(cfg);
  const signature = (await state.signer.signTypedData(domain, { [type]: fields }, message)).toLowerCase();
  return { format: "datagora.signed-request.v1", type, domain, message, signature };
}

const JOB_FIELDS = [
  { name: "consumer", type: "address" }, { name: "job", type: "bytes32" },
  { name: "action", type: "string" }, { name: "nonce", type: "bytes32" },
  { name: "expires", type: "uint64" },
];

async function jobHeader(job, action) {
  const signed = await signedRequest("JobRequest", JOB_FIELDS, {
    consumer: state.account, job: "0x" + hex(be(job, 32)), action, nonce: randomHex32(),
    expires: Math.floor(Date.now() / 1000) + 120,
  });
  const raw = enc.encode(JSON.stringify(signed));
  let text = "";
  raw.forEach((b) => { text += String.fromCharCode(b); });
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function submitJob(form) {
  const art = document.getElementById("dataset").dataset;
  const file = form.algorithm.files[0];
  if (!file) throw new Error("choose the algorithm file");
  const code = await file.text();
  let params;
  try {
    params = JSON.parse(form.params.value || "{}");
  } catch (err) {
    throw new Error("the parameters are not JSON");
  }
  if (!params || typeof params !== "object" || Array.isArray(params)) throw new Error("the parameters are a JSON object");
  const service = form.dataset.service;
  const r = await fetch(`/api/orders/latest?dataset=${art.dataset}&account=${state.account}&service=${service}`);
  const order = await r.json();
  if (!r.ok) throw new Error(`${order.detail}: order the compute service first`);
  const message = {
    consumer: state.account, dataset: String(art.dataset), order: order.tx.toLowerCase(),
    algorithm: "0x" + hex(await sha256(enc.encode(code))),
    params: "0x" + hex(await sha256(enc.encode(canonical(params)))),
    hold: 0, nonce: randomHex32(), expires: Math.floor(Date.now() / 1000) + 120,
  };
  const request = await signedRequest("ComputeRequest", [
    { name: "consumer", type: "address" }, { name: "dataset", type: "uint256" },
    { name: "order", type: "bytes32" }, { name: "algorithm", type: "bytes32" },
    { name: "params", type: "bytes32" }, { name: "hold", type: "uint32" },
    { name: "nonce", type: "bytes32" }, { name: "expires", type: "uint64" },
  ], message);
  const response = await fetch("/api/compute/jobs", {
    method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ request, algorithm: code, params }),
  });
  const info = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(info.detail || info.error || `the compute node answered ${response.status}`);
  state.job = Number(info.job);
  document.body.dataset.job = String(state.job);
  document.getElementById("job-status").textContent = `Job ${info.job}: ${info.state}.`;
}

async function jobStatus() {
  if (!state.job) throw new Error("submit a job first");
  const r = await fetch(`/api/compute/jobs/${state.job}`, { headers: { "X-Datagora-Request": await jobHeader(state.job, "status") } });
  const info = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(info.detail || info.error || `the compute node answered ${r.status}`);
  document.getElementById("job-status").textContent =
    `Job ${info.job}: ${info.state}${info.reason ? ` (${info.reason})` : ""}.`;
  document.body.dataset.jobState = info.state;
  return info;
}

async function jobResult() {
  if (!state.job) throw new Error("submit a job first");
  const r = await fetch(`/api/compute/jobs/${state.job}/result`, { headers: { "X-Datagora-Request": await jobHeader(state.job, "result") } });
  if (!r.ok) {
    const info = await r.json().catch(() => ({}));
    throw new Error(info.detail || info.error || `the compute node answered ${r.status}`);
  }
  const sealed = new Uint8Array(await r.arrayBuffer());
  // DGCR1 || uint32_be(len(header)) || header (datagora.umbral-wrap.v1 JSON) || nonce || ct+tag
  if (new TextDecoder().decode(sealed.subarray(0, 5)) !== "DGCR1") throw new Error("not a datagora compute result");
  const size = new DataView(sealed.buffer, sealed.byteOffset + 5, 4).getUint32(0);
  const wrap = JSON.parse(new TextDecoder().decode(sealed.subarray(9, 9 + size)));
  const umbral = await loadUmbral();
  const me = await consumerKey();
  if (wrap.delegating_key !== hex(me.publicKey)) throw new Error("this result is sealed to another key than this wallet's");
  const raw = umbral.decryptOriginal(me.secret, umbral.Capsule.fromBytes(unhex(wrap.capsule)), unhex(wrap.ciphertext));
  const key = await crypto.subtle.importKey("raw", raw, "AES-GCM", false, ["decrypt"]);
  raw.fill(0);
  const rest = sealed.subarray(9 + size);
  const ad = concat([enc.encode("datagora.compute-result.v1"), be(state.job, 32), enc.encode("result")]);
  let plain;
  try {
    plain = new Uint8Array(await crypto.subtle.decrypt({ name: "AES-GCM", iv: rest.subarray(0, 12), additionalData: ad }, key, rest.subarray(12)));
  } catch (err) {
    throw new Error("the result fails authentication: altered, or for another job");
  }
  const url = URL.createObjectURL(new Blob([plain], { type: "application/octet-stream" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = `job-${state.job}-result.tar`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  document.getElementById("job-status").textContent = `Job ${state.job}: result saved (${plain.length} bytes, authenticated).`;
}

window.datagora.jobStatus = jobStatus;
