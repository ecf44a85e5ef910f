"""The MCP server: tool definitions, policy gate and transports."""

from .app import ServerState, build_server
from .run import make_state, serve_stdio

__all__ = ["ServerState", "build_server", "make_state", "serve_stdio"]
