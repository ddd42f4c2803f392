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
# Hash of image name → Unix time of its last check that reached upstream (an idle check appends
# no event; shared/metrics.py serves it).
LAST_CHECK_KEY = f"{KEY_PREFIX}:checked"
# Lease that lets only one worker run a stage of a run at a time.
LEASE_PREFIX = f"{KEY_PREFIX}:lease:"
# A lease outlives its holder's last heartbeat by this much: a killed worker's stage is free to
# resume this long after it died, whatever the stage's time limit.
LEASE_TTL_S = 30
# A live attempt renews its lease this often.
LEASE_HEARTBEAT_S = 10
# Leftover containers count as abandoned this long after their stage's hard time limit.
LEASE_SLACK_S = 15
# Marks a stage task as sent (value "queued") or running ("started"); the key ends in its task id.
SENT_PREFIX = f"{KEY_PREFIX}:sent:"
# Longest wait before a stage task's retry (Celery's retry_backoff_max); a lease held for a
# scheduled retry lasts this much longer.
RETRY_BACKOFF_MAX_S = 300

# Build arguments every image definition's Dockerfile receives.
BUILD_ARG_VERSION = "VERSION"
BUILD_ARG_BASE = "BASE"
# The tag of the newest candidate; each run's candidate is pushed as `develop-<run id>` and
# neither is ever promoted by name.
DEVELOP_TAG = "develop"
# Label on every container and network freshen creates (value: the stage), so a leftover can be
# found and is safe to remove.
MANAGED_LABEL = "freshen.managed"
# Limits of every container freshen starts: no capabilities, no privileges gained, no runaway
# memory or forks. (Never privileged, no devices, no mounts: nothing else is asked for.)
CONTAINER_LIMITS = {
    "mem_limit": "1g",
    "memswap_limit": "1g",
    "pids_limit": 512,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "privileged": False,
}
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

# Everything the notifier (shared/notify) keeps of its own; no image event is ever written there.
NOTIFY_PREFIX = f"{KEY_PREFIX}:notify:"
# Its consumer group on GLOBAL_STREAM: an entry is acknowledged once its notifications are in the
# outboxes, so one read by a notifier that died is claimed by the next (XAUTOCLAIM).
NOTIFY_GROUP = f"{NOTIFY_PREFIX}group"
