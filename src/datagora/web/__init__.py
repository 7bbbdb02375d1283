"""The marketplace in a browser: the `web` role's pages (:mod:`datagora.web.app`).

The web sits above the node layer: `datagora node --roles web` loads it by name
(``datagora.node.server``), so a node build without it still runs every other role.
"""
