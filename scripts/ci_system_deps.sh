#!/usr/bin/env bash
# Debian packages the test-suite uses: a PostgreSQL server (tests start a private one on loopback) and
# Chromium (headless screenshots of the dashboard), and a compose command (validation of docker-compose.yml).
set -euo pipefail
need=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
# a compose command to validate docker-compose.yml (no engine needed): the docker plugin, else Debian's 1.29
{ docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; } || need+=(docker-compose)
if [ ${#need[@]} -gt 0 ]; then
  echo "[deps] installing ${need[*]}"
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
echo "[deps] system packages ready"
