# pragma version ~=0.4.3
# SPDX-License-Identifier: AGPL-3.0-or-later
"""
@title ViewBatch
@notice Many one-word views, each taking two one-word arguments, read in one
        static call: a proxy checks three views before every re-encryption, and
        the checks of concurrent requests go to the chain as ONE eth_call instead
        of one per view (each eth_call costs the node far more than the view).
        Every view runs as a STATICCALL, so nothing can change state, and all are
        read at the same block. Stateless: anyone may call it.
@dev A call is four words: the target address, the function selector in the
     high four bytes of a word, and the two arguments. A result is two words:
     1 and the returned word if the call succeeded and returned at least 32
     bytes (the first word is kept), else 0 and 0.
"""

MAX_CALLS: constant(uint256) = 384


@external
@view
def read(calls: DynArray[uint256, 4 * MAX_CALLS]) -> DynArray[uint256, 2 * MAX_CALLS]:
    assert len(calls) % 4 == 0, "ViewBatch: a call is four words"
    results: DynArray[uint256, 2 * MAX_CALLS] = []
    for i: uint256 in range(MAX_CALLS):
        if 4 * i >= len(calls):
            break
        target: address = convert(convert(calls[4 * i], uint160), address)
        data: Bytes[68] = concat(
            slice(convert(calls[4 * i + 1], bytes32), 0, 4),
            convert(calls[4 * i + 2], bytes32),
            convert(calls[4 * i + 3], bytes32),
        )
        ok: bool = False
        out: Bytes[32] = b""
        ok, out = raw_call(
            target, data, max_outsize=32, is_static_call=True, revert_on_failure=False
        )
        if ok and len(out) == 32:
            results.append(1)
            results.append(convert(out, uint256))
        else:
            results.append(0)
            results.append(0)
    return results
