# syntax=docker/dockerfile:1
# detkds-search on a CUDA machine: one image for the Ray head (controller), the GPU Ray workers and the dashboard.
#
# The stack is installed by the same scripts/install.sh as on a workstation, with the pins of
# requirements.lock.txt. On PyPI, `torch==2.13.0` for Linux x86_64 is the CUDA 13.0 build (it depends on
# cuda-toolkit 13.0.x), so the base image is a CUDA 13.0 *devel* image: its nvcc must have torch's CUDA major
# version for mmcv's extensions to build. install.sh sees nvcc + a CUDA torch and builds mmcv 2.1.0 with its CUDA
# ops (FORCE_CUDA=1). No GPU is visible during `docker build`, so the GPU architectures to compile for are given
# by TORCH_CUDA_ARCH_LIST (CUDA 13 supports compute capability 7.5 and newer):
#   7.5 T4 / RTX 20xx, 8.0 A100, 8.6 A10 / RTX 30xx, 8.9 L4 / L40 / RTX 40xx, 9.0 H100 / H200.
# Fewer architectures build faster:  docker compose build --build-arg TORCH_CUDA_ARCH_LIST="8.0;9.0"
#
# Build:  docker compose build        (or: docker build -t detkds-search:latest .)
# BuildKit is required (cache mount below): the default of `docker build` / `docker compose`; with the old
# `docker-compose` 1.29 set DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1.
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_CUDA_ARCH_LIST="7.5;8.0;8.6;8.9;9.0"
ARG MAX_JOBS=8
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    MAX_JOBS=${MAX_JOBS} \
    DETKDS_VENV=/opt/venv \
    DETKDS_WHEEL_CACHE=/root/.cache/detkds-search/wheels \
    PATH=/opt/venv/bin:${PATH}

# Python 3.11 (the version the project is developed and tested with) from the deadsnakes PPA; libGL/glib for
# OpenCV; a C++ toolchain and ninja for the mmcv build.
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent ca-certificates curl \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential \
        ninja-build git libgl1 libglib2.0-0 procps \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/detkds-search
COPY . .

# The mmcv wheel lands in a BuildKit cache mount: rebuilding the image after a code change reuses it.
RUN --mount=type=cache,target=/root/.cache \
    PYTHON=python3.11 bash scripts/install.sh \
 && python -c "import torch; from mmcv.ops import get_compiling_cuda_version as ops_cuda; \
assert torch.version.cuda, 'torch is not a CUDA build'; assert ops_cuda() != 'not available', 'mmcv ops without CUDA'; \
print('[image] torch', torch.__version__, 'CUDA', torch.version.cuda, '| mmcv ops CUDA', ops_cuda())" \
 && RAY_PIN=$(grep -E '^ray\[' requirements.lock.txt | sed -E 's/^ray\[[^]]*\]//') \
 && python -m pip install -q "ray[default,tune]${RAY_PIN}"
# ^ ray[default]: the Ray dashboard and `ray start`'s agents (the lock pins ray[tune] only, enough for laptops)

# Ray's dashboard (head), GCS (head) and the optuna-dashboard service.
EXPOSE 8265 6379 8080
CMD ["detkds-search", "--help"]
