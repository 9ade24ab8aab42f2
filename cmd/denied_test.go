package cmd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/nats-io/nats.go"
)

func TestDeniedError(t *testing.T) {
	violation := fmt.Errorf("%w: %s", nats.ErrPermissionViolation, `Permissions Violation for Publish to "$KV.agent_config.global"`)
	for _, tc := range []struct {
		name string
		op   error
		want string
	}{
		{"cancelled by the refusal", fmt.Errorf("write agent_config/global: %w", context.Canceled), `write agent_config/global: permission denied: publish to "$KV.agent_config.global"`},
		{"bare cancellation", context.Canceled, `permission denied: publish to "$KV.agent_config.global"`},
		{"no failure seen", nil, `permission denied: publish to "$KV.agent_config.global"`},
		{"other failure", errors.New("read x: boom"), `read x: boom: permission denied: publish to "$KV.agent_config.global"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := &deniedError{op: tc.op, denied: cmdutil.WithHint(violation, "fix it")}
			if err.Error() != tc.want {
				t.Fatalf("Error() = %q, want %q", err.Error(), tc.want)
			}
			if !errors.Is(err, nats.ErrPermissionViolation) {
				t.Fatal("does not wrap nats.ErrPermissionViolation")
			}
			if errors.Is(err, context.Canceled) {
				t.Fatal("a refusal reads as the user's interrupt")
			}
			var buf bytes.Buffer
			if code := ReportError(&buf, err); code != cmdutil.ExitFailure {
				t.Fatalf("exit code %d, want %d", code, cmdutil.ExitFailure)
			}
			if want := "error: " + tc.want + "\nhint: fix it\n"; buf.String() != want {
				t.Fatalf("report:\n%s\nwant:\n%s", buf.String(), want)
			}
		})
	}
	if got := deniedText(errors.New("nats: permissions violation: Permissions Violation for ")); got != "nats: permissions violation: Permissions Violation for " {
		t.Fatalf("deniedText of a truncated message = %q", got)
	}
}
