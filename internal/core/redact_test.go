package core

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestRedactURLHidesEverySecret covers the URL shapes nats.go accepts or
// rejects: a secret must be hidden even where the URL does not parse, since
// that is exactly when it ends up in an error message.
func TestRedactURLHidesEverySecret(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://ops:pa55word@broker:4222", "nats://ops:xxxxx@broker:4222"},
		{"nats://s3cr3tTOKEN@broker:4222", "nats://xxxxx@broker:4222"},
		{"tls://ops:p%40ss%3Aw0rd@broker:4222", "tls://ops:xxxxx@broker:4222"},
		{"nats://a:one1@h1:4222, nats://b:two2@h2:4222", "nats://a:xxxxx@h1:4222,nats://b:xxxxx@h2:4222"},
		{"nats://broker:4222", "nats://broker:4222"},
		{"nats://127.0.0.1:4222,nats://ops:thr33@h3:4222", "nats://127.0.0.1:4222,nats://ops:xxxxx@h3:4222"},
		// nats.go takes host:port without a scheme, with credentials too.
		{"s3cr3tTOKEN@127.0.0.1:4222", "xxxxx@127.0.0.1:4222"},
		{"ops:pa55word@127.0.0.1:4222", "ops:xxxxx@127.0.0.1:4222"},
		// Not parseable by net/url: an unescaped '/', a bad escape, a space,
		// an unclosed IPv6 bracket.
		{"nats://ops:pa/55word@127.0.0.1:4222", "nats://ops:xxxxx@127.0.0.1:4222"},
		{"nats://ops:pa%zzword@127.0.0.1:4222", "nats://ops:xxxxx@127.0.0.1:4222"},
		{"nats://o ps:pa55word@127.0.0.1:4222", "nats://o ps:xxxxx@127.0.0.1:4222"},
		{"nats://s3cr3tTOKEN@[::1", "nats://xxxxx@[::1"},
		{"nats://ops:p@55word@broker:4222", "nats://ops:xxxxx@broker:4222"},
		{"", ""},
	} {
		got := RedactURL(tc.in)
		if got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
		for _, s := range []string{"pa55word", "s3cr3tTOKEN", "p%40ss", "one1", "two2", "thr33", "pa/55", "pa%zz", "55word"} {
			if strings.Contains(got, s) {
				t.Errorf("RedactURL(%q) = %q shows %q", tc.in, got, s)
			}
		}
	}
}

// TestConnectErrorsHideURLSecrets: a URL that nats.go cannot parse makes it
// return net/url's error, which quotes the whole URL; core.Connect must not
// pass that on, and must not call a typo "broker unreachable".
func TestConnectErrorsHideURLSecrets(t *testing.T) {
	for _, u := range []string{
		"nats://ops:pa%zzword@127.0.0.1:1",
		"nats://ops:pa/55word@127.0.0.1:1",
		"nats://o ps:pa55word@127.0.0.1:1",
		"nats://127.0.0.1:1,nats://s3cr3tTOKEN@[::1",
	} {
		_, err := Connect(ConnectOptions{URL: u, Timeout: time.Second})
		if err == nil {
			t.Fatalf("Connect(%q) succeeded", u)
		}
		for _, s := range []string{"pa%zz", "pa/55", "55word", "s3cr3tTOKEN"} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("Connect(%q) error shows %q: %v", u, s, err)
			}
		}
		if errors.Is(err, ErrBrokerUnreachable) || !errors.Is(err, ErrInvalidURL) {
			t.Errorf("Connect(%q) error is not ErrInvalidURL: %v", u, err)
		}
	}
	// A closed port: unreachable, and the secret hidden all the same.
	_, err := Connect(ConnectOptions{URL: "s3cr3tTOKEN@127.0.0.1:1", Timeout: time.Second})
	if err == nil || !errors.Is(err, ErrBrokerUnreachable) || strings.Contains(err.Error(), "s3cr3tTOKEN") {
		t.Errorf("closed port: %v", err)
	}
}
