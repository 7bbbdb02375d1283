"""Typed wrapper of ProxySets: a dataset's proxies and threshold, chosen on chain by
its controller (``ProxySets.vy``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from eth_account.signers.local import LocalAccount

from datagora.ledger.base import ContractWrapper, Tx, check_address
from datagora.ledger.errors import InvalidArgument

MAX_PROXIES = 16


@dataclass(frozen=True)
class ProxySet:
    """A dataset's chosen proxies (accounts, in order) and threshold; empty: none chosen."""

    dataset: int
    proxies: tuple[str, ...]
    threshold: int

    @property
    def chosen(self) -> bool:
        return bool(self.proxies)


def check_proxy_set(proxies: Sequence[str], threshold: int) -> list[str]:
    """The proxies as checksummed addresses; InvalidArgument for what the contract
    would refuse (too many, a duplicate, a threshold out of range or 1 with several)."""
    addresses = [check_address(p, "proxy") for p in proxies]
    if len(addresses) > MAX_PROXIES:
        raise InvalidArgument("too many proxies", f"at most {MAX_PROXIES} proxies per dataset")
    if len(set(addresses)) != len(addresses):
        raise InvalidArgument("proxy named twice", "each proxy may be named once")
    n = len(addresses)
    if n == 0 and threshold != 0:
        raise InvalidArgument("bad threshold", "clearing the proxies takes threshold 0")
    if n and not 1 <= threshold <= n:
        raise InvalidArgument("bad threshold", f"the threshold must be between 1 and {n}")
    if n > 1 and threshold < 2:
        raise InvalidArgument(
            "bad threshold", "threshold 1 with several proxies: any one of them could serve anyone"
        )
    return addresses


class ProxySets(ContractWrapper):
    contract_name = "ProxySets"

    def set_proxies(
        self, account: LocalAccount, dataset: int, proxies: Sequence[str], threshold: int
    ) -> Tx:
        """Choose `dataset`'s proxies (registered, active proxy nodes) and threshold."""
        addresses = check_proxy_set(proxies, threshold)
        return Tx.of(self._transact(account, "set_proxies", dataset, addresses, threshold))

    def proxies_of(self, dataset: int) -> ProxySet:
        proxies, threshold = self._view("proxies_of", dataset)
        return ProxySet(dataset, tuple(str(p) for p in proxies), int(threshold))


class ProxyFaults(ContractWrapper):
    """Reports of proxies' signed answers that fail verification; the dataset's
    controller confirms (slashing the proxy's registry stake to the reporter) or
    dismisses each. Arbitration, not proof (``docs/threat-model.md``)."""

    contract_name = "ProxyFaults"

    def report(
        self,
        account: LocalAccount,
        dataset: int,
        version: int,
        request_digest: bytes,
        cfrag: bytes,
        signature: bytes,
    ) -> tuple[int, Tx]:
        """As the consumer who asked: report the proxy that signed `cfrag`; the report id."""
        if len(request_digest) != 32 or len(signature) != 65:
            raise InvalidArgument(
                "bad evidence", "a request digest is 32 bytes and a signature 65 bytes"
            )
        if not 0 < len(cfrag) <= 512:
            raise InvalidArgument("bad evidence", "a capsule fragment is 1 to 512 bytes")
        receipt = self._transact(
            account, "report", dataset, version, request_digest, cfrag, signature
        )
        (ev,) = self._decode(receipt, "FaultReported")
        return int(ev["report_id"]), Tx.of(receipt)

    def confirm(self, account: LocalAccount, report_id: int, amount: int) -> tuple[int, Tx]:
        """As the dataset's controller: slash up to `amount`; what was slashed."""
        receipt = self._transact(account, "confirm", report_id, amount)
        (ev,) = self._decode(receipt, "FaultConfirmed")
        return int(ev["slashed"]), Tx.of(receipt)

    def dismiss(self, account: LocalAccount, report_id: int) -> Tx:
        return Tx.of(self._transact(account, "dismiss", report_id))

    def report_of(self, report_id: int) -> tuple[str, str, int, int]:
        """(proxy, reporter, dataset, state: 0 none, 1 open, 2 confirmed, 3 dismissed)."""
        proxy, reporter, dataset, state = self._view("reports", report_id)
        return str(proxy), str(reporter), int(dataset), int(state)
