//go:build !linux

package brokerquiet

// Stop does nothing here: on Windows the broker's process sampler does not
// run periodically, and on macOS nats-server gives no way to stop it.
func Stop() {}
