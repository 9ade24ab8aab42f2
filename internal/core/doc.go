// Package core is the single home of kanade's contract with the fleet: subject
// names, wire types, the JetStream resource list, connection handling and the
// offline-tolerant retry helpers. Every wire name used anywhere in the binary is
// spelled exactly once, in this package, and matches upstream kanadehq/kanade.
//
// The files follow the contract's sections:
//
//   - names.go: subjects, stream / bucket / object store names, KV keys,
//     the replay consumer name, exit codes (SPEC §3, §4, §5).
//   - wire.go: the JSON wire types and their decode and encode rules (SPEC
//     §4): unknown fields ignored, optional fields null or omitted exactly as
//     upstream writes them, times in UTC.
//   - duration.go: humantime durations ("30s", "1d", "2h 30m").
//   - resources.go: the one list of JetStream resources and Plan, Setup and
//     DeleteResource over it (SPEC §5).
//   - connect.go, tracker.go, retry.go: the broker connection, its state,
//     and the Wait* helpers that retry until a resource is there (SPEC §6.2).
//   - version.go: the running build's version and release keys.
//
// The golden wire examples live in testdata/ (copied from shared/fixtures);
// the tests round-trip every one of them.
package core
