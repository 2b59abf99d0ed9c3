# One image for the three hoplink services (rx, channel, tx); docker-compose.yml picks the
# command and configures each one only through HOPLINK_* environment variables.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    OMP_NUM_THREADS=1

WORKDIR /app

# torch first, from the CPU-only index: the default wheel pulls in gigabytes of CUDA libraries,
# and installing it before the package keeps this layer cached across code changes.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md* ./
COPY shared ./shared
COPY transmitter ./transmitter
COPY receiver ./receiver
COPY channel ./channel
COPY experiments ./experiments
COPY benchmarks ./benchmarks
RUN pip install .

# Inside a container the services bind every interface; ports: tx 8001, channel 8002, rx 8003.
ENV HOPLINK_HOST=0.0.0.0
EXPOSE 8001 8002 8003
CMD ["hoplink", "--help"]
