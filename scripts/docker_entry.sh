#!/usr/bin/env bash
# Entry points of the docker-compose.yml services (one image, three roles):
#   docker_entry.sh head [launch options...]   Ray head + the search controller (`detkds-search launch`)
#   docker_entry.sh worker [ray start options...]  a Ray worker node joining the head
#   docker_entry.sh dashboard [dashboard options...]  optuna-dashboard on the study storage
#
# Secrets come from compose's file secrets (/run/secrets/NAME), never from the environment of the compose file:
#   ray_auth_token    -> RAY_AUTH_TOKEN_PATH (Ray token authentication; the same file on every node and driver)
#   storage_password  -> DETKDS_STORAGE_PASSWORD (used with a storage URL that names a user but no password)
set -euo pipefail
role=${1:?usage: docker_entry.sh head|worker|dashboard [options...]}
shift

export RAY_AUTH_MODE=${RAY_AUTH_MODE:-token}
if [ -r /run/secrets/ray_auth_token ]; then
  export RAY_AUTH_TOKEN_PATH=/run/secrets/ray_auth_token
fi
if [ -r /run/secrets/storage_password ]; then
  DETKDS_STORAGE_PASSWORD=$(cat /run/secrets/storage_password)
  export DETKDS_STORAGE_PASSWORD
fi
RAY_PORT=${RAY_PORT:-6379}

# The storage server may still be starting (its health check gates nothing for the profile not in use):
# retry opening it for up to DETKDS_STORAGE_WAIT_S seconds. Only the head and the dashboard talk to storage.
wait_for_storage() {
  python - <<'PY'
import os, sys, time
from distill_core.errors import DetKDSError
from search.storage import mask_url, open_storage
url, wait_s = os.environ['DETKDS_STORAGE'], float(os.environ.get('DETKDS_STORAGE_WAIT_S', '120'))
deadline = time.time() + wait_s
while True:
    try:
        open_storage(url, '/tmp')
        print(f'[entry] storage ready: {mask_url(url)}', flush=True)
        break
    except DetKDSError as exc:
        if time.time() > deadline:
            sys.exit(f'[entry] storage not reachable after {wait_s:.0f} s: {exc}')
        time.sleep(3)
PY
}

case "$role" in
  head)
    : "${DETKDS_SEARCH_CONFIG:?set DETKDS_SEARCH_CONFIG (the search config inside the container)}"
    : "${DETKDS_STUDY:?set DETKDS_STUDY}"
    : "${DETKDS_STORAGE:?set DETKDS_STORAGE (the study storage URL)}"
    wait_for_storage
    # No CPUs/GPUs on the head by default: every trial runs on a GPU worker; the head drives.
    ray start --head --port="$RAY_PORT" --dashboard-host=0.0.0.0 --num-cpus="${HEAD_NUM_CPUS:-0}" \
      --num-gpus=0 --disable-usage-stats
    # `ray stop` here stops this container's Ray processes only (its own PID namespace).
    trap 'ray stop --force >/dev/null 2>&1 || true' EXIT
    # A relaunch with the same study resumes it: compose's restart policy makes a crashed controller come back.
    detkds-search launch "$DETKDS_SEARCH_CONFIG" --study "$DETKDS_STUDY" --storage "$DETKDS_STORAGE" \
      --run-dir "/opt/detkds-search/runs/$DETKDS_STUDY" --ray-address "127.0.0.1:$RAY_PORT" "$@"
    ;;
  worker)
    exec ray start --address="${RAY_HEAD_HOST:-head}:$RAY_PORT" --block --disable-usage-stats "$@"
    ;;
  dashboard)
    : "${DETKDS_STORAGE:?set DETKDS_STORAGE (the study storage URL)}"
    wait_for_storage
    exec detkds-search dashboard --storage "$DETKDS_STORAGE" --host 0.0.0.0 --port "${DASHBOARD_PORT:-8080}" "$@"
    ;;
  *)
    echo "docker_entry.sh: unknown role $role (head, worker or dashboard)" >&2
    exit 2
    ;;
esac
