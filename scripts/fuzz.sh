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
  if ! go test -run='^$' -fuzz="^${fn}\$" -fuzztime="$fuzztime" "$pkg" > /tmp/kanade-fuzz.log 2>&1; then
    cat /tmp/kanade-fuzz.log
    failed=$((failed + 1))
  fi
done < <(git ls-files '*_test.go' | xargs grep -o '^func Fuzz[A-Za-z0-9_]*' | sed 's/func //')
echo "fuzz: $((count - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
