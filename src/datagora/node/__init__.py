"""The node layer: composes service roles into one HTTP process."""

from datagora.node.server import ROLES, NodeConfig, build_app, serve

__all__ = ["ROLES", "NodeConfig", "build_app", "serve"]
