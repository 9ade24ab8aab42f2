package service

import (
	"context"
	"fmt"
	"time"
)

// svcState is a state the service reports to its manager.
type svcState int

const (
	stateStartPending svcState = iota
	stateRunning
	stateStopPending
)

// serve runs the daemon under a service manager's protocol, independent of
// the Windows API so it is tested everywhere: report StartPending, start run,
// report Running, then wait for run to end by itself or for a stop request.
// On a stop it reports StopPending, cancels run's context and waits at most
// stopBudget (the manager's patience) before giving up on it. It returns
// run's result: nil after a requested stop that run honoured, an error
// (with its ExitCode) otherwise.
func serve(run func(ctx context.Context) error, stops <-chan struct{}, report func(svcState), stopBudget time.Duration) error {
	report(stateStartPending)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- fmt.Errorf("agent panicked: %v", p)
			}
		}()
		done <- run(ctx)
	}()
	report(stateRunning)
	select {
	case err := <-done:
		return err
	case <-stops:
	}
	report(stateStopPending)
	cancel()
	select {
	case err := <-done:
		if ExitCode(err) == 0 {
			return nil
		}
		return err
	case <-time.After(stopBudget):
		return fmt.Errorf("the agent did not stop within %s; exiting anyway", stopBudget)
	}
}
