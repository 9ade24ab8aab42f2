// Package brokerquiet keeps the embedded broker's process sampler from
// costing a process that never runs a broker.
//
// kanade is one binary, and `kanade devbroker` links nats-server. Its
// package server/pse starts, from its init, a sampler that reads the
// process's stat file every second for the broker's /varz CPU figure. A
// `kanade agent` process runs no broker, yet that sampler alone was about a
// quarter of an idle agent's CPU time and context switches. Stop ends it in
// such a process; nothing else in the binary reads the figure it keeps.
package brokerquiet
