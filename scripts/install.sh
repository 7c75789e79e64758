#!/usr/bin/env bash
# Create .venv and install the whole stack: torch, mmcv 2.1.0 built from source with its ops,
# mmengine, mmdet 3.3.0, ray[tune], optuna(+dashboard), pymongo, pycocotools and this project (editable).
# Re-running is cheap: the mmcv wheel is cached in $DETKDS_WHEEL_CACHE (default ~/.cache/detkds-search/wheels).
#   scripts/install.sh            # runtime + project
#   scripts/install.sh --dev      # + test tools (pytest, hypothesis)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${DETKDS_VENV:-$ROOT/.venv}
WHEELS=${DETKDS_WHEEL_CACHE:-$HOME/.cache/detkds-search/wheels}
LOCK=$ROOT/requirements.lock.txt
pin() { grep -E "^$1==" "$LOCK" | head -1; }
log() { printf '[install] %s\n' "$*"; }

PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
. "$VENV/bin/activate"
python -m pip install -q --upgrade "pip>=24"

# torch first and pinned: an open range pulls the multi-GB CUDA build.
log "torch: $(pin torch)"
python -m pip install -q "$(pin torch)"
python -m pip install -q "$(pin setuptools)" wheel ninja numpy

# mmcv with its ops, built against the installed torch (no build isolation), cached as a wheel.
mkdir -p "$WHEELS"
if command -v nvcc >/dev/null 2>&1 && python -c 'import torch,sys; sys.exit(0 if torch.version.cuda else 1)'; then
  FLAVOUR=cuda; export FORCE_CUDA=1
else
  FLAVOUR=cpu; export FORCE_CUDA=0
fi
TORCH_TAG=$(python -c 'import torch; print(torch.__version__.replace("+", "_"))')
PY_TAG=$(python -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')
MMCV_DIR="$WHEELS/mmcv-2.1.0-$FLAVOUR-torch$TORCH_TAG-$PY_TAG"
if ! python -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  if ! ls "$MMCV_DIR"/mmcv-2.1.0-*.whl >/dev/null 2>&1; then
    log "building mmcv 2.1.0 with $FLAVOUR ops (about 8-10 minutes on 2 cores)"
    mkdir -p "$MMCV_DIR.partial"
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} python -m pip wheel -q --no-deps --no-build-isolation \
      -w "$MMCV_DIR.partial" "$(pin mmcv)"
    rm -rf "$MMCV_DIR"; mv "$MMCV_DIR.partial" "$MMCV_DIR"
  else
    log "mmcv wheel from cache: $MMCV_DIR"
  fi
  python -m pip install -q --no-deps "$MMCV_DIR"/mmcv-2.1.0-*.whl
fi

log "mmengine, mmdet, ray, optuna, storage clients"
grep -vE '^(#|torch==|setuptools==|mmcv==|$)' "$LOCK" > "$VENV/.runtime-requirements.txt"
# mmcv's own runtime dependencies (it was installed with --no-deps)
python -m pip install -q addict packaging Pillow pyyaml yapf opencv-python-headless "$(pin torch)" \
  -r "$VENV/.runtime-requirements.txt"
if [ "${1:-}" = "--dev" ]; then
  python -m pip install -q -e "$ROOT[dev]"
else
  python -m pip install -q -e "$ROOT"
fi
python - <<'PY'
import torch, mmcv, mmcv.ops, mmdet, mmengine, ray, optuna, pycocotools  # noqa: F401
print(f"[install] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (ops), mmdet {mmdet.__version__}, "
      f"mmengine {mmengine.__version__}, ray {ray.__version__}, optuna {optuna.__version__}")
PY
