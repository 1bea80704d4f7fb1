#!/usr/bin/env bash
# The seed's websocat flow, non-interactively: connect, `ping` -> `pong`, join general, send
# "Hello from terminal" and read it back from the room.
#
# Usage: seed_flow.sh ws://HOST:PORT/
#
# websocat runs as a coprocess with the seed's flags (none): each line written to it is one text message,
# each message received is one line read from it. Like the seed's interactive session, websocat 1.x sends
# each line with its trailing newline (`ping\n`); the JSON parser ignores it, the raw `ping` has to as well. Every read waits at most READ_DEADLINE seconds; any mismatch exits 1.
# WEBSOCAT overrides the binary (default: websocat on PATH).
set -euo pipefail

url=${1:?usage: seed_flow.sh ws://HOST:PORT/}
websocat=${WEBSOCAT:-websocat}
READ_DEADLINE=5

command -v "$websocat" >/dev/null || { echo "FAIL: $websocat not found (tests/run installs it)" >&2; exit 1; }

coproc WS { exec "$websocat" --text "$url" 2>&1; }
ws_pid=$WS_PID
ws_out=${WS[0]}
ws_in=${WS[1]}
trap 'kill "$ws_pid" 2>/dev/null || true' EXIT

expect() {
  local expected=$1 hint=${2:+ ($2)} got
  if ! IFS= read -r -t "$READ_DEADLINE" -u "$ws_out" got; then
    echo "FAIL: expected '$expected', got nothing within ${READ_DEADLINE}s$hint" >&2
    exit 1
  fi
  if [[ "$got" != "$expected" ]]; then
    echo "FAIL: expected '$expected', got '$got'$hint" >&2
    exit 1
  fi
  echo "<- $got"
}

send() {
  echo "-> $1"
  printf '%s\n' "$1" >&"$ws_in"
}

expect "welcome to Vix WebSocket chat"
send 'ping'
ping_hint="websocat sent 'ping' plus its line's trailing newline, as in the seed's interactive session"
expect 'pong' "$ping_hint"
send '{ "type": "room.join", "payload": { "room": "general" } }'
expect 'joined room: general'
# The seed spreads this message over four lines; websocat sends one message per line, so it is one line here.
send '{ "type": "chat.message", "payload": { "room": "general", "text": "Hello from terminal" } }'
expect 'room general: Hello from terminal'

# End of input: websocat sends a close frame and exits once the server has answered it.
exec {ws_in}>&-
rc=0
IFS= read -r -t "$READ_DEADLINE" -u "$ws_out" extra || rc=$?
if ((rc == 0)); then
  echo "FAIL: unexpected output after the flow: '$extra'" >&2
  exit 1
elif ((rc > 128)); then
  echo "FAIL: websocat did not finish the close handshake within ${READ_DEADLINE}s" >&2
  exit 1
fi
trap - EXIT
wait "$ws_pid" || { echo "FAIL: websocat exited with $?" >&2; exit 1; }
echo "seed_flow.sh: websocat flow as in the seed"
