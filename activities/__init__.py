"""All I/O the workflows need: database, SSH, Kubernetes, registries. Every activity is idempotent."""
