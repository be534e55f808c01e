"""Plain clients for the outside world (SSH, hosts, registries); no Temporal code."""
