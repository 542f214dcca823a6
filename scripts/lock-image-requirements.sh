#!/usr/bin/env bash
# Pin every image's whole Python environment: pip freeze of each built image's /opt/venv, without
# the stack's own packages and without local version labels (torch's +cpu, so that a CUDA build of
# the same version satisfies it too), written to the requirements.lock its Dockerfile installs
# with `-c`. Run after changing a requirements.txt and rebuilding:
#   IMAGE_PREFIX=mlflow-promptlab docker compose --profile pyfunc --profile tls build && scripts/lock-image-requirements.sh
set -euo pipefail
cd "$(dirname "$0")/.."
prefix="${IMAGE_PREFIX:-mlflow-promptlab}"
for pair in tracking:services/tracking gateway:gateway pyfunc:model llamacpp:services/llamacpp tls:services/tls; do
  image="$prefix/${pair%%:*}:latest"
  lock="${pair#*:}/requirements.lock"
  {
    echo "# The image's whole Python environment, pinned (pip constraints; the Dockerfile installs with -c)."
    echo "# Regenerate after changing requirements.txt: scripts/lock-image-requirements.sh"
    docker run --rm --entrypoint /opt/venv/bin/pip "$image" freeze --exclude-editable \
      | grep -v " @ file://" \
      | grep -v -E "^(promptlab[-_]stack|gateway|tracking|tracking[-_]ops|promptlab[-_]eval|endpoint[-_]sync|pyfunc[-_]server|pyfunc|llamacpp|gguf|tls)==" \
      | sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/'
  } > "$lock"
  echo "$lock: $(grep -c '==' "$lock") pins"
done
