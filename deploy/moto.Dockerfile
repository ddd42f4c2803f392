# moto server (fake AWS) for image tests; built on PYTHON_IMAGE so no extra public image is needed.
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}
RUN python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check 'moto[server]>=5,<6'
ENV PATH=/opt/moto/bin:$PATH
CMD ["moto_server", "-H", "127.0.0.1", "-p", "5050"]
