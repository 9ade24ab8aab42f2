package cmdutil

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/signing"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// PCHint is the hint when a pc does not answer.
const PCHint = "is the agent online? pc ids are case-sensitive (see `kanade status`)"

// PublishCommand publishes body on every subject through JetStream, so EXEC
// keeps it for agents that are offline. When a signing key is configured
// (CommandSigner: the environment or the CLI config's key file) the command
// is signed now, over these exact bytes (SPEC-2 §5); with none it goes
// unsigned, without any Kanade-Sig* header. A signing key that is
// configured but unusable is an error: nothing is published unsigned.
func PublishCommand(ctx context.Context, js jetstream.JetStream, subjects []string, body []byte) error {
	signer, err := CommandSigner(ctx)
	if err != nil {
		return err
	}
	var sig signing.Headers
	if signer != nil {
		sig = signer.Sign(body, time.Now())
	}
	for _, subject := range subjects {
		msg := nats.NewMsg(subject)
		msg.Data = body
		if signer != nil {
			sig.Apply(msg)
		}
		if _, err := js.PublishMsg(ctx, msg); err != nil {
			if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
				return WithHint(fmt.Errorf("publish the command on %s: no stream %s stores it: %w", subject, core.StreamExec, err),
					"run `kanade jetstream setup` first")
			}
			return fmt.Errorf("publish the command on %s: %w", subject, err)
		}
	}
	return nil
}

// ProcessExitCode maps a script's exit code to a process exit status: 0-255
// as is, anything else (-1 killed or timed out, large Windows codes) 255, so
// a failure never wraps around to 0.
func ProcessExitCode(code int) int {
	if code >= 0 && code <= 255 {
		return code
	}
	return 255
}
