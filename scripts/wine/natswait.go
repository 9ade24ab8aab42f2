//go:build ignore

// natswait waits for one NATS message and prints its body: used by
// scripts/wine-smoke.sh, which has no nats CLI to rely on.
//
//	go run scripts/wine/natswait.go -s URL -subject heartbeat.PC [-match TEXT] [-timeout 60s]
//	    the first message published on SUBJECT (whose body contains TEXT)
//	go run scripts/wine/natswait.go -s URL -stream INVENTORY -subject inventory.PC.hw [-timeout 60s]
//	    the last message STREAM stores on SUBJECT, once there is one
//
// It exits 1 with a message on stderr when nothing came within the timeout.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := flag.String("s", nats.DefaultURL, "NATS server URL")
	subject := flag.String("subject", "", "subject to wait on")
	stream := flag.String("stream", "", "read the stream's last message on -subject instead of subscribing")
	match := flag.String("match", "", "only a body containing this text counts")
	timeout := flag.Duration("timeout", 60*time.Second, "how long to wait")
	flag.Parse()
	if *subject == "" {
		fmt.Fprintln(os.Stderr, "natswait: -subject is required")
		os.Exit(2)
	}
	body, err := wait(*url, *subject, *stream, []byte(*match), *timeout)
	if err != nil {
		fmt.Fprintf(os.Stderr, "natswait: %v\n", err)
		os.Exit(1)
	}
	os.Stdout.Write(append(body, '\n'))
}

func wait(url, subject, stream string, match []byte, timeout time.Duration) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	nc, err := nats.Connect(url, nats.Timeout(5*time.Second))
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", url, err)
	}
	defer nc.Close()

	if stream == "" {
		sub, err := nc.SubscribeSync(subject)
		if err != nil {
			return nil, fmt.Errorf("subscribe %s: %w", subject, err)
		}
		for {
			m, err := sub.NextMsgWithContext(ctx)
			if err != nil {
				return nil, fmt.Errorf("no message on %s within %s (%w)", subject, timeout, err)
			}
			if bytes.Contains(m.Data, match) {
				return m.Data, nil
			}
		}
	}

	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	for {
		s, err := js.Stream(ctx, stream)
		if err == nil {
			m, err := s.GetLastMsgForSubject(ctx, subject)
			if err == nil && bytes.Contains(m.Data, match) {
				return m.Data, nil
			}
			if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "natswait: %s: %v (retrying)\n", stream, err)
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("no message stored on %s in stream %s within %s", subject, stream, timeout)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
