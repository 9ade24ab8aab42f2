//go:build !windows && !linux && !darwin

package inventory

// platformSWSources: no software source on this OS yet.
func platformSWSources() []swSource { return nil }
