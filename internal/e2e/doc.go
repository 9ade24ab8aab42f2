// Package e2e holds end-to-end tests that build the real kanade binary and
// drive it as an operator and a service manager would: the agent's
// self-update across a process restart (selfupdate_test.go). It has no
// code of its own.
package e2e
