package cmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
)

// Main runs kanade with the process's arguments and returns the exit code.
func Main() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	io := cmdutil.SystemIO()
	root := NewRootCmd(&cmdutil.Factory{IO: io})
	err := root.ExecuteContext(ctx)
	return ReportError(io.ErrOut, err)
}

// ReportError prints err as `error: …` plus a hint line and returns the exit code.
func ReportError(w io.Writer, err error) int {
	if err == nil {
		return cmdutil.ExitOK
	}
	var ee *cmdutil.ExitError
	if errors.As(err, &ee) && ee.Err == nil {
		return ee.Code
	}
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(w, "interrupted")
		return 130
	}
	fmt.Fprintf(w, "error: %v\n", err)
	if h := hintFor(err); h != "" {
		fmt.Fprintf(w, "hint: %s\n", h)
	}
	switch {
	case ee != nil:
		return ee.Code
	case isUsage(err):
		return cmdutil.ExitUsage
	}
	return cmdutil.ExitFailure
}

// isUntrustedServerCert reports a TLS handshake that failed because the
// broker's certificate did not verify.
func isUntrustedServerCert(err error) bool {
	var verr *tls.CertificateVerificationError
	var unknown x509.UnknownAuthorityError
	return errors.As(err, &verr) || errors.As(err, &unknown)
}

// isClientCertRefused reports a handshake the broker ended because the
// client sent no certificate, or one it does not accept. crypto/tls reports
// a peer's alert as an unexported type, so its text is what can be matched;
// with TLS 1.3 the client may instead see the connection closed right after
// the handshake, which nats.go words as below.
func isClientCertRefused(err error) bool {
	s := err.Error()
	return strings.Contains(s, "remote error: tls: certificate required") ||
		strings.Contains(s, "remote error: tls: bad certificate") ||
		strings.Contains(s, "connection closed by remote after TLS handshake")
}

func isUsage(err error) bool {
	var ue *cmdutil.UsageError
	if errors.As(err, &ue) {
		return true
	}
	// cobra's own argument errors are plain errors.
	return false
}

// hintFor picks the fix for well-known failures.
func hintFor(err error) string {
	var he *cmdutil.HintError
	if errors.As(err, &he) {
		return he.Hint
	}
	var afe *core.AuthFileError
	switch {
	case errors.As(err, &afe):
		return authFileHint(afe.Flag)
	case errors.Is(err, core.ErrInvalidURL):
		return "write --server (or KANADE_NATS_URL) as nats://host:port, several comma separated; percent-encode special characters in a user, password or token"
	case isUntrustedServerCert(err):
		return "the broker's TLS certificate is not trusted: pass --tls-ca with the CA that signed it"
	case isClientCertRefused(err):
		return "the broker wants a client certificate: pass --tls-cert and --tls-key (signed by a CA it trusts)"
	case errors.Is(err, core.ErrBrokerUnreachable):
		return "is the broker running? start one with `kanade devbroker`, or point --server / KANADE_NATS_URL at yours"
	case errors.Is(err, core.ErrInsufficientResources):
		return "rerun with `kanade jetstream setup --profile dev`, or give JetStream more disk (max_file_store)"
	case errors.Is(err, jetstream.ErrStreamNotFound), errors.Is(err, jetstream.ErrBucketNotFound):
		return "run `kanade jetstream setup` first"
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled), errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount):
		return "the broker runs without JetStream: start nats-server with -js (or use `kanade devbroker`)"
	case errors.Is(err, nats.ErrNoResponders):
		return "nobody answered: is the agent online? pc ids are case-sensitive"
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrPermissionViolation):
		return "check the credentials (--creds, --nkey, --user/--password, KANADE_NATS_TOKEN) and their permissions"
	}
	return ""
}

// authFileHint says what file each connection flag wants.
func authFileHint(flag string) string {
	switch flag {
	case "--creds":
		return "pass --creds (or NATS_CREDS) the .creds file issued for this user (`nsc generate creds`): it holds a user JWT and its nkey seed"
	case "--nkey":
		return "pass --nkey a file holding a user nkey seed (it starts with SU; `nk -gen user` makes one)"
	case "--tls-ca":
		return "pass --tls-ca the PEM file of the CA that signed the broker's certificate"
	case "--tls-cert", "--tls-key":
		return "pass --tls-cert and --tls-key a PEM client certificate and the private key that belongs to it"
	}
	return "check the file named by " + flag
}
