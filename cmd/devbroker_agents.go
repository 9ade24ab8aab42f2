package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"

	"github.com/kanadehq/kanade-go/internal/devbroker"
	"github.com/kanadehq/kanade-go/internal/winagent"
)

// devAgentsOptions configure the in-process agents of `kanade devbroker --agents N`.
type devAgentsOptions struct {
	URL, Token, BaseDir string
	// Roles, when set, give each agent its own agent-<pc> user.
	Roles *devbroker.Roles
	N     int
	Log   *slog.Logger
}

// devAgentID is the pc id of in-process agent i (1-based): dev-pc-<i>.
func devAgentID(i int) string { return fmt.Sprintf("dev-pc-%d", i) }

// devAgentMaxConcurrent keeps N in-process agents from each claiming every
// CPU of a laptop.
const devAgentMaxConcurrent = 2

// startDevAgents starts N in-process agents (dev-pc-1..N, each with its own
// data dir under BaseDir) against URL and returns a wait func that returns
// once they have stopped after ctx ends. Each logs through opts.Log with
// its pc id; logs.fetch serves each one's in-memory ring.
func startDevAgents(ctx context.Context, opts devAgentsOptions) (wait func() error, err error) {
	if opts.N <= 0 {
		return func() error { return nil }, nil
	}
	log := opts.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	agents := make([]*winagent.Agent, 0, opts.N)
	for i := 1; i <= opts.N; i++ {
		id := devAgentID(i)
		cfg := winagent.DefaultConfig()
		cfg.ID = id
		cfg.NATSURL = opts.URL
		cfg.Token = opts.Token
		if opts.Roles != nil {
			cred, ok := opts.Roles.Agent(id)
			if !ok {
				return nil, fmt.Errorf("prepare agent %s: the broker has no user for it", id)
			}
			cfg.User, cfg.Password = cred.User, cred.Password
		}
		cfg.DataDir = filepath.Join(opts.BaseDir, id)
		cfg.Log = winagent.LogConfig{Level: "info", KeepDays: 0, Format: "text"}
		cfg.MaxConcurrent = devAgentMaxConcurrent
		a, err := winagent.New(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("prepare agent %s: %w", id, err)
		}
		agents = append(agents, a)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, a := range agents {
		wg.Go(func() {
			if err := a.Run(ctx); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("agent %s: %w", a.ID(), err))
				mu.Unlock()
			}
		})
	}
	log.Info("in-process agents started", "subsystem", "devagents", "count", opts.N, "data", opts.BaseDir)
	return func() error {
		wg.Wait()
		return errors.Join(errs...)
	}, nil
}
