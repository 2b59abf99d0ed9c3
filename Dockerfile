# hoplink images for the three services (docker-compose.yml picks the command and configures each
# one only through HOPLINK_* environment variables).
#
#   docker build -t hoplink .                            # rx and tx (and the whole CLI): with torch
#   docker build --target channel -t hoplink-channel .   # the channel: no torch (0.33 GB vs 1.6)
#
# Build arguments (the defaults are what `docker compose up --build` uses):
#   BASE_IMAGE    a Debian-like image with python3 >= 3.11 and its venv module
#   PIP_SOURCE    where pip finds every wheel but torch's (pip options)
#   TORCH_SOURCE  where pip finds torch: the CPU-only index (the default wheel pulls in gigabytes
#                 of CUDA libraries)
# Offline, from a wheelhouse: --build-arg PIP_SOURCE="--no-index --find-links http://..." and the
# same TORCH_SOURCE (.ci/compose-test builds this way, from a debootstrap base image).
ARG BASE_IMAGE=python:3.11-slim

# --- common base: a virtualenv, an unprivileged user, the entry point and the health check --------
FROM ${BASE_IMAGE} AS base
ARG PIP_SOURCE="--index-url https://pypi.org/simple"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# A virtualenv rather than the system site-packages: Debian's python3 refuses `pip install` there.
RUN python3 -m venv /opt/venv \
    && pip install $PIP_SOURCE "setuptools>=68" \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/hoplink hoplink
COPY docker/entrypoint.sh /usr/local/bin/hoplink-entrypoint
COPY docker/healthcheck.py /usr/local/bin/hoplink-healthcheck
WORKDIR /app
# The project's declared dependencies, one per line, read from pyproject.toml alone so that the
# layers installing them stay cached while the code changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt
# Inside a container the services bind every interface (compose publishes the ports on the
# host's 127.0.0.1 unless HOPLINK_PUBLISH says otherwise). Control ports (REST, metrics,
# dashboard): tx 8001, channel 8002, rx 8003; link ports (websockets): channel 9002, rx 9003.
ENV HOPLINK_HOST=0.0.0.0
EXPOSE 8001 8002 8003 9002 9003
ENTRYPOINT ["hoplink-entrypoint"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 CMD ["hoplink-healthcheck"]
CMD ["hoplink", "--help"]

# --- the channel: only the dependencies its process imports (no torch, av, scikit-image ...) -------
FROM base AS channel
ARG PIP_SOURCE="--index-url https://pypi.org/simple"
# Versions as pyproject.toml declares them; tests/e2e/test_compose.py checks this list against what
# `hoplink channel` imports.
ARG CHANNEL_DEPS="numpy pydantic pydantic-settings msgpack fastapi uvicorn h11 websockets prometheus-client"
RUN python -c "import re, sys; names = set(sys.argv[1:]); print('\n'.join(line for line in open('/tmp/requirements.txt').read().split() if re.split('[<>=!~ ;\[]', line)[0] in names))" $CHANNEL_DEPS > /tmp/channel-requirements.txt \
    && pip install $PIP_SOURCE -r /tmp/channel-requirements.txt
COPY . ./
# --no-deps: the package declares torch; the channel never imports it.
RUN pip install $PIP_SOURCE --no-deps . && rm -rf build *.egg-info
USER hoplink
CMD ["hoplink", "channel"]

# --- rx, tx and the whole CLI (the default target: built last) ------------------------------------
FROM base AS full
ARG PIP_SOURCE="--index-url https://pypi.org/simple"
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"
ARG TORCH=torch==2.13.0
# torch first and alone (the largest layer, cached across everything else), then the rest.
RUN pip install $TORCH_SOURCE "$TORCH"
RUN pip install $PIP_SOURCE -r /tmp/requirements.txt
COPY . ./
RUN pip install $PIP_SOURCE --no-deps . && rm -rf build *.egg-info
USER hoplink
