package cmd

import (
	"github.com/spf13/cobra"
)

func init() { register(NewAgentCmd) }

// agentSubcommands are the `kanade agent …` verbs, registered by their own
// files (agent_publish.go, agent_rollout.go, agent_service.go …).
var agentSubcommands []func(*Factory) *cobra.Command

func registerAgent(fn func(*Factory) *cobra.Command) {
	agentSubcommands = append(agentSubcommands, fn)
}

// NewAgentCmd is `kanade agent`: the resident daemon, plus its management verbs.
func NewAgentCmd(f *Factory) *cobra.Command {
	c := &cobra.Command{
		Use:   "agent",
		Short: "Run the resident agent daemon, or manage agents",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			return UsageErrorf("the agent daemon is not built yet")
		},
	}
	for _, add := range agentSubcommands {
		c.AddCommand(add(f))
	}
	return c
}
