"""The admin API: registry CRUD over HTTP, the status API, and the client the CLI uses."""
