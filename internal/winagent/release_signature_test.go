package winagent

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// TestReleaseSignatureGatesSelfUpdate: an enforcing agent's updater never
// downloads or runs (not even the smoke test) a release whose signature is
// missing, made by an unknown key, or made over other bytes than the ones
// stored (a release tampered with after publishing); it records the failure
// and leaves the executable alone. A properly signed release is smoke-tested
// and installed; a non-enforcing agent installs the tampered one with a
// warning (as it always has).
func TestReleaseSignatureGatesSelfUpdate(t *testing.T) {
	srv := natstest.Run(t)
	js := natstest.Setup(t, srv.URL())
	ctx := context.Background()
	store, err := js.ObjectStore(ctx, core.ObjectAgentReleases)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	backend, stranger := newTestKey(t, "backend-1", 0), newTestKey(t, "backend-9", 0)
	ring := filepath.Join(dir, "command-keys.json")
	writeRing(t, ring, backend)
	require := filepath.Join(dir, "require")
	writeFile0600(t, require, []byte("yes"))

	// publish stores data under the release key of target, signed by k over
	// signedData (nil k: unsigned), as `kanade agent publish` does.
	publish := func(target string, data, signedData []byte, k *testKey) string {
		t.Helper()
		key := core.ReleaseKeys(target, "linux", "amd64")[0]
		if k != nil {
			// The signature covers the digest of signedData: sign what the
			// store computes for it, then store data under the same name.
			info, err := store.PutBytes(ctx, key, signedData)
			if err != nil {
				t.Fatal(err)
			}
			h := nats.Header{}
			k.SignRelease(key, info.Digest, time.Now()).ApplyTo(h)
			if _, err := store.Put(ctx, jetstream.ObjectMeta{Name: key, Headers: h}, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			return key
		}
		if _, err := store.PutBytes(ctx, key, data); err != nil {
			t.Fatal(err)
		}
		return key
	}

	newUpdater := func(enforce bool) (*update.Updater, *atomic.Int32, string) {
		t.Helper()
		d := t.TempDir()
		exe := filepath.Join(d, "bin", "kanade")
		if err := os.MkdirAll(filepath.Dir(exe), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(exe, []byte("old build"), 0o755); err != nil {
			t.Fatal(err)
		}
		req := filepath.Join(dir, "absent")
		if enforce {
			req = require
		}
		v := newCommandVerifier("pc-1", newLocalKeyringStore(Config{CommandKeysFile: ring, RequireSignedFile: req}), core.RealClock{}, slog.New(slog.DiscardHandler))
		var ran atomic.Int32
		u := &update.Updater{JS: js, DataDir: filepath.Join(d, "data"), ExePath: exe, GOOS: "linux", GOARCH: "amd64",
			CheckRelease: v.checkRelease,
			RunVersion: func(_ context.Context, path string) (string, error) {
				ran.Add(1)
				b, err := os.ReadFile(path)
				return strings.TrimPrefix(string(b), "build "), err
			}}
		return u, &ran, exe
	}

	for _, c := range []struct {
		name       string
		target     string
		data       []byte
		signedData []byte
		key        *testKey
	}{
		{"unsigned", "2.0.1", []byte("build 2.0.1"), nil, nil},
		{"unknown key", "2.0.2", []byte("build 2.0.2"), []byte("build 2.0.2"), &stranger},
		{"tampered after signing", "2.0.3", []byte("build 2.0.3 with a backdoor"), []byte("build 2.0.3"), &backend},
	} {
		t.Run(c.name, func(t *testing.T) {
			publish(c.target, c.data, c.signedData, c.key)
			u, ran, exe := newUpdater(true)
			err := u.Apply(ctx, c.target, 0)
			if !errors.Is(err, update.ErrReleaseSignature) {
				t.Fatalf("Apply = %v, want ErrReleaseSignature", err)
			}
			if ran.Load() != 0 {
				t.Fatal("the refused release was run")
			}
			if b, _ := os.ReadFile(exe); string(b) != "old build" {
				t.Fatalf("executable replaced: %q", b)
			}
			if entries, _ := os.ReadDir(filepath.Join(u.DataDir, "staging")); len(entries) != 0 {
				t.Fatalf("staged: %v", entries)
			}
			if f, ok := u.Tracker().Failed(c.target); !ok || !strings.Contains(f.Error, "signature") {
				t.Fatalf("failure record = %+v, %v", f, ok)
			}
			// Recorded: not tried again until the target or the release changes.
			if err := u.Apply(ctx, c.target, 0); !errors.Is(err, update.ErrPreviouslyFailed) {
				t.Fatalf("second Apply = %v", err)
			}
		})
	}

	t.Run("re-signed after refusal", func(t *testing.T) {
		publish("2.0.4", []byte("build 2.0.4"), nil, nil)
		u, ran, _ := newUpdater(true)
		if err := u.Apply(ctx, "2.0.4", 0); !errors.Is(err, update.ErrReleaseSignature) {
			t.Fatalf("unsigned: %v", err)
		}
		// The operator publishes the same bytes again, signed.
		publish("2.0.4", []byte("build 2.0.4"), []byte("build 2.0.4"), &backend)
		if err := u.Apply(ctx, "2.0.4", 0); !errors.Is(err, update.ErrRestartRequired) {
			t.Fatalf("signed: %v", err)
		}
		if ran.Load() != 1 {
			t.Fatalf("smoke test ran %d times", ran.Load())
		}
	})

	t.Run("signed", func(t *testing.T) {
		publish("2.0.5", []byte("build 2.0.5"), []byte("build 2.0.5"), &backend)
		u, ran, exe := newUpdater(true)
		if err := u.Apply(ctx, "2.0.5", 0); !errors.Is(err, update.ErrRestartRequired) {
			t.Fatalf("Apply = %v", err)
		}
		if b, _ := os.ReadFile(exe); string(b) != "build 2.0.5" || ran.Load() != 1 {
			t.Fatalf("executable %q, smoke tests %d", b, ran.Load())
		}
	})

	t.Run("not enforcing", func(t *testing.T) {
		publish("2.0.6", []byte("build 2.0.6"), []byte("build 2.0.5"), &backend)
		u, ran, _ := newUpdater(false)
		if err := u.Apply(ctx, "2.0.6", 0); !errors.Is(err, update.ErrRestartRequired) || ran.Load() != 1 {
			t.Fatalf("Apply = %v, smoke tests %d", err, ran.Load())
		}
	})
}
