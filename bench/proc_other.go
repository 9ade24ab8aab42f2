//go:build !linux

package main

import (
	"errors"
	"time"
)

// The process figures come from /proc; elsewhere the scenarios that need
// them fail with this error (the benchmarks are specified for Linux).
var errNoProc = errors.New("process figures need Linux /proc")

func procCPU(int) (time.Duration, error)          { return 0, errNoProc }
func procStatus(int) (map[string]int64, error)    { return nil, errNoProc }
func selfCPU() (time.Duration, error)             { return 0, errNoProc }
func procTasks(int) (time.Duration, int64, error) { return 0, 0, errNoProc }
func loadAvg() string                             { return "unknown" }
func load1() float64                              { return -1 }
