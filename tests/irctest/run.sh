#!/bin/sh
# Runs irctest (https://github.com/progval/irctest) against pollchat.
#
#   IRCTEST=/path/to/irctest tests/irctest/run.sh [basic|extended|full] [pytest args...]
#
# IRCTEST is a checkout of irctest whose Python requirements are installed (PYTHON, default
# python3, is the interpreter that has them, e.g. a venv's). POLLCHAT_BIN is the server to test
# (default: target/release/pollchat, or $CARGO_TARGET_DIR/release/pollchat). The controller,
# tests/irctest/pollchat.py, is copied into the checkout as irctest.controllers.pollchat; irctest
# itself is never copied into this repository.
#
# Profiles, by irctest's specification markers. Left out, as irctest's own Makefile does for
# ngircd (and for nearly every server it tests): tests of one implementation's own behaviour
# (implementation-specific), of behaviour the specifications have since dropped (deprecated:
# RFC 1459's NAMES without "=", NAMES with no argument, METADATA 3.2...) and of readings
# stricter than the specifications require (strict); and tests of services (pollchat has none).
# ALL=1 keeps the deprecated and strict tests in, for the complete picture.
#   basic     RFC1459, RFC2812 and ircdocs tests
#   extended  basic, plus the "modern" spec (modern.ircdocs.horse)
#   full      extended, plus IRCv3 (capabilities pollchat does not offer are skipped)
# Further arguments go to pytest, e.g. `-k Lusers`, `-x`, `--tb=short`, `-rf`.
set -eu

profile=${1:-basic}
[ $# -gt 0 ] && shift

case $profile in
basic) specs="RFC1459 or RFC2812 or ircdocs" ;;
extended) specs="RFC1459 or RFC2812 or ircdocs or modern" ;;
full) specs="RFC1459 or RFC2812 or ircdocs or modern or IRCv3" ;;
*)
    echo "usage: IRCTEST=DIR $0 [basic|extended|full] [pytest args...]" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
: "${IRCTEST:?set IRCTEST to a checkout of github.com/progval/irctest}"
: "${PYTHON:=python3}"
: "${POLLCHAT_BIN:=${CARGO_TARGET_DIR:-$repo/target}/release/pollchat}"
case $POLLCHAT_BIN in /*) ;; *) POLLCHAT_BIN=$(pwd)/$POLLCHAT_BIN ;; esac
if [ ! -x "$POLLCHAT_BIN" ]; then
    echo "no pollchat binary at $POLLCHAT_BIN: run cargo build --release or set POLLCHAT_BIN" >&2
    exit 2
fi
export POLLCHAT_BIN
if [ -n "${ALL:-}" ]; then
    extra=""
else
    extra=" and not deprecated and not strict"
fi

cp "$here/pollchat.py" "$IRCTEST/irctest/controllers/pollchat.py"
cd "$IRCTEST"
exec "$PYTHON" -m pytest --controller irctest.controllers.pollchat \
    -m "($specs) and not services and not implementation-specific$extra" "$@"
