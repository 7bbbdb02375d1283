"""The consumer's side of compute-to-data: submit, poll, read logs and results."""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

from datagora.bodies import refusal_text
from datagora.compute.errors import BudgetExceeded, ComputeError, JobRefused
from datagora.compute.jobs import algorithm_hash, job_bytes, params_hash
from datagora.compute.node import REQUEST_HEADER
from datagora.compute.requests import ComputeRequest, JobRequest
from datagora.compute.results import open_result
from datagora.crypto.eip712 import new_nonce, sign_request
from datagora.crypto.keys import Identity

__all__ = ["ComputeClient", "extract_archive"]

_DONE = ("succeeded", "failed", "denied", "cancelled")


def _order_bytes(order: str | bytes) -> bytes:
    return order if isinstance(order, bytes) else bytes.fromhex(order.removeprefix("0x"))


def extract_archive(archive: bytes, dest: Path) -> list[Path]:
    """Unpack a result archive (regular files and folders only) into `dest`.

    The node writes every member with mtime 0 so that the archive, and the result hash
    recorded on chain, depend only on the files' contents; the unpacked files get the
    time they arrived instead of 1970-01-01."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="data")
        out = [dest / m.name for m in tar.getmembers() if m.isfile()]
    for path in out:
        os.utime(path)
    return out


class ComputeClient:
    """One consumer talking to one compute node.

    ``chain_id`` and ``verifying_contract`` (the deployment's ComputeRegistry, from the
    consumer's own ledger, never from the node) are the EIP-712 domain of every request
    it signs, so a request is valid on that deployment only."""

    def __init__(
        self,
        url: str,
        consumer: Identity,
        chain_id: int,
        verifying_contract: str,
        *,
        timeout: float = 60.0,
        lifetime: int = 300,
    ) -> None:
        self.url = url.rstrip("/")
        self.consumer = consumer
        self.chain_id = chain_id
        self.verifying_contract = verifying_contract
        self.lifetime = lifetime
        self._http = httpx.Client(timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ComputeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self, response: httpx.Response) -> httpx.Response:
        if response.status_code >= 400:
            try:
                payload = response.json()
                detail, kind = refusal_text(payload, response.text), payload.get("error")
            except (ValueError, AttributeError):
                detail, kind = response.text, None
            if kind == "BudgetExceeded":
                raise BudgetExceeded(str(detail))
            raise JobRefused(str(detail), response.status_code)
        return response

    def submit(
        self, dataset: int, order: str | bytes, algorithm: str, params: Any, *, hold: int = 0
    ) -> int:
        """Submit a job; its on-chain id. With ``hold`` (seconds) the node admits it and
        reserves its epsilon but runs it only after :meth:`start` (see
        :class:`~datagora.compute.requests.ComputeRequest`)."""
        request = ComputeRequest(
            consumer=self.consumer.address,
            dataset=dataset,
            order=_order_bytes(order),
            algorithm=algorithm_hash(algorithm.encode()),
            params=params_hash(params),
            nonce=new_nonce(),
            expires=int(time.time()) + self.lifetime,
            hold=hold,
        )
        signed = sign_request(
            self.consumer, request, self.chain_id, verifying_contract=self.verifying_contract
        )
        body = {"request": signed.to_json(), "algorithm": algorithm, "params": params}
        response = self._check(self._http.post(f"{self.url}/jobs", json=body))
        return int(response.json()["job"])

    def _signed_header(self, job: int, action: str) -> dict[str, str]:
        request = JobRequest(
            consumer=self.consumer.address,
            job=job_bytes(job),
            action=action,
            nonce=new_nonce(),
            expires=int(time.time()) + self.lifetime,
        )
        signed = sign_request(
            self.consumer, request, self.chain_id, verifying_contract=self.verifying_contract
        )
        return {
            REQUEST_HEADER: base64.urlsafe_b64encode(json.dumps(signed.to_json()).encode()).decode()
        }

    def cancel(self, job: int) -> dict[str, Any]:
        """Withdraw a job that waits for review or in the queue; its escrow is refunded."""
        response = self._check(
            self._http.post(
                f"{self.url}/jobs/{job}/cancel", headers=self._signed_header(job, "cancel")
            )
        )
        out: dict[str, Any] = response.json()
        return out

    def start(self, job: int) -> dict[str, Any]:
        """Run a job submitted with ``hold``: it joins the node's queue."""
        response = self._check(
            self._http.post(
                f"{self.url}/jobs/{job}/start", headers=self._signed_header(job, "start")
            )
        )
        out: dict[str, Any] = response.json()
        return out

    def _get(self, job: int, action: str, path: str) -> httpx.Response:
        request = JobRequest(
            consumer=self.consumer.address,
            job=job_bytes(job),
            action=action,
            nonce=new_nonce(),
            expires=int(time.time()) + self.lifetime,
        )
        signed = sign_request(
            self.consumer, request, self.chain_id, verifying_contract=self.verifying_contract
        )
        header = base64.urlsafe_b64encode(json.dumps(signed.to_json()).encode()).decode()
        return self._check(self._http.get(f"{self.url}{path}", headers={REQUEST_HEADER: header}))

    def status(self, job: int) -> dict[str, Any]:
        result: dict[str, Any] = self._get(job, "status", f"/jobs/{job}").json()
        return result

    def wait(
        self, job: int, timeout: float = 120.0, until: tuple[str, ...] = _DONE
    ) -> dict[str, Any]:
        """Poll until the job reaches one of `until` (default: finished)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            info = self.status(job)
            if info["state"] in until:
                return info
            if time.monotonic() > deadline:
                raise ComputeError(f"job {job} is still {info['state']} after {timeout:g} s")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def logs(self, job: int) -> str:
        sealed = self._get(job, "logs", f"/jobs/{job}/logs").content
        return open_result(self.consumer, sealed, job, "logs", self.chain_id).decode(
            "utf-8", "replace"
        )

    def sealed_result(self, job: int) -> bytes:
        """The encrypted result as served (its SHA-256 is the on-chain result hash)."""
        return self._get(job, "result", f"/jobs/{job}/result").content

    def result(self, job: int) -> bytes:
        """The decrypted result archive (tar)."""
        return open_result(self.consumer, self.sealed_result(job), job, "result", self.chain_id)

    def dataset(self, dataset: int) -> dict[str, Any]:
        """Whether the node computes on `dataset` (``GET /datasets/{id}``): its version,
        ``service_id``, ``differential_privacy`` and ``epsilon_budget``; raises
        :class:`JobRefused` (status 404) saying why if it does not."""
        response = self._check(self._http.get(f"{self.url}/datasets/{dataset}"))
        out: dict[str, Any] = response.json()
        return out

    def budget(self, dataset: int) -> dict[str, Any]:
        response = self._check(
            self._http.get(f"{self.url}/budget/{dataset}/{self.consumer.address}")
        )
        out: dict[str, Any] = response.json()
        return out
