#!/usr/bin/env bash
# Run every benchmark behind docs/benchmarks.md: the Go micro-benchmarks of
# the agent's hot path, then the system scenarios of ./bench.
#
#   scripts/bench.sh [--quick] [--wait-load L] [--out FILE] [-- extra ./bench flags]
#
# --quick        small sizes (50 agents, 50 round trips, short windows), to
#                check the harness in a couple of minutes
# --wait-load L  first wait (up to 25 min, polling every 60 s) until the
#                1-minute load average is below L, so other work on the
#                machine does not skew the figures
# --out FILE     also write everything to FILE (default: stdout only)
set -euo pipefail

cd "$(dirname "$0")/.."

quick=""
wait_load=""
out=""
extra=()
while [ $# -gt 0 ]; do
	case "$1" in
	--quick) quick="-quick" ;;
	--wait-load) wait_load="$2"; shift ;;
	--out) out="$2"; shift ;;
	--) shift; extra=("$@"); break ;;
	*) echo "usage: $0 [--quick] [--wait-load L] [--out FILE] [-- ./bench flags]" >&2; exit 2 ;;
	esac
	shift
done

if [ -n "$out" ]; then
	exec > >(tee "$out") 2>&1
fi

if [ -n "$wait_load" ]; then
	for _ in $(seq 25); do
		load=$(cut -d' ' -f1 /proc/loadavg)
		if awk -v l="$load" -v max="$wait_load" 'BEGIN { exit !(l < max) }'; then
			break
		fi
		echo "load $load >= $wait_load; waiting 60 s" >&2
		sleep 60
	done
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
go build -o "$work/kanade" .
go build -o "$work/bench" ./bench

echo "# kanade benchmarks, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
"$work/bench" env

echo
echo "## micro-benchmarks (go test -bench)"
benchtime=2000x
[ -n "$quick" ] && benchtime=200x
cmd=(go test -run '^$' -bench 'Put|Add' -benchtime "$benchtime" -count 5
	./internal/winagent/outbox/ ./internal/winagent/dedup/)
echo "command: ${cmd[*]}"
"${cmd[@]}"
rt_runs=5
[ -n "$quick" ] && rt_runs=1
cmd=(go test -run '^$' -bench BenchmarkCommandRoundTrip -benchtime 1x -count "$rt_runs" ./internal/winagent/)
echo "command: ${cmd[*]}"
"${cmd[@]}"

echo
"$work/bench" $quick -kanade "$work/kanade" "${extra[@]}" setup roundtrip hol timeout idle fanout exec storm
