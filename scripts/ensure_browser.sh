#!/usr/bin/env bash
# Make sure a Chromium is there for the browser tests (run by `make test`). Playwright's own
# download (`playwright install`) needs the internet at large; the system's package does not.
set -uo pipefail
for b in "${ADAEDU_CHROMIUM:-}" chromium chromium-browser google-chrome google-chrome-stable; do
  if [ -n "$b" ] && command -v "$b" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium for the browser tests (apt-get install chromium) ..."
  if apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    exit 0
  fi
  echo "apt-get could not install chromium" >&2
fi
echo "no Chromium for the browser tests: install it (Debian/Ubuntu: sudo apt-get install chromium)," >&2
echo "or set ADAEDU_CHROMIUM to a Chromium or Chrome binary; without one they skip (fail under CI=true)." >&2
exit 0
