package devbroker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStartRefusesAStoreInUse: two brokers on one store corrupt it (each
// rewrites the other's state files). The second Start must fail at once,
// naming the store and the holder, and the store must be free again once
// the first broker has shut down.
func TestStartRefusesAStoreInUse(t *testing.T) {
	store := t.TempDir()
	first := startForTest(t, Options{StoreDir: store})

	for _, cluster := range []int{1, 3} {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		began := time.Now()
		b, err := Start(ctx, Options{Listen: "127.0.0.1:0", StoreDir: store, Cluster: cluster})
		took := time.Since(began)
		cancel()
		if err == nil {
			b.Shutdown()
			b.WaitForShutdown()
			t.Fatalf("cluster %d: a second broker started on a store in use", cluster)
		}
		if !errors.Is(err, ErrStoreInUse) {
			t.Errorf("cluster %d: error %v is not ErrStoreInUse", cluster, err)
		}
		msg := err.Error()
		for _, want := range []string{store, fmt.Sprintf("pid %d", os.Getpid())} {
			if !strings.Contains(msg, want) {
				t.Errorf("cluster %d: error %q does not name %q", cluster, msg, want)
			}
		}
		if took > 2*time.Second {
			t.Errorf("cluster %d: refusing took %s, want at once", cluster, took)
		}
	}

	// The first broker is untouched by the refusals.
	_, js := jsFor(t, first.ClientURL())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("first broker after the refusals: %v", err)
	}

	first.Shutdown()
	first.WaitForShutdown()
	again := startForTest(t, Options{StoreDir: store})
	again.Shutdown()
	again.WaitForShutdown()
}
