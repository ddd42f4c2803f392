"""The adapters: the only code that speaks to outside systems (HTTP, PyPI, OCI registries,
the Docker Engine, git, Redis streams and leases, the vulnerability index)."""
