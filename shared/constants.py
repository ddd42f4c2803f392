"""Names shared by every process. One place, one line of why each."""

from enum import StrEnum


class Queue(StrEnum):
    """The Celery queues; each stage has its own so its workers scale on their own."""

    CHECK = "check"
    BUILD = "build"
    TEST = "test"
    PROMOTE = "promote"


# Prefix of every Redis key freshen writes, so one Redis can be shared and inspected.
KEY_PREFIX = "freshen"
# The global event stream (all images, in append order) that feeds and replays read.
GLOBAL_STREAM = f"{KEY_PREFIX}:events"
# Per-image event stream; the image name is appended.
IMAGE_STREAM_PREFIX = f"{KEY_PREFIX}:image:"
# Set of image names that have a stream, so replay finds every image.
IMAGES_SET = f"{KEY_PREFIX}:images"
# Snapshot of an image's folded state (the live projection), keyed by image name.
SNAPSHOT_PREFIX = f"{KEY_PREFIX}:snapshot:"
# Cached PyPI answers (ETag + body digest) so unchanged checks cost a 304.
HTTP_CACHE_PREFIX = f"{KEY_PREFIX}:httpcache:"
# Lease that lets only one worker run a stage of a run at a time.
LEASE_PREFIX = f"{KEY_PREFIX}:lease:"
# A lease outlives its stage's hard time limit by this much (clock skew, the soft-limit handler).
LEASE_SLACK_S = 15
# Longest wait before a stage task's retry (Celery's retry_backoff_max); a lease held for a
# scheduled retry lasts this much longer.
RETRY_BACKOFF_MAX_S = 300

# Build arguments every image definition's Dockerfile receives.
BUILD_ARG_VERSION = "VERSION"
BUILD_ARG_BASE = "BASE"
# The tag the candidate is pushed under before it is tested (never promoted by name).
DEVELOP_TAG = "develop"
# A container being stopped gets SIGTERM (its clean-up trap runs), then SIGKILL this much later.
STOP_GRACE_S = 10
# Where the test script is copied inside the test container.
TEST_SCRIPT_PATH = "/freshen/test.sh"
# OCI manifest media types asked for when resolving a base image digest.
MANIFEST_ACCEPT = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
