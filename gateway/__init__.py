"""Cherry Live Gateway: composition root (config, CLI, app factory)."""
