#!/usr/bin/env bash
# wine-smoke.sh — run the Windows build of the kanade agent under Wine against
# a local broker and check what a Windows fleet depends on:
#
#   1. heartbeat   a heartbeat on heartbeat.<pc> says os_family "windows"
#   1b. keyring    the command-signing keyring imported into the registry
#                  (HKLM\SOFTWARE\kanade\agent CommandKeys) is what the
#                  heartbeat reports in command_keys, with enforcing false
#   2. cmd         `kanade run <pc> --shell cmd -- echo hello` exits 0 with hello
#   2b. env        `cmd set` shows no KANADE_* or credential-like variable of
#                  the agent's, and does show an ordinary one
#   2c. cmd file   cmd scripts run from a temp .cmd file (docs/windows.md):
#                  every line runs and `exit /b 4` is the exit code; a quoted
#                  program path in a directory with a space gets a spaced
#                  argument; a 20,000-character script runs every line;
#                  non-ASCII output is decoded from the OEM code page, and
#                  read as UTF-8 after `chcp 65001`
#   3. inventory   an inventory message lands on inventory.<pc>.hw (WMI, as far
#                  as Wine answers it) with the heartbeat's hostname
#   4. self-update `kanade agent publish` of a 9.9.2 kanade.exe and `kanade agent
#                  rollout 9.9.2`: the 9.9.1 agent renames its running exe to
#                  .old, exits 64, the script (standing in for the service
#                  manager) starts it again, the new build's heartbeat says
#                  9.9.2, and that heartbeat confirms it to the boot sentinel,
#                  which removes the sentinel and the .old
#   5. rollback    a 9.9.2 start that finds its boot sentinel over budget
#                  renames its own running exe to .rolled-back, puts the
#                  9.9.1 .old back, quarantines 9.9.2 and exits 64; the
#                  restored 9.9.1 heartbeats with quarantined_versions 9.9.2
#
# It installs wine64 and the mingw-w64 compiler when missing (apt-get, as
# root, in CI), makes a fresh WINEPREFIX, puts the bcryptprimitives.dll shim
# in it (Wine 8 lacks ProcessPrng, which Go's runtime needs), builds the Linux
# and Windows binaries, starts `kanade devbroker` on loopback and runs
# `wine kanade.exe agent`. Every wait has a deadline; the whole run is bounded
# by WINE_SMOKE_BUDGET seconds (default 180, not counting a package install).
# It cleans up after itself (KEEP=1 keeps the work dir) and exits non-zero
# with the failed checks named.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

started=$(date +%s)
budget=${WINE_SMOKE_BUDGET:-180}
pc=${WINE_SMOKE_PC:-wine-smoke-pc}
passed=0
failed=0
failures=()

say() { printf 'wine-smoke: %s\n' "$*" >&2; }
fatal() {
  say "FAIL: $*"
  failed=$((failed + 1))
  failures+=("$1")
  exit 1
}
pass() {
  passed=$((passed + 1))
  say "ok: $*"
}
fail() {
  failed=$((failed + 1))
  failures+=("$1")
  say "FAIL: $*"
}
# remaining prints the seconds left in the budget (at least 1).
remaining() {
  local left=$((budget - ($(date +%s) - started)))
  ((left < 1)) && left=1
  echo "$left"
}
# bounded SECONDS CMD... runs CMD with a deadline that never passes the budget.
bounded() {
  local want=$1
  shift
  local left
  left=$(remaining)
  ((want > left)) && want=$left
  timeout --kill-after=5 "$want" "$@"
}

# ---- tools ------------------------------------------------------------------
wine_bin() { command -v wine64 || command -v wine || { [ -x /usr/lib/wine/wine64 ] && echo /usr/lib/wine/wine64; } || true; }
if [ -z "$(wine_bin)" ] || ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing wine64 and gcc-mingw-w64-x86-64"
    install_start=$(date +%s)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wine wine64 gcc-mingw-w64-x86-64 >/dev/null
    # The package install does not count against the smoke test's budget.
    started=$((started + $(date +%s) - install_start))
  else
    say "FAIL: wine64 and x86_64-w64-mingw32-gcc are needed: apt-get install wine64 gcc-mingw-w64-x86-64 (as root)"
    echo "wine-smoke: 0 passed, 1 failed"
    exit 1
  fi
fi
WINE=$(wine_bin)
[ -n "$WINE" ] || { say "FAIL: no wine64 or wine after the install"; exit 1; }
WINESERVER=$(command -v wineserver || command -v wineserver64 || echo /usr/lib/wine/wineserver64)
command -v go >/dev/null || { say "FAIL: go is not on PATH"; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/kanade-wine.XXXXXX")
export WINEPREFIX=$work/prefix WINEARCH=win64 WINEDEBUG=-all
# No Mono or Gecko installer prompts during wineboot; no display needed.
export WINEDLLOVERRIDES="mscoree,mshtml="
unset DISPLAY WAYLAND_DISPLAY

broker_pid=
agent_pid=
boot_pid=
cleanup() {
  local rc=$?
  set +e
  if [ -n "$agent_pid" ]; then kill "$agent_pid" 2>/dev/null; fi
  if [ -n "$boot_pid" ]; then kill "$boot_pid" 2>/dev/null; fi
  # wineserver -k ends every Wine process of this prefix (the agent, any
  # cmd.exe it started, services.exe and friends).
  timeout 20 "$WINESERVER" -k 2>/dev/null
  if [ -n "$agent_pid" ]; then wait "$agent_pid" 2>/dev/null; fi
  if [ -n "$boot_pid" ]; then wait "$boot_pid" 2>/dev/null; fi
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$broker_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$broker_pid" 2>/dev/null
    wait "$broker_pid" 2>/dev/null
  fi
  if ((failed > 0)) && [ -f "$work/agent.log" ]; then
    say "agent log (last 60 lines):"
    tail -n 60 "$work/agent.log" >&2
  fi
  if ((failed > 0)) && [ -f "$work/broker.err" ]; then
    say "broker log (last 20 lines):"
    tail -n 20 "$work/broker.err" >&2
  fi
  if [ "${KEEP:-0}" = 1 ]; then
    say "work dir kept: $work"
  else
    rm -rf "$work"
  fi
  echo "wine-smoke: $passed passed, $failed failed ($(($(date +%s) - started))s)"
  if ((failed > 0)); then
    say "failed: ${failures[*]}"
    exit 1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- prefix and builds, in parallel -------------------------------------------
say "wine: $("$WINE" --version 2>/dev/null || echo unknown), prefix $WINEPREFIX"
bounded 120 "$WINE" wineboot -i >"$work/wineboot.log" 2>&1 &
boot_pid=$!

export GOFLAGS="${GOFLAGS:-} -buildvcs=false"
stamp=github.com/kanadehq/kanade-go/internal/core.Version
bounded 150 go build -o "$work/kanade" . || fatal build "go build (linux) failed"
mkdir -p "$work/install" "$work/release"
GOOS=windows GOARCH=amd64 bounded 150 go build -ldflags "-X $stamp=9.9.1" -o "$work/install/kanade.exe" . ||
  fatal build "go build (windows/amd64, 9.9.1) failed"
cp "$work/install/kanade.exe" "$work/kanade-9.9.1.exe" # the self-update replaces the installed one
GOOS=windows GOARCH=amd64 bounded 150 go build -ldflags "-X $stamp=9.9.2" -o "$work/release/kanade.exe" . ||
  fatal build "go build (windows/amd64, 9.9.2) failed"
bounded 60 go build -o "$work/natswait" scripts/wine/natswait.go || fatal build "go build scripts/wine/natswait.go failed"

boot_rc=0
wait "$boot_pid" || boot_rc=$?
boot_pid=
((boot_rc == 0)) || { cat "$work/wineboot.log" >&2; fatal prefix "wineboot -i failed (exit $boot_rc)"; }
sys32=$WINEPREFIX/drive_c/windows/system32
[ -d "$sys32" ] || fatal prefix "no $sys32 after wineboot"
x86_64-w64-mingw32-gcc -O2 -shared -o "$sys32/bcryptprimitives.dll" scripts/wine/bcryptprimitives.c -ladvapi32 ||
  fatal prefix "building the bcryptprimitives.dll shim failed"
say "prefix and builds ready after $(($(date +%s) - started))s"

# ---- broker -----------------------------------------------------------------
"$work/kanade" devbroker --listen 127.0.0.1:0 --http-port 0 --store "$work/store" \
  >"$work/broker.out" 2>"$work/broker.err" &
broker_pid=$!
url=
deadline=$(($(date +%s) + 30))
while [ -z "$url" ]; do
  url=$(sed -n 's/^export KANADE_NATS_URL=//p' "$work/broker.out" 2>/dev/null | head -n1)
  [ -n "$url" ] && break
  kill -0 "$broker_pid" 2>/dev/null || fatal broker "kanade devbroker exited: $(tail -n 5 "$work/broker.err")"
  (($(date +%s) < deadline)) || fatal broker "kanade devbroker printed no URL within 30s"
  sleep 0.2
done
say "broker at $url"

# ---- the Windows agent under Wine ---------------------------------------------
# Beats every second and no download jitter, set before the agent exists.
bounded 30 "$work/kanade" config set heartbeat_interval=1s target_version_jitter=0s --pc "$pc" --server "$url" >/dev/null 2>"$work/config.err" ||
  fatal config "kanade config set failed: $(cat "$work/config.err")"
# run_agent is the command line that starts the installed agent once.
# LC_ALL=C.UTF-8: Wine then takes an en-US locale, OEM code page 437,
# whatever the host's, so the non-ASCII checks in 2c mean one thing.
run_agent=(env LC_ALL=C.UTF-8 KANADE_NATS_URL="$url" KANADE_AGENT_ID="$pc" 'KANADE_AGENT_DATA_DIR=C:\kanade-data' KANADE_LOG_LEVEL=debug
  SMOKE_API_TOKEN=smoke-secret-value SMOKE_VISIBLE=smoke-visible-value
  "$WINE" "$work/install/kanade.exe" agent)
# start_agent_loop runs the agent in the background, as the service manager
# would: exit code 64 means "start me again".
start_agent_loop() {
  (
    while :; do
      rc=0
      "${run_agent[@]}" || rc=$?
      echo "== wine-smoke: agent exited with code $rc"
      [ "$rc" = 64 ] || exit 0
    done
  ) >>"$work/agent.log" 2>&1 &
  agent_pid=$!
}
# The command-signing keyring in the registry, where Windows agents read it
# (docs/security.md). Not enforced here: the other checks run unsigned.
bounded 30 "$work/kanade" command-key generate --kid smoke-1 --out "$work/smoke-1.key.json" >"$work/keyring-entry.json" 2>"$work/keygen.err" ||
  fatal keyring "kanade command-key generate failed: $(cat "$work/keygen.err")"
keyring_fp=$(sed -n 's/^fingerprint: *//p' "$work/keygen.err")
{
  printf 'Windows Registry Editor Version 5.00\r\n\r\n[HKEY_LOCAL_MACHINE\\SOFTWARE\\kanade\\agent]\r\n'
  printf '"CommandKeys"="[%s]"\r\n' "$(tr -d '\n' <"$work/keyring-entry.json" | sed 's/\\/\\\\/g; s/"/\\"/g')"
} >"$work/keyring.reg"
bounded 60 "$WINE" regedit /s "Z:${work//\//\\}\\keyring.reg" >"$work/regedit.log" 2>&1 ||
  fatal keyring "regedit /s keyring.reg failed: $(tail -n 5 "$work/regedit.log")"
start_agent_loop
agent_started=$(date +%s)

# 1. heartbeat from a windows agent
if hb=$(bounded 60 "$work/natswait" -s "$url" -subject "heartbeat.$pc" -timeout "$(remaining)s"); then
  if grep -q '"os_family":"windows"' <<<"$hb"; then
    pass "heartbeat after $(($(date +%s) - agent_started))s: $hb"
  else
    fail heartbeat "heartbeat without os_family windows: $hb"
  fi
else
  fail heartbeat "no heartbeat on heartbeat.$pc within 60s"
fi

# 1b. the keyring the agent read from the registry
if [ -n "${hb:-}" ]; then
  if grep -qF "\"command_keys\":[\"smoke-1:$keyring_fp\"]" <<<"$hb" && grep -qF '"enforcing":false' <<<"$hb"; then
    pass "heartbeat reports the registry keyring smoke-1:$keyring_fp, not enforcing"
  else
    fail keyring "heartbeat without command_keys [smoke-1:$keyring_fp] and enforcing false: $hb"
  fi
else
  fail keyring "skipped: no heartbeat"
fi

# 2. a cmd command round trip
if ((failed == 0)); then
  if out=$(bounded 90 "$work/kanade" run "$pc" --shell cmd --timeout 60 --wait 75s --server "$url" -- echo hello 2>"$work/run.err"); then
    if grep -q hello <<<"$out"; then
      pass "kanade run --shell cmd -- echo hello: $(tr '\n' ' ' <<<"$out")"
    else
      fail cmd "exit 0 but no hello in stdout: $out"
    fi
  else
    fail cmd "kanade run exited $?: stdout: $out; stderr: $(cat "$work/run.err")"
  fi
else
  fail cmd "skipped: the agent never sent a heartbeat"
fi

# 2b. scripts get a clean environment: the agent's KANADE_* settings and any
# credential-like variable are withheld, the rest is kept
if ((failed == 0)); then
  if out=$(bounded 90 "$work/kanade" run "$pc" --shell cmd --timeout 60 --wait 75s --server "$url" -- set 2>"$work/env.err"); then
    if grep -qi 'smoke-secret-value\|KANADE_NATS_URL\|KANADE_AGENT_ID' <<<"$out"; then
      fail env "a withheld variable reached the script: $(grep -i 'smoke-secret\|KANADE_' <<<"$out" | tr '\n' ' ')"
    elif ! grep -q 'SMOKE_VISIBLE=smoke-visible-value' <<<"$out"; then
      fail env "an ordinary variable did not reach the script: $(head -c 400 <<<"$out")"
    else
      pass "cmd set: KANADE_* and SMOKE_API_TOKEN withheld, SMOKE_VISIBLE kept"
    fi
  else
    fail env "kanade run exited $?: $(cat "$work/env.err")"
  fi
else
  fail env "skipped: the agent never sent a heartbeat"
fi

# 2c. cmd scripts run from a temp .cmd file. cmd_run NAME SCRIPT runs SCRIPT
# (read from stdin by kanade run) and sets out (stdout) and rc (exit code).
cmd_run() {
  rc=0
  out=$(printf '%s' "$2" | bounded 90 "$work/kanade" run "$pc" --shell cmd --timeout 60 --wait 75s --server "$url" -- - 2>"$work/$1.err") || rc=$?
}
# check_cmd NAME WANT_RC WANT_TEXT...: every WANT_TEXT is a line of stdout.
check_cmd() {
  local name=$1 want_rc=$2 text
  shift 2
  if [ "$rc" != "$want_rc" ]; then
    fail "$name" "exit $rc, want $want_rc: stdout: $(head -c 300 <<<"$out"); stderr: $(tail -c 300 "$work/$name.err")"
    return
  fi
  for text in "$@"; do
    if ! tr -d '\r' <<<"$out" | grep -qxF -- "$text"; then
      fail "$name" "no line \"$text\" in stdout: $(head -c 300 <<<"$out")"
      return
    fi
  done
  pass "$name: exit $rc, $(tr -d '\r' <<<"$out" | tr '\n' ' ' | head -c 120)"
}
if ((failed == 0)); then
  cmd_run cmd-lines $'echo l1\necho l2\nexit /b 4\necho never'
  check_cmd cmd-lines 4 l1 l2

  # Without /S, cmd /C stripped this line's first and last quote: 9009.
  mkdir -p "$WINEPREFIX/drive_c/Program Files/Kanade Test"
  printf '@echo off\r\necho arg1=[%%~1]\r\n' >"$WINEPREFIX/drive_c/Program Files/Kanade Test/echoargs.cmd"
  cmd_run cmd-quoted '"C:\Program Files\Kanade Test\echoargs.cmd" "hello world"'
  check_cmd cmd-quoted 0 'arg1=[hello world]'

  # Past cmd's 8,191-character command line: every line runs.
  long=$'set n=0\n'
  lines=0
  while ((${#long} < 20000)); do
    long+=$'set /a n+=1 >nul\n'
    lines=$((lines + 1))
  done
  long+='echo n=%n%'
  cmd_run cmd-long "$long"
  check_cmd cmd-long 0 "n=$lines"

  # Written and printed in the OEM code page (437 here).
  cmd_run cmd-oem 'echo héllo wörld'
  check_cmd cmd-oem 0 'héllo wörld'

  # Printed after chcp 65001: UTF-8. (Wine's cmd reads the file in the OEM
  # page whatever chcp says, so the text is set before the chcp line.)
  cmd_run cmd-chcp $'set "w=grüße"\nchcp 65001 >nul\necho %w%'
  check_cmd cmd-chcp 0 'grüße'
else
  fail cmd-file "skipped after an earlier failure"
fi

# 3. hardware inventory stored on inventory.<pc>.hw, naming the host as the
# heartbeat does (the NetBIOS name, docs/windows.md)
if ! kill -0 "$agent_pid" 2>/dev/null; then
  fail inventory "skipped: the agent process is gone"
elif inv=$(bounded 60 "$work/natswait" -s "$url" -stream INVENTORY -subject "inventory.$pc.hw" -timeout "$(remaining)s"); then
  hb_host=$(grep -o '"hostname":"[^"]*"' <<<"$hb" || true)
  inv_host=$(grep -o '"hostname":"[^"]*"' <<<"$inv" || true)
  if ! grep -q "\"pc_id\":\"$pc\"" <<<"$inv"; then
    fail inventory "inventory message for another pc: $inv"
  elif [ -z "$inv_host" ] || [ "$hb_host" != "$inv_host" ]; then
    fail inventory "heartbeat ${hb_host:-without hostname}, inventory ${inv_host:-without hostname}: want the same name"
  else
    pass "inventory.$pc.hw ($inv_host, as the heartbeat): $inv"
  fi
else
  fail inventory "no message stored on inventory.$pc.hw within 60s"
fi

# 4. self-update of the Windows build
if ((failed > 0)); then
  fail self-update "skipped after an earlier failure"
elif ! grep -q '"agent_version":"9.9.1"' <<<"$hb"; then
  fail self-update "the installed build reports $(grep -o '"agent_version":"[^"]*"' <<<"$hb"), want 9.9.1"
elif ! bounded 90 "$work/kanade" agent publish "$work/release/kanade.exe" --server "$url" >"$work/publish.out" 2>&1; then
  fail self-update "kanade agent publish failed: $(cat "$work/publish.out")"
else
  rolled_out=$(date +%s.%N)
  bounded 30 "$work/kanade" agent rollout 9.9.2 --pc "$pc" --server "$url" >/dev/null 2>"$work/rollout.err" ||
    fail self-update "kanade agent rollout failed: $(cat "$work/rollout.err")"
  if ((failed == 0)) && hb2=$(bounded 90 "$work/natswait" -s "$url" -subject "heartbeat.$pc" -match '"agent_version":"9.9.2"' -timeout "$(remaining)s"); then
    took=$(awk -v a="$rolled_out" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    exits=$(grep -c '^== wine-smoke: agent exited with code 64' "$work/agent.log" || true)
    if [ "$exits" != 1 ]; then
      fail self-update "9.9.2 is running but the agent exited with 64 $exits times"
    elif ! cmp -s "$work/install/kanade.exe" "$work/release/kanade.exe"; then
      fail self-update "9.9.2 heartbeat, but install/kanade.exe is not the published build"
    else
      # The confirmation follows the heartbeat's ack: give it a moment.
      for _ in $(seq 100); do
        [ -e "$work/install/kanade.exe.old" ] || [ -e "$work/install/kanade.exe.boot-sentinel.json" ] || break
        sleep 0.1
      done
      if [ -e "$work/install/kanade.exe.old" ] || [ -e "$work/install/kanade.exe.boot-sentinel.json" ]; then
        fail self-update "10s after its heartbeat the new build still has: $(cd "$work/install" && ls kanade.exe.*)"
      else
        pass "self-update 9.9.1 -> 9.9.2 (exit 64, restart, confirmed: sentinel and .old removed): rollout to the 9.9.2 heartbeat ${took}s"
      fi
    fi
  elif ((failed == 0)); then
    fail self-update "no heartbeat from 9.9.2 within 90s of the rollout"
  fi
fi

kill -0 "$agent_pid" 2>/dev/null || fail agent "the agent process died during the checks"

# 5. boot sentinel rollback on Windows, where the running exe can be renamed
# but not deleted. The budget check itself is the same on every OS (go test
# ./internal/winagent/update/ -run TestBoot); here a sentinel left over
# budget stands in for three crashed starts of 9.9.2.
if ((failed > 0)); then
  fail rollback "skipped after an earlier failure"
else
  # End the agent and its loop (the loop stops on any exit code but 64).
  timeout 20 "$WINESERVER" -k 2>/dev/null || true
  wait "$agent_pid" 2>/dev/null || true
  agent_pid=
  cp "$work/kanade-9.9.1.exe" "$work/install/kanade.exe.old"
  printf '{"version":"9.9.2","previous_version":"9.9.1","data_dir":"C:\\\\kanade-data","attempts":%d}' 3 \
    >"$work/install/kanade.exe.boot-sentinel.json"
  rc=0
  bounded 60 "${run_agent[@]}" >"$work/rollback.log" 2>&1 || rc=$?
  quarantine=$WINEPREFIX/drive_c/kanade-data/self-update.json
  if [ "$rc" != 64 ]; then
    fail rollback "the over-budget start exited $rc, want 64: $(tail -n 5 "$work/rollback.log")"
  elif ! cmp -s "$work/install/kanade.exe" "$work/kanade-9.9.1.exe"; then
    fail rollback "install/kanade.exe is not the 9.9.1 build after the rollback: $(tail -n 5 "$work/rollback.log")"
  elif ! cmp -s "$work/install/kanade.exe.rolled-back" "$work/release/kanade.exe"; then
    fail rollback "the failed 9.9.2 build is not kanade.exe.rolled-back"
  elif ! grep -q '"failed_target":"9.9.2"' "$quarantine" 2>/dev/null || ! grep -q '"quarantined":true' "$quarantine"; then
    fail rollback "9.9.2 not quarantined in C:\kanade-data\self-update.json: $(cat "$quarantine" 2>/dev/null)"
  else
    start_agent_loop
    if hb3=$(bounded 60 "$work/natswait" -s "$url" -subject "heartbeat.$pc" -match '"quarantined_versions":["9.9.2"]' -timeout "$(remaining)s"); then
      if ! grep -q '"agent_version":"9.9.1"' <<<"$hb3"; then
        fail rollback "the quarantine heartbeat is not from 9.9.1: $hb3"
      elif [ -e "$work/install/kanade.exe.rolled-back" ]; then
        fail rollback "the restored build did not remove kanade.exe.rolled-back at its start"
      else
        pass "rollback 9.9.2 -> 9.9.1 (running exe renamed, exit 64, restart): $hb3"
      fi
    else
      fail rollback "no heartbeat with quarantined_versions [9.9.2] from the restored build within 60s"
    fi
  fi
fi
