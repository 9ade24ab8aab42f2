package winagent

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/natstest"
	"github.com/kanadehq/kanade-go/internal/signing"
)

// signingFleet is a broker with two real agents sharing one keyring file:
// one asked to enforce signatures, one not.
type signingFleet struct {
	nc             *nats.Conn
	js             jetstream.JetStream
	ring           string
	backend, bg    testKey
	enforcing, off *testAgent
}

func newSigningFleet(t *testing.T) *signingFleet {
	t.Helper()
	requireUnix(t)
	_, nc, js := broker(t)
	dir := t.TempDir()
	f := &signingFleet{nc: nc, js: js, ring: filepath.Join(dir, "command-keys.json"),
		backend: newTestKey(t, "backend-1", 0), bg: newTestKey(t, "break-glass-1", 15*time.Minute)}
	writeRing(t, f.ring, f.backend, f.bg)
	require := filepath.Join(dir, "require-signed-commands")
	writeFile0600(t, require, []byte("1\n"))
	f.enforcing = newTestAgent(t, nc.ConnectedUrl(), func(c *Config) {
		c.ID, c.CommandKeysFile, c.RequireSignedFile = "pc-enforcing", f.ring, require
	}).start()
	f.off = newTestAgent(t, nc.ConnectedUrl(), func(c *Config) {
		c.ID, c.CommandKeysFile, c.RequireSignedFile = "pc-relaxed", f.ring, filepath.Join(dir, "absent")
	}).start()
	f.enforcing.waitReady(nc, js)
	f.off.waitReady(nc, js)
	return f
}

// publish sends body with hdr to pc's command subject through JetStream,
// so the agent sees it on its live subscription and its replay consumer.
func (f *signingFleet) publish(t *testing.T, pc string, body []byte, hdr nats.Header) {
	t.Helper()
	m := nats.NewMsg(core.SubjectCommandsPC(pc))
	m.Data, m.Header = body, hdr
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.js.PublishMsg(ctx, m); err != nil {
		t.Fatalf("publish to %s: %v", pc, err)
	}
}

func encode(t *testing.T, c core.Command) []byte {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestSignedCommandsEnforced runs each signature case on an enforcing and a
// non-enforcing agent: a verified command runs on both; unsigned, wrong
// key, tampered body, tampered signing time, stale break-glass and unknown
// key are refused with 123 (and the deterministic result_id) on the first
// and run on the second. The refusal is decided on both intake paths and
// does not consume the request id.
func TestSignedCommandsEnforced(t *testing.T) {
	f := newSigningFleet(t)
	stranger := newTestKey(t, "backend-9", 0)
	impostor := newTestKey(t, "backend-1", 0) // the right kid, another key
	now := time.Now()
	cases := []struct {
		name string
		// msg returns the bytes published and their headers for command c.
		msg    func(c core.Command) ([]byte, nats.Header)
		refuse string // what the enforcing agent's stderr says; "" runs
	}{
		{"signed", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			return b, signedHeader(f.backend, b, now)
		}, ""},
		{"break-glass fresh", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			return b, signedHeader(f.bg, b, now.Add(-time.Minute))
		}, ""},
		{"unsigned", func(c core.Command) ([]byte, nats.Header) { return encode(t, c), nil }, "no signature"},
		{"wrong key", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			return b, signedHeader(impostor, b, now)
		}, "does not match"},
		{"tampered body", func(c core.Command) ([]byte, nats.Header) {
			h := signedHeader(f.backend, encode(t, c), now)
			c.Script = "echo tampered"
			return encode(t, c), h
		}, "does not match"},
		{"tampered at", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			h := signedHeader(f.backend, b, now.Add(-time.Hour))
			h.Set(core.HeaderSigAt, strconv.FormatInt(now.UnixMilli(), 10))
			return b, h
		}, "does not match"},
		{"stale break-glass", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			return b, signedHeader(f.bg, b, now.Add(-20*time.Minute))
		}, "freshness"},
		{"unknown kid", func(c core.Command) ([]byte, nats.Header) {
			b := encode(t, c)
			return b, signedHeader(stranger, b, now)
		}, "backend-9"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := shCommand("echo ran")
			body, hdr := c.msg(cmd)
			w := watchResults(t, f.nc, cmd.RequestID)
			f.publish(t, f.enforcing.cfg.ID, body, hdr)
			f.publish(t, f.off.cfg.ID, body, hdr)
			got := map[string]core.ExecResult{}
			for len(got) < 2 {
				r := w.next(15 * time.Second)
				if _, dup := got[r.PCID]; dup {
					t.Fatalf("%s answered twice: %+v", r.PCID, r)
				}
				got[r.PCID] = r
			}
			if r := got[f.off.cfg.ID]; r.ExitCode != 0 || strings.TrimSpace(r.Stdout) == "" {
				t.Fatalf("non-enforcing agent: %+v", r)
			}
			r := got[f.enforcing.cfg.ID]
			if c.refuse == "" {
				if r.ExitCode != 0 || strings.TrimSpace(r.Stdout) == "" {
					t.Fatalf("enforcing agent did not run a verified command: %+v", r)
				}
				return
			}
			if r.ExitCode != core.ExitSignatureDenied || r.Skipped || r.Stdout != "" ||
				!strings.HasPrefix(r.Stderr, "refused: ") || !strings.Contains(r.Stderr, c.refuse) ||
				r.ResultID != signing.RefusalResultID(cmd.RequestID, f.enforcing.cfg.ID) {
				t.Fatalf("enforcing agent: %+v, want exit 123 with %q", r, c.refuse)
			}
			// Both intake paths judged it; neither ran it.
			natstest.Eventually(t, 10*time.Second, "refusal on the live and the replay path", func() bool {
				logs := f.enforcing.logs.String()
				return refusedVia(logs, cmd.RequestID, "core") && refusedVia(logs, cmd.RequestID, "replay")
			})
			if line := acceptedLine(f.enforcing.logs.String(), cmd.RequestID); line != "" {
				t.Fatalf("the enforcing agent admitted a refused command: %s", line)
			}
		})
	}

	// A refusal does not consume the id: the same request, signed, runs.
	t.Run("refused then signed", func(t *testing.T) {
		cmd := shCommand("echo second-try")
		body := encode(t, cmd)
		w := watchResults(t, f.nc, cmd.RequestID)
		f.publish(t, f.enforcing.cfg.ID, body, nil)
		if r := w.next(15 * time.Second); r.ExitCode != core.ExitSignatureDenied {
			t.Fatalf("unsigned: %+v", r)
		}
		f.publish(t, f.enforcing.cfg.ID, body, signedHeader(f.backend, body, time.Now()))
		if r := w.next(15 * time.Second); r.ExitCode != 0 || !strings.Contains(r.Stdout, "second-try") {
			t.Fatalf("signed retry with the same request_id: %+v", r)
		}
	})

	// The heartbeat reports the ring, enforcement and the protocols.
	for _, a := range []*testAgent{f.enforcing, f.off} {
		hb := ping(t, f.nc, a.cfg.ID)
		want := []string{"backend-1:" + signing.Fingerprint(f.backend.Public()), "break-glass-1:" + signing.Fingerprint(f.bg.Public())}
		if strings.Join(hb.CommandKeys, ",") != strings.Join(want, ",") || hb.Enforcing == nil || *hb.Enforcing != (a == f.enforcing) ||
			strings.Join(hb.CommandProtocols, ",") != "legacy,kanade.command.v2" {
			t.Fatalf("%s heartbeat: keys %v enforcing %v protocols %v", a.cfg.ID, hb.CommandKeys, hb.Enforcing, hb.CommandProtocols)
		}
	}
}

// refusedVia reports whether logs hold the refusal of requestID on path via.
func refusedVia(logs, requestID, via string) bool {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "REFUSED") && strings.Contains(line, "request_id="+requestID) && strings.Contains(line, "via="+via) {
			return true
		}
	}
	return false
}

func acceptedLine(logs, requestID string) string {
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "command accepted") && strings.Contains(line, requestID) {
			return line
		}
	}
	return ""
}

func ping(t *testing.T, nc *nats.Conn, pc string) core.Heartbeat {
	t.Helper()
	m, err := nc.Request(core.SubjectPing(pc), nil, 5*time.Second)
	if err != nil {
		t.Fatalf("ping %s: %v", pc, err)
	}
	var hb core.Heartbeat
	if err := json.Unmarshal(m.Data, &hb); err != nil {
		t.Fatal(err)
	}
	return hb
}

// TestSignedCommandReplayPath: commands published while the enforcing
// agent is down reach it only through the replay consumer at its next
// start; the unsigned one is refused there, the signed one runs.
func TestSignedCommandReplayPath(t *testing.T) {
	f := newSigningFleet(t)
	pc, dir := f.enforcing.cfg.ID, f.enforcing.dir
	f.enforcing.stop()
	unsigned, good := shCommand("echo unsigned"), shCommand("echo good")
	wu, wg := watchResults(t, f.nc, unsigned.RequestID), watchResults(t, f.nc, good.RequestID)
	f.publish(t, pc, encode(t, unsigned), nil)
	// A second subject, so the latest-per-subject replay hands over both.
	gb := encode(t, good)
	m := nats.NewMsg(core.SubjectCommandsAll)
	m.Data, m.Header = gb, signedHeader(f.backend, gb, time.Now())
	if _, err := f.js.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	// The relaxed agent runs the broadcast too; it is not under test here.
	again := newTestAgent(t, f.nc.ConnectedUrl(), func(c *Config) {
		c.ID, c.DataDir = pc, dir
		c.CommandKeysFile, c.RequireSignedFile = f.ring, filepath.Join(filepath.Dir(f.ring), "require-signed-commands")
	}).start()
	if r := wu.next(15 * time.Second); r.ExitCode != core.ExitSignatureDenied || r.PCID != pc {
		t.Fatalf("replayed unsigned command: %+v", r)
	}
	for {
		r := wg.next(15 * time.Second)
		if r.PCID != pc {
			continue
		}
		if r.ExitCode != 0 || !strings.Contains(r.Stdout, "good") {
			t.Fatalf("replayed signed command: %+v", r)
		}
		break
	}
	if !refusedVia(again.logs.String(), unsigned.RequestID, "replay") {
		t.Fatalf("no refusal on the replay path in:\n%s", again.logs.String())
	}
}

// TestKeyringRotationOnDisk: a key added to the ring file is trusted by the
// first command that names it, and a key removed from it stops being
// trusted (a heartbeat or ping re-reads the file), without a restart.
func TestKeyringRotationOnDisk(t *testing.T) {
	f := newSigningFleet(t)
	next := newTestKey(t, "backend-2", 0)
	pc := f.enforcing.cfg.ID
	run := func(k testKey) core.ExecResult {
		t.Helper()
		cmd := shCommand("echo rotated")
		b := encode(t, cmd)
		w := watchResults(t, f.nc, cmd.RequestID)
		f.publish(t, pc, b, signedHeader(k, b, time.Now()))
		return w.next(15 * time.Second)
	}
	if r := run(next); r.ExitCode != core.ExitSignatureDenied {
		t.Fatalf("a key not yet provisioned: %+v", r)
	}
	writeRing(t, f.ring, f.backend, f.bg, next)
	natstest.Eventually(t, 10*time.Second, "new key trusted", func() bool { return run(next).ExitCode == 0 })

	// Retire the old key: the next ping reports the new ring, and the old
	// key's commands are refused.
	writeRing(t, f.ring, next)
	hb := ping(t, f.nc, pc)
	if len(hb.CommandKeys) != 1 || hb.CommandKeys[0] != "backend-2:"+signing.Fingerprint(next.Public()) {
		t.Fatalf("after retiring backend-1 the agent reports %v", hb.CommandKeys)
	}
	if r := run(f.backend); r.ExitCode != core.ExitSignatureDenied || !strings.Contains(r.Stderr, "backend-1") {
		t.Fatalf("retired key: %+v", r)
	}
	// A torn write never replaces the working ring.
	writeFile0600(t, f.ring, []byte(`[{"kid":"backend-2","public_key":`))
	if hb := ping(t, f.nc, pc); len(hb.CommandKeys) != 1 || hb.Enforcing == nil || !*hb.Enforcing {
		t.Fatalf("after a torn write: %v enforcing %v", hb.CommandKeys, hb.Enforcing)
	}
	if r := run(next); r.ExitCode != 0 {
		t.Fatalf("working key after a torn write: %+v", r)
	}
}

// TestCommandEnvelopeV2: a signed v2 envelope addressed to the agent runs
// (enforcing or not); one for another pc, an expired one, one with an
// extra key and an unsigned one are refused without a result.
func TestCommandEnvelopeV2(t *testing.T) {
	f := newSigningFleet(t)
	now := time.Now()
	for _, a := range []*testAgent{f.enforcing, f.off} {
		pc := a.cfg.ID
		cmd := shCommand("echo enveloped")
		body, hs, err := signing.SignEnvelope(f.backend.Signer, pc, now.Add(time.Hour), &cmd, now)
		if err != nil {
			t.Fatal(err)
		}
		h := nats.Header{}
		hs.ApplyTo(h)
		w := watchResults(t, f.nc, cmd.RequestID)
		f.publish(t, pc, body, h)
		if r := w.next(15 * time.Second); r.ExitCode != 0 || !strings.Contains(r.Stdout, "enveloped") || r.PCID != pc {
			t.Fatalf("%s: envelope result %+v", pc, r)
		}

		refusals := map[string]func(c *core.Command) ([]byte, nats.Header){
			"misaddressed": func(c *core.Command) ([]byte, nats.Header) {
				b, hs, _ := signing.SignEnvelope(f.backend.Signer, "pc-other", now.Add(time.Hour), c, now)
				h := nats.Header{}
				hs.ApplyTo(h)
				return b, h
			},
			"expired": func(c *core.Command) ([]byte, nats.Header) {
				b, hs, _ := signing.SignEnvelope(f.backend.Signer, pc, now.Add(-time.Minute), c, now.Add(-time.Hour))
				h := nats.Header{}
				hs.ApplyTo(h)
				return b, h
			},
			"extra key": func(c *core.Command) ([]byte, nats.Header) {
				cb := encode(t, *c)
				b := []byte(`{"kind":"kanade.command.v2","target_pc_id":"` + pc + `","expires_at":"` + now.Add(time.Hour).UTC().Format(time.RFC3339) + `","via":"x","command":` + string(cb) + `}`)
				return b, signedHeader(f.backend, b, now)
			},
			"unsigned": func(c *core.Command) ([]byte, nats.Header) {
				b, _, _ := signing.SignEnvelope(f.backend.Signer, pc, now.Add(time.Hour), c, now)
				return b, nil
			},
		}
		for name, mk := range refusals {
			before := strings.Count(a.logs.String(), "REFUSED: command envelope did not verify")
			c := shCommand("echo must-not-run")
			body, h := mk(&c)
			w := watchResults(t, f.nc, c.RequestID)
			f.publish(t, pc, body, h)
			// A probe behind it on the same subject: once it is answered,
			// the refused envelope was decided.
			probe := shCommand("echo probe")
			pb := encode(t, probe)
			pw := watchResults(t, f.nc, probe.RequestID)
			f.publish(t, pc, pb, signedHeader(f.backend, pb, time.Now()))
			pw.next(15 * time.Second)
			select {
			case r := <-w.ch:
				t.Fatalf("%s %s: got a result %+v, want none", pc, name, r)
			default:
			}
			if strings.Count(a.logs.String(), "REFUSED: command envelope did not verify") <= before {
				t.Fatalf("%s %s: refusal not logged", pc, name)
			}
		}
	}
}

// TestEnforcingAgentHoldsAgentSideSchedules: a runs_on: agent schedule is
// built from KV jobs, which carries no signature, so an enforcing agent
// never runs it (whoever can write the bucket would otherwise run code on
// a pc that refuses every unsigned command); a relaxed agent runs it.
func TestEnforcingAgentHoldsAgentSideSchedules(t *testing.T) {
	f := newSigningFleet(t)
	marker := filepath.Join(t.TempDir(), "ran")
	putJobKV(t, f.js, "kv-job", "echo $(hostname) >> "+marker+"; echo local")
	putAgentSchedule(t, f.js, "kv-sched", "kv-job", `{"per_pc":"once"}`)
	natstest.Eventually(t, 20*time.Second, "the relaxed agent ran the schedule", func() bool {
		r := resultsFor(t, f.js, "kv-job")["pc-relaxed"]
		return len(r) == 1 && r[0].ExitCode == 0
	})
	natstest.Eventually(t, 10*time.Second, "the enforcing agent held it with a warning", func() bool {
		return strings.Contains(f.enforcing.logs.String(), "agent-side fire carries no signature")
	})
	if r := resultsFor(t, f.js, "kv-job")["pc-enforcing"]; len(r) != 0 {
		t.Fatalf("the enforcing agent ran a KV-defined job: %+v", r)
	}
	if strings.Contains(f.enforcing.logs.String(), `msg="schedule fired"`) {
		t.Fatalf("the enforcing agent fired the schedule:\n%s", f.enforcing.logs.String())
	}
}
