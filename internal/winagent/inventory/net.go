package inventory

import (
	"context"
	"net"
	"sort"
	"strings"

	"github.com/kanadehq/kanade-go/internal/core"
)

// collectInterfaces lists the network interfaces except loopback, with their
// MAC, addresses (CIDR) and whether they are up, sorted by name.
func collectInterfaces(context.Context) ([]core.NetInterface, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	out := make([]core.NetInterface, 0, len(ifs))
	for _, ifc := range ifs {
		addrs, _ := ifc.Addrs() // an interface without readable addresses is still listed
		if ni, ok := netInterface(ifc.Name, ifc.HardwareAddr, ifc.Flags, addrs); ok {
			out = append(out, ni)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// netInterface turns one interface into its wire form; ok is false for
// loopback.
func netInterface(name string, mac net.HardwareAddr, flags net.Flags, addrs []net.Addr) (core.NetInterface, bool) {
	if flags&net.FlagLoopback != 0 {
		return core.NetInterface{}, false
	}
	ni := core.NetInterface{Name: name, MAC: mac.String(), Addrs: []string{}, Up: flags&net.FlagUp != 0}
	for _, a := range addrs {
		ni.Addrs = append(ni.Addrs, a.String())
	}
	return ni, true
}

// firstLine is the first non-empty line of b, trimmed, for error messages.
func firstLine(b []byte) string {
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			return l
		}
	}
	return ""
}
