"""What the tests and the benchmarks share to run freshen on real parts (as
`celery.contrib.testing` ships Celery's): the local services' addresses and credentials, real
Celery workers as subprocesses, a whole system of workers and beat a test or a benchmark can
kill, a tap of the workers' task events, and a local PyPI stand-in. Nothing here imports
`tests`; the workers and services it starts are real, never fakes."""
