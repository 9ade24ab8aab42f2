//go:build !windows

package inventory

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/disk"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	"github.com/kanadehq/kanade-go/internal/core"
)

// platformHWSources read Linux and macOS through gopsutil and the OS's own
// files (/etc/os-release, sw_vers), one source per kind of fact.
func platformHWSources() []hwSource {
	return []hwSource{
		{name: "host", run: hostSource},
		{name: "cpu", run: cpuSource},
		{name: "memory", run: func(ctx context.Context) (core.HwInventory, error) {
			vm, err := mem.VirtualMemoryWithContext(ctx)
			if err != nil {
				return core.HwInventory{}, err
			}
			return core.HwInventory{RAMBytes: vm.Total}, nil
		}},
		{name: "disks", run: diskSource},
	}
}

// Hostname is the name heartbeats and inventory report for this machine:
// off Windows, the kernel's host name as os.Hostname returns it.
func Hostname() (string, error) { return os.Hostname() }

// hostSource fills hostname, os_name ("Debian GNU/Linux 12 (bookworm)",
// "macOS 14.5"), os_version (the kernel on Linux, the product version on
// macOS) and os_build (macOS's build, null elsewhere).
func hostSource(ctx context.Context) (core.HwInventory, error) {
	var p core.HwInventory
	p.Hostname, _ = Hostname()
	hi, err := host.InfoWithContext(ctx)
	if err != nil && hi == nil {
		return p, err
	}
	if p.Hostname == "" {
		p.Hostname = hi.Hostname
	}
	switch runtime.GOOS {
	case "linux":
		p.OSName = linuxPrettyName()
		p.OSVersion = hi.KernelVersion
	case "darwin":
		if hi.PlatformVersion != "" {
			p.OSName = "macOS " + hi.PlatformVersion
		}
		p.OSVersion = hi.PlatformVersion
		if out, err := exec.CommandContext(ctx, "sw_vers", "-buildVersion").Output(); err == nil {
			if b := strings.TrimSpace(string(out)); b != "" {
				p.OSBuild = &b
			}
		}
	default:
		p.OSVersion = hi.PlatformVersion
		if p.OSVersion == "" {
			p.OSVersion = hi.KernelVersion
		}
	}
	if p.OSName == "" {
		p.OSName = strings.TrimSpace(hi.Platform + " " + hi.PlatformVersion)
	}
	if p.OSName == "" {
		p.OSName = runtime.GOOS
	}
	return p, nil
}

// linuxPrettyName is PRETTY_NAME from os-release, "" when unreadable.
func linuxPrettyName() string {
	for _, path := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		b, err := os.ReadFile(path)
		if err != nil {
			continue
		}
		if n := osReleaseName(string(b)); n != "" {
			return n
		}
	}
	return ""
}

// cpuSource fills the model and the core count: physical cores as upstream
// reports them on Windows, logical ones where the OS does not tell.
func cpuSource(ctx context.Context) (core.HwInventory, error) {
	var p core.HwInventory
	infos, infoErr := cpu.InfoWithContext(ctx)
	for _, ci := range infos {
		if m := strings.TrimSpace(ci.ModelName); m != "" {
			p.CPUModel = m
			break
		}
	}
	n, err := cpu.CountsWithContext(ctx, false)
	if err != nil || n <= 0 {
		n, err = cpu.CountsWithContext(ctx, true)
	}
	if err != nil || n <= 0 {
		n = runtime.NumCPU()
	}
	p.CPUCores = uint32(n)
	if p.CPUModel == "" && infoErr != nil {
		return p, infoErr
	}
	return p, nil
}

// diskSource lists the real (non-pseudo) file systems with their mount point
// as device_id. In a container, where none is visible, it reports the root
// file system so the inventory still says how full the disk is.
func diskSource(ctx context.Context) (core.HwInventory, error) {
	parts, err := disk.PartitionsWithContext(ctx, false)
	if err != nil && len(parts) == 0 {
		parts = nil
	}
	var disks []core.Disk
	for _, pt := range realPartitions(runtime.GOOS, parts, isDir) {
		u, uerr := disk.UsageWithContext(ctx, pt.Mountpoint)
		if uerr != nil || u.Total == 0 {
			continue
		}
		disks = append(disks, diskEntry(pt.Mountpoint, u.Total, u.Free, pt.Fstype))
	}
	if len(disks) == 0 {
		u, uerr := disk.UsageWithContext(ctx, "/")
		if uerr != nil {
			return core.HwInventory{}, errors.Join(err, uerr)
		}
		disks = append(disks, diskEntry("/", u.Total, u.Free, u.Fstype))
	}
	return core.HwInventory{Disks: disks}, nil
}

func diskEntry(id string, size, free uint64, fs string) core.Disk {
	d := core.Disk{DeviceID: id, SizeBytes: size, FreeBytes: free}
	if fs != "" {
		d.FileSystem = &fs
	}
	return d
}

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// realPartitions keeps the partitions worth reporting: no loop devices or
// read-only images (snaps, ISOs), no file bind mounts (containers mount
// /etc/hosts from the host's disk), no macOS system sub-volumes, and one
// entry per device (the shortest mount point wins over bind mounts).
func realPartitions(goos string, parts []disk.PartitionStat, isDir func(string) bool) []disk.PartitionStat {
	skipFS := map[string]bool{"squashfs": true, "iso9660": true, "udf": true, "devfs": true, "autofs": true, "nullfs": true, "overlay": true, "tmpfs": true}
	byDevice := map[string]int{}
	var out []disk.PartitionStat
	for _, pt := range parts {
		switch {
		case pt.Mountpoint == "" || skipFS[pt.Fstype]:
			continue
		case strings.HasPrefix(pt.Device, "/dev/loop"), strings.HasPrefix(pt.Mountpoint, "/snap/"):
			continue
		case goos == "darwin" && strings.HasPrefix(pt.Mountpoint, "/System/Volumes/") && pt.Mountpoint != "/System/Volumes/Data":
			continue
		case !isDir(pt.Mountpoint):
			continue
		}
		if i, ok := byDevice[pt.Device]; ok && pt.Device != "" {
			if len(pt.Mountpoint) < len(out[i].Mountpoint) {
				out[i] = pt
			}
			continue
		}
		byDevice[pt.Device] = len(out)
		out = append(out, pt)
	}
	return out
}
