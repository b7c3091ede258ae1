#!/usr/bin/env bash
# Fill ./wheelhouse with every wheel the image needs, so `docker build --build-arg WHEELHOUSE=1`
# installs with no network: the way an air-gapped site builds the image, and the way the compose
# e2e test builds it on a machine whose containers cannot reach a package index.
#
#   scripts/build-wheelhouse.sh [extra requirement ...]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
mkdir -p wheelhouse
# Build tools first: the project itself is built from source inside the image, without an index.
"$PY" -m pip download -q -d wheelhouse "setuptools>=69" wheel
"$PY" -m pip wheel -q -w wheelhouse -c constraints.txt ".[worker]" "$@"
# Dependencies behind a marker the host's Python may not meet but the image's does: redis needs
# async-timeout below Python 3.11.3, and Debian bookworm's python3 (the e2e base image) is 3.11.2.
"$PY" -m pip download -q -d wheelhouse --only-binary=:all: "async-timeout>=4.0.3"
# The project's own wheel is rebuilt in the image from the copied source; drop the stale one.
rm -f wheelhouse/model_service_platform-*.whl
du -sh wheelhouse | cut -f1 | sed 's/^/wheelhouse: /'
