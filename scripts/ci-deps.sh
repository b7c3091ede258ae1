#!/usr/bin/env bash
# System packages the tests need beyond the venv: espeak-ng makes the real speech that the
# transcription tests send. `make test` runs this first; without root or apt-get it only says what is
# missing (those tests then skip, saying why).
set -uo pipefail
command -v espeak-ng >/dev/null && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null) \
    || echo "ci-deps: could not install espeak-ng; the speech tests will skip" >&2
else
  echo "ci-deps: espeak-ng is not installed (sudo apt-get install espeak-ng); the speech tests will skip" >&2
fi
exit 0
