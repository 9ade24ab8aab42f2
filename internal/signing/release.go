package signing

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// Release signatures are this project's addition (upstream signs no agent
// release). `kanade agent publish` signs a statement naming the object and
// the object store's own digest of its bytes, and stores the four signature
// headers on the object (ObjectMeta.Headers), beside the digest they cover.
// Peers that do not know about them ignore object headers, so nothing
// changes for them. An agent verifies the statement it builds from the
// object it fetched, before downloading it; the download is then checked
// against the same digest, so a valid signature vouches for the bytes that
// run. The name is in the statement so a signed release cannot be copied
// under another version's key.

// releaseStatementKind tags the signed statement.
const releaseStatementKind = "kanade.release.v1"

// ReleaseStatement is the bytes a release signature covers: a JSON object
// of the kind, the object's name in agent_releases and its digest
// ("SHA-256=<base64url>", as the object store reports it).
func ReleaseStatement(name, digest string) []byte {
	b, _ := json.Marshal(struct {
		Kind   string `json:"kind"`
		Name   string `json:"name"`
		Digest string `json:"digest"`
	}{releaseStatementKind, name, digest}) // strings always encode
	return b
}

// SignRelease signs the release object name with digest as of at.
func (s *Signer) SignRelease(name, digest string, at time.Time) Headers {
	return s.Sign(ReleaseStatement(name, digest), at)
}

// VerifyRelease checks the signature headers of release object name with
// digest against ring at now (a break-glass key's bound applies, so a
// release signed with one expires with it).
func VerifyRelease(ring *Keyring, name, digest string, h nats.Header, now time.Time) (Authentic, error) {
	return Verify(ring, ReleaseStatement(name, digest), FromNATS(h), now)
}
