// Package durable holds the one file-system primitive the agent's on-disk
// state shares (admission ledger, outboxes, self-update swap): making a
// create or rename in a directory survive a power cut.
package durable
