package winagent

import (
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

// A dotted host name still gives a usable default pc id (one subject token),
// while an explicit dotted id is refused (TestAgentRefusesInvalidID).
func TestDefaultIDIsOneToken(t *testing.T) {
	for host, want := range map[string]string{
		"mac.local":        "mac",
		"web1.example.com": "web1",
		"DESKTOP-7Q2":      "DESKTOP-7Q2",
		"":                 "",
	} {
		if got := shortHostName(host); got != want {
			t.Errorf("shortHostName(%q) = %q, want %q", host, got, want)
		}
	}
	if id := DefaultID(); id != "" && !core.ValidToken(id) {
		t.Errorf("DefaultID() = %q is not a subject token", id)
	}
}
