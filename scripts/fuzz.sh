#!/usr/bin/env bash
# Runs every fuzz target in the repository for a bounded time each
# (FUZZTIME, default 5s). CI calls it; locally, raise FUZZTIME to dig deeper:
#   FUZZTIME=2m scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime="${FUZZTIME:-5s}"
failed=0
count=0
while IFS=: read -r file fn; do
  pkg="./$(dirname "$file")"
  count=$((count + 1))
  echo "fuzz $pkg $fn ($fuzztime)"
  ok=0
  for try in 1 2; do
    if go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "$pkg" > /tmp/kanade-fuzz.log 2>&1; then
      ok=1
      break
    fi
    # Go's fuzzing coordinator sometimes reports "context deadline exceeded"
    # when -fuzztime ends while a worker is busy; no input failed then (a
    # real failure says "Failing input written to …"). Run that target once
    # more rather than report a failure no input caused.
    if grep -q 'Failing input' /tmp/kanade-fuzz.log || ! grep -q 'context deadline exceeded' /tmp/kanade-fuzz.log; then
      break
    fi
    echo "fuzz $pkg $fn: the fuzzer hit its deadline without a failing input; running it again"
  done
  if [ "$ok" -eq 0 ]; then
    cat /tmp/kanade-fuzz.log
    failed=$((failed + 1))
  fi
done < <(git ls-files '*_test.go' | xargs grep -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/func //')
echo "fuzz: $((count - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
