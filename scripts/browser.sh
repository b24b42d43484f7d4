#!/usr/bin/env bash
# Installs headless Chromium for the HTML report's browser test (tests/report/test_html_browser.py)
# when it is missing and Debian's apt can install it; otherwise that test skips. Never fails.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
    || echo "scripts/browser.sh: chromium not installed; the browser test will skip" >&2
fi
exit 0
