"""mcpgw: a private MCP gateway whose control plane configures Envoy over xDS."""

__version__ = "0.1.0"
