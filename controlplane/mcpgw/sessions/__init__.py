"""Session keys: the HMAC keys the `mcp-server` filter signs and verifies session tokens with.

The control plane generates them (`keys`), keeps them where every replica finds them (`store`:
beside a Redis registry, in a keys file, or pinned by $MCPGW_SESSION_KEY), rotates them and
follows other replicas' rotations (`manager`), and hands them to the translator, which puts
them in every server's filter configuration.
"""
