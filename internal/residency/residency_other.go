//go:build !linux && !windows

package residency

// dropCode does nothing here: only the heap is returned (macOS reclaims
// clean pages of an idle process on its own).
func dropCode() (Report, error) { return Report{}, nil }
