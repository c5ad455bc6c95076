package embednats_test

import (
	"testing"
	"time"

	"github.com/eryx-dev/eryx/internal/embednats"
)

// TestSyncPolicy: the policy reaches the server's JetStream configuration,
// and a policy the server would not understand is refused.
func TestSyncPolicy(t *testing.T) {
	tests := []struct {
		sync     string
		always   bool
		interval time.Duration // 0: the server's default, whatever it is
	}{
		{"", false, 0},
		{"always", true, 0},
		{"250ms", false, 250 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.sync, func(t *testing.T) {
			ns, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Sync: tt.sync})
			if err != nil {
				t.Fatal(err)
			}
			defer ns.Shutdown()
			cfg := ns.JetStreamConfig()
			if cfg.SyncAlways != tt.always || (tt.interval != 0 && cfg.SyncInterval != tt.interval) {
				t.Fatalf("sync %q: server has always=%v interval=%v", tt.sync, cfg.SyncAlways, cfg.SyncInterval)
			}
		})
	}
	for _, bad := range []string{"sometimes", "-1s", "0s"} {
		if _, err := embednats.Start(embednats.Options{Listen: "127.0.0.1:-1", StoreDir: t.TempDir(), Sync: bad}); err == nil {
			t.Errorf("sync %q accepted", bad)
		}
	}
}
