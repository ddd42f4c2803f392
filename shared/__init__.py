"""freshen's own package.

- `model/`: events and their encoding, the image aggregate folded from them, the projection,
  the tag, release-age and vulnerability rules, the pipeline's declaration;
- `adapters/`: the only code that speaks to outside systems (HTTP, PyPI, OCI registries, the
  Docker Engine, git, the Redis event log and leases, the vulnerability index);
- `stages/`: check, build, test, promote, reconcile, the audit and the operator overrides;
- `notify/`: notifications; `testing/`: the harness the tests and benchmarks share;
- beside them, what wires a process: settings, the context of clients, image definitions, the
  API and command line, metrics, logging and secrets.
"""
