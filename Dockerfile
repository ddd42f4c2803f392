# The freshen app image: beat, workers of every queue, Flower and the `freshen` CLI.
# PYTHON_IMAGE is any Debian-based image with python3 (+ venv); mirrors and air-gapped sites
# swap it through the compose variable of the same name.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}
# git commits the versions file; installed only when the base lacks it.
RUN command -v git >/dev/null || { apt-get update \
      && apt-get install -y --no-install-recommends git ca-certificates \
      && rm -rf /var/lib/apt/lists/*; }
RUN python3 -m venv /opt/freshen
ENV PATH=/opt/freshen/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FRESHEN_IMAGES_DIR=/app/images \
    FRESHEN_GIT_WORKDIR=/var/lib/freshen/git
WORKDIR /app
COPY pyproject.toml README.md ./
COPY shared shared
COPY workers workers
COPY beat beat
RUN pip install --no-cache-dir --disable-pip-version-check .
COPY images images
CMD ["freshen", "--help"]
