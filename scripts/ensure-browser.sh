#!/usr/bin/env bash
# Makes sure a headless browser is there for the one browser test (a payer
# opening a code_url and pressing Pay): Debian's chromium and its
# chromedriver, installed with apt-get when missing. Never fatal: without a
# browser that test says it skipped, and why.
set -u
log() { printf 'ensure-browser: %s\n' "$*" >&2; }
have() { command -v chromedriver >/dev/null 2>&1 && { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; }

if have; then
  log "chromium and chromedriver are installed"
  exit 0
fi
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1
  fi
}
log "installing chromium and chromium-driver with apt-get"
if as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 ||
   { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 &&
     as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1; }; then
  log "installed"
else
  log "could not install them: the browser test will be skipped"
fi
exit 0
