"""Celery app and one module per queue; tasks are thin wrappers over shared.stages."""
