"""freshen's own package: settings, events, clients for outside systems, and the pipeline steps."""
