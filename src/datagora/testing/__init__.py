"""Harnesses for the test suite and the benchmarks; not product code.

:mod:`datagora.testing.storage` runs storage nodes as local processes, and
:mod:`datagora.testing.sharing` a local sharing network (anvil, contracts, proxies,
the owner's agent). This package sits at the top floor of the layer order, beside
``cli`` and ``sdk``: it may import any layer, and no product module imports it.
"""
