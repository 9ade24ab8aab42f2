#!/usr/bin/env bash
# Regenerate the committed reference (completions/, docs/cli/, docs/man/)
# from the command tree. cmd/generated_test.go fails until this has been run
# after a command, flag or help text changes.
set -euo pipefail
cd "$(dirname "$0")/.."
exec go run ./internal/gendocs "$@"
