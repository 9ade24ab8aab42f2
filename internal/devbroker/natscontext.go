package devbroker

import (
	"errors"
	"fmt"
	"strings"

	"github.com/kanadehq/kanade-go/internal/core"
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
	return core.ValidNATSContextName(name)
}

// WriteNATSContext saves the nats context name (in the nats CLI's store:
// $XDG_CONFIG_HOME/nats/context, else ~/.config/nats/context, mode 0600)
// so `nats --context name …` and `kanade --context name …` reach the
// broker, and returns the file's path. It replaces a context an earlier
// dev broker wrote (passwords change at every start) and refuses any
// other with ErrContextNotOurs. It does not select the context.
func WriteNATSContext(name string, s ContextSettings) (string, error) {
	path, err := core.NATSContextPath(name)
	if err != nil {
		return "", err
	}
	old, _, err := core.ReadNATSContextFile(name)
	switch {
	case errors.Is(err, core.ErrNoSuchContext):
	case err != nil:
		return "", fmt.Errorf("read the existing nats context %q: %w", name, err)
	case !strings.HasPrefix(old.Description, contextDescription):
		return "", fmt.Errorf("%w: %s", ErrContextNotOurs, path)
	}
	desc := contextDescription
	if s.Store != "" {
		desc += " (store " + s.Store + ")"
	}
	path, err = core.SaveNATSContextFile(name, core.NATSContextFile{
		Description: desc, URL: s.URL, Token: s.Token, User: s.User, Password: s.Password,
	})
	if err != nil {
		return "", fmt.Errorf("write nats context %q: %w", name, err)
	}
	return path, nil
}
