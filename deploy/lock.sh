#!/usr/bin/env sh
# Re-pin every dependency of the images (run after changing pyproject.toml's dependencies):
#   sh deploy/lock.sh          -> requirements.lock (cloud image)
#   sh deploy/lock.sh local    -> requirements-local.lock (image with the local models)
# Needs pip-tools (pip install pip-tools). Resolves against pypi.org only, with hashes.
set -eu
cd "$(dirname "$0")/.."
variant="${1:-cloud}"
extras="--extra otel"
out=requirements.lock
if [ "$variant" = local ]; then
    extras="$extras --extra local"
    out=requirements-local.lock
fi
# shellcheck disable=SC2086  # $extras is several words on purpose
PIP_CONFIG_FILE=/dev/null PIP_FIND_LINKS= PIP_CONSTRAINT= pip-compile --quiet \
    --index-url https://pypi.org/simple --no-emit-index-url --no-emit-find-links \
    --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
    $extras --output-file "$out" pyproject.toml
echo "wrote $out"
