"""The faces: REST (api/), CLI (cli/) and MCP (mcp.py), thin adapters over the services."""
