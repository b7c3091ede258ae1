#!/usr/bin/env bash
# System packages the tests need beyond the venv: espeak-ng makes the real speech that the
# transcription tests send; prometheus (with promtool) scrapes the real services in the monitoring
# test; chromium is the real browser the web-console tests drive (Playwright never downloads one);
# redis-server is the shared state store of the several-gateway tests.
# `make test` runs this first; without root or apt-get it only says what is missing (those tests
# then skip, saying why). Packages already installed are left alone.
set -uo pipefail

missing=()
command -v espeak-ng >/dev/null || missing+=(espeak-ng)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || missing+=(prometheus)
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
[ "${#missing[@]}" = 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "ci-deps: not installed: ${missing[*]} (sudo apt-get install --no-install-recommends ${missing[*]});" \
    "the tests that need them will skip" >&2
  exit 0
fi

apt-get update -qq || echo "ci-deps: apt-get update failed; trying the install anyway" >&2
for package in "${missing[@]}"; do
  # No recommends: prometheus would bring prometheus-node-exporter, one more daemon the tests do not use.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
    || echo "ci-deps: could not install $package; the tests that need it will skip" >&2
done

# Debian's prometheus package enables a system service (scraping itself on :9090) and starts it where
# an init system runs. The test starts its own Prometheus on a free loopback port, so the package's
# service is stopped and disabled: nothing keeps running or listening after this script.
if [[ " ${missing[*]} " == *" prometheus "* ]]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  else
    service prometheus stop >/dev/null 2>&1 || true
    update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi
# Debian's redis-server package likewise enables a system service on :6379; the tests start their own
# server on a free loopback port, so the package's is stopped and disabled too.
if [[ " ${missing[*]} " == *" redis-server "* ]]; then
  if [ -d /run/systemd/system ]; then
    systemctl disable --now redis-server.service >/dev/null 2>&1 || true
  else
    service redis-server stop >/dev/null 2>&1 || true
    update-rc.d redis-server disable >/dev/null 2>&1 || true
  fi
fi
exit 0
