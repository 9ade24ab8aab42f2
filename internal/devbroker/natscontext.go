package devbroker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/jsm.go/natscontext"
)

// contextDescription starts the description of every nats context a dev
// broker writes: a later start may replace such a context, and no other.
const contextDescription = "written by kanade devbroker"

// ErrContextNotOurs is returned when the nats context to write exists and
// was not written by a dev broker: it is the user's, and is left alone.
var ErrContextNotOurs = errors.New("the nats context exists and was not written by kanade devbroker")

// ContextSettings are what a dev broker's nats context holds.
type ContextSettings struct {
	// URL is the client URL, a comma list for a cluster.
	URL string
	// Token, or User and Password, as the broker's --auth asks; empty for none.
	Token, User, Password string
	// Store is named in the description, to tell brokers apart.
	Store string
}

// ValidContextName checks name is one the nats CLI accepts for a context.
func ValidContextName(name string) error {
	_, err := natscontext.ContextPath(name)
	return err
}

// WriteNATSContext saves the nats context name (in the nats CLI's store:
// $XDG_CONFIG_HOME/nats/context, else ~/.config/nats/context, mode 0600)
// so `nats --context name …` and `kanade --context name …` reach the
// broker, and returns the file's path. It replaces a context an earlier
// dev broker wrote (passwords change at every start) and refuses any
// other with ErrContextNotOurs. It does not select the context.
func WriteNATSContext(name string, s ContextSettings) (string, error) {
	path, err := natscontext.ContextPath(name)
	if err != nil {
		return "", err
	}
	if natscontext.IsKnown(name) {
		old, err := natscontext.New(name, true)
		if err != nil {
			return "", fmt.Errorf("read the existing nats context %q: %w", name, err)
		}
		if !strings.HasPrefix(old.Description(), contextDescription) {
			return "", fmt.Errorf("%w: %s", ErrContextNotOurs, path)
		}
	}
	desc := contextDescription
	if s.Store != "" {
		desc += " (store " + s.Store + ")"
	}
	c, err := natscontext.New(name, false,
		natscontext.WithServerURL(s.URL), natscontext.WithDescription(desc),
		natscontext.WithToken(s.Token), natscontext.WithUser(s.User), natscontext.WithPassword(s.Password))
	if err != nil {
		return "", err
	}
	if err := c.Save(name); err != nil {
		return "", fmt.Errorf("write nats context %q: %w", name, err)
	}
	return path, nil
}
