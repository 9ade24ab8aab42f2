// Package securitytest proves kanade's authentication modes and the
// least-privilege roles end to end: real in-process nats-servers configured
// for token, user/password, nkey, JWT creds and TLS, the operator CLI driven
// through its command tree, and real in-process agents under the agent role.
// It holds tests only.
package securitytest
