#!/usr/bin/env bash
# Validate goreleaser.yaml with the pinned goreleaser release (fetched through
# the Go module proxy; nothing to install). Pass --snapshot to also build
# every release archive into dist/ without publishing.
set -euo pipefail
cd "$(dirname "$0")/.."
GORELEASER="github.com/goreleaser/goreleaser/v2@v2.15.1"
go run "$GORELEASER" check
if [[ "${1:-}" == "--snapshot" ]]; then
	go run "$GORELEASER" release --snapshot --clean --skip=publish
fi
