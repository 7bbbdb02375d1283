"""Turn a contract's revert reason into the exception that names the broken rule."""

from __future__ import annotations

import re

from datagora.ledger import errors

# (fragment of the revert reason, exception class, what the user can do next)
_RULES: tuple[tuple[str, type[errors.ContractRuleError], str], ...] = (
    (
        "not the controller or a registered storage node",
        errors.NotAuthorized,
        "record a repair as the dataset's controller or as an active registered storage node",
    ),
    (
        "not controller",
        errors.NotController,
        "only the holder of the dataset's data NFT may do this",
    ),
    ("caller is not the owner", errors.NotAuthorized, "only the contract's owner may do this"),
    (
        "not a slasher",
        errors.NotAuthorized,
        "only contracts and accounts the registry's admin approved may slash",
    ),
    (
        "stake below minimum",
        errors.InsufficientFunds,
        "stake at least the registry's minimum for these roles (see required_stake)",
    ),
    ("bad endpoint", errors.InvalidArgument, "give an http:// or https:// URL"),
    (
        "not an active registered proxy",
        errors.InvalidArgument,
        "name only nodes active in the NodeRegistry with the proxy role",
    ),
    (
        "threshold 1 with several proxies",
        errors.InvalidArgument,
        "with several proxies, require at least 2 of them",
    ),
    ("threshold out of range", errors.InvalidArgument, "between 1 and the number of proxies"),
    ("proxy named twice", errors.InvalidArgument, "name each proxy once"),
    (
        "bad answer signature",
        errors.InvalidArgument,
        "report the signature the proxy returned with the fragment, as the consumer who asked",
    ),
    (
        "not signed by a registered proxy",
        errors.InvalidArgument,
        "the answer must be signed by a node registered with the proxy role",
    ),
    ("answer already reported", errors.InvalidState, "each signed answer is reported once"),
    ("no open report", errors.InvalidState, "the report was already decided, or never made"),
    ("no proxies, no threshold", errors.InvalidArgument, "clear with no proxies and threshold 0"),
    ("bad umbral key", errors.InvalidArgument, "give a compressed Umbral public key"),
    ("still unbonding", errors.InvalidState, "withdraw once the unbonding delay has passed"),
    ("not leaving", errors.InvalidState, "leave first, then withdraw after the delay"),
    (
        "node not active",
        errors.InvalidState,
        "the account is not an active registered node (never registered, or leaving)",
    ),
    ("no such node", errors.NotFound, "the address is not a registered node"),
    (
        "caller is not token owner or approved",
        errors.NotController,
        "only the token's holder or an approved operator may move it",
    ),
    ("access is denied", errors.NotAuthorized, "this account lacks the minter role"),
    (
        "only the market fee recipient",
        errors.NotAuthorized,
        "only the marketplace that earns the fee may change it",
    ),
    (
        "only the consumer before the deadline",
        errors.NotAuthorized,
        "an escrow no job used is its consumer's to take back; anyone may refund it after "
        "its deadline",
    ),
    (
        "escrow deadline not reached",
        errors.InvalidState,
        "a job's escrow is refunded by cancel, failure or denial, or after its deadline",
    ),
    (
        "re-key needs a new version",
        errors.InvalidState,
        "the dataset was transferred: its new holder re-keys it (datagora rekey) before it "
        "sells or serves again",
    ),
    (
        "fee delay not over",
        errors.InvalidState,
        "a proposed protocol fee applies only after its delay (pending_protocol_fee)",
    ),
    ("escrow not locked", errors.InvalidState, "the escrow was already paid or refunded"),
    ("escrow expired", errors.InvalidState, "its deadline passed: reclaim it and lock again"),
    ("escrow already used", errors.InvalidState, "an escrow pays for one job only"),
    (
        "escrow is for another job",
        errors.InvalidArgument,
        "an escrow pays only for the consumer, dataset, algorithm and parameters it was locked for",
    ),
    ("no per-job price", errors.NotFound, "the dataset's jobs are paid by orders, not one by one"),
    ("only the", errors.NotAuthorized, "this entry point is reserved for datagora's contracts"),
    ("no datatoken", errors.NoDatatoken, "buy a datatoken (or get one from the dispenser) first"),
    ("no valid order", errors.NoDatatoken, "the consumer must first order the compute service"),
    ("not approved", errors.InvalidState, "the job has not been approved (or was settled)"),
    ("exceeds balance", errors.InsufficientFunds, "the account does not hold enough tokens"),
    ("transfer from incorrect owner", errors.NotController, "only the holder may transfer it"),
    ("invalid token ID", errors.NotFound, "no dataset has this id"),
    (
        "insufficient allowance",
        errors.InsufficientFunds,
        "approve or permit the spender for at least this amount",
    ),
    ("payment failed", errors.InsufficientFunds, "the MarketToken payment did not go through"),
    (
        "price above maximum",
        errors.PriceAboveMaximum,
        "the price moved; raise your maximum price if you still want to buy",
    ),
    (
        "order terms changed",
        errors.TermsChanged,
        "the service's validity was shortened after you looked; check its terms and buy again",
    ),
    (
        "restricted to the allow-list",
        errors.NotAuthorized,
        "the dataset's controller sells only to allow-listed accounts",
    ),
    ("expired deadline", errors.SignatureError, "the permit's deadline has passed; sign again"),
    ("invalid signature", errors.SignatureError, "the signature does not match the account"),
    ("expiry in the past", errors.OrderExpired, "choose an expiry in the future"),
    ("limit reached", errors.LimitExceeded, "this address has taken all it may"),
    ("cap reached", errors.LimitExceeded, "the dispenser has given all its owner allows"),
    ("too many units", errors.LimitExceeded, "a service costs at most 1,000,000 datatokens"),
    ("too many live grants", errors.LimitExceeded, "revoke or let expire an older grant first"),
    ("above bound", errors.LimitExceeded, "fee rates are capped by the contract"),
    ("no such", errors.NotFound, "check the id"),
    ("current manifest", errors.InvalidArgument, "repairs are recorded for the current version"),
    ("no exchange", errors.NotFound, "this dataset is not for sale on the exchange"),
    ("no dispenser", errors.NotFound, "this dataset has no active dispenser"),
    ("unknown service", errors.NotFound, "the dataset does not offer this service"),
    ("not active", errors.InvalidState, "the dataset or its sale is disabled"),
    ("retired", errors.InvalidState, "a retired dataset cannot change"),
    ("not pending", errors.InvalidState, "the request was already granted, denied or revoked"),
    ("not granted", errors.InvalidState, "only a granted, unrevoked grant can be revoked"),
    ("deny-listed", errors.InvalidState, "the dataset's controller has deny-listed this account"),
    ("already", errors.InvalidState, "this was done before and can be done only once"),
    ("exists", errors.InvalidState, "it already exists"),
    ("unchanged", errors.InvalidState, "nothing to change"),
    ("zero address", errors.InvalidArgument, "give a real address"),
    ("zero", errors.InvalidArgument, "give a non-zero value"),
    ("empty", errors.InvalidArgument, "give a non-empty value"),
    ("unknown", errors.InvalidArgument, "use one of the documented values"),
    ("too far", errors.InvalidArgument, "choose a nearer expiry"),
    ("must grow", errors.InvalidArgument, "an anchor must cover more entries than the last"),
    ("bad amount", errors.InvalidArgument, "the amount is out of range"),
)


# Hardhat Network's wordings of a revert (anvil, geth and py-evm say
# "execution reverted: <reason>").
_HARDHAT = re.compile(
    r"VM Exception while processing transaction: "
    r"(?:reverted with reason string '(?P<reason>.*)'"
    r"|reverted with custom error '(?P<custom>.*)'"
    r"|reverted with panic code (?P<panic>\S+(?: \(.*\))?)"
    r"|(?P<bare>revert(?:ed)?(?: without a reason string)?)(?: (?P<rest>.*))?)$",
    re.S,
)


def revert_reason(text: str) -> str:
    """The contract's reason in a node's revert message, whichever node worded it:
    "execution reverted: R" (anvil, geth, py-evm) or Hardhat's "VM Exception while
    processing transaction: reverted with reason string 'R'"; else `text` as it is."""
    text = text.strip()
    for prefix in ("execution reverted: ", "execution reverted"):
        if text.startswith(prefix):
            return text[len(prefix) :].strip() or "reverted without a reason"
    # Hardhat prefixes some with "Error: " or the RPC wrapper's words.
    found = _HARDHAT.search(text[text.find("VM Exception") :]) if "VM Exception" in text else None
    if found is None:
        return text
    if found["reason"] is not None:
        return found["reason"]
    if found["custom"] is not None:
        return f"custom error {found['custom']}"
    if found["panic"] is not None:
        return f"panic {found['panic']}"
    return (found["rest"] or "").strip() or "reverted without a reason"


def rule_error(what: str, reason: str) -> errors.ContractRuleError:
    """The exception for `reason`, with a message saying what failed and what to do."""
    reason = revert_reason(reason)
    clean = reason.removeprefix("datagora: ")
    for fragment, cls, hint in _RULES:
        if fragment in clean:
            return cls(reason, f"{what} refused: {clean} ({hint})")
    return errors.ContractRuleError(reason, f"{what} refused: {clean}")
