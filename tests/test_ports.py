"""Ports for the servers a process starts: free, and never the same one twice."""

from __future__ import annotations

import socket

from datagora.ports import free_port


def test_ports_are_free_and_never_handed_out_twice() -> None:
    # Without the memory, 200 releases of port 0 repeated a port in 13 of 20 runs.
    ports = [free_port() for _ in range(400)]
    assert len(set(ports)) == len(ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))  # free indeed


def _ports(n: int) -> list[int]:
    return [free_port() for _ in range(n)]


def test_two_processes_are_never_given_one_port() -> None:
    # Parallel test workers: each process remembers its own ports, and the kernel
    # offers a released port to anyone; a port another process was just given is
    # reserved for two minutes, so this process is never given it.
    import multiprocessing

    from datagora.ports import _reserve

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first, second = pool.map(_ports, [300, 300])
    assert len(set(first)) == len(first) and len(set(second)) == len(second)
    assert not set(first) & set(second)
    assert not any(_reserve(port) for port in first + second)
