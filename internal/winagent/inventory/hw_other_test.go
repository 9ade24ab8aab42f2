//go:build !windows

package inventory

import (
	"reflect"
	"testing"

	"github.com/shirou/gopsutil/v4/disk"
)

func TestRealPartitions(t *testing.T) {
	files := map[string]bool{"/etc/hosts": true, "/etc/resolv.conf": true}
	isDir := func(p string) bool { return !files[p] }
	parts := []disk.PartitionStat{
		{Device: "/dev/sda1", Mountpoint: "/", Fstype: "ext4"},
		{Device: "/dev/sda1", Mountpoint: "/etc/hosts", Fstype: "ext4"}, // container file bind mount
		{Device: "/dev/sda1", Mountpoint: "/var/lib/x", Fstype: "ext4"}, // bind mount of the same device
		{Device: "/dev/loop3", Mountpoint: "/snap/core/1", Fstype: "squashfs"},
		{Device: "/dev/sr0", Mountpoint: "/media/cdrom", Fstype: "iso9660"},
		{Device: "/dev/nvme0n1p2", Mountpoint: "/home", Fstype: "xfs"},
		{Device: "/dev/nvme0n1p1", Mountpoint: "/boot/efi", Fstype: "vfat"},
	}
	var got []string
	for _, p := range realPartitions("linux", parts, isDir) {
		got = append(got, p.Mountpoint)
	}
	want := []string{"/", "/home", "/boot/efi"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("linux: got %v want %v", got, want)
	}

	mac := []disk.PartitionStat{
		{Device: "/dev/disk3s1s1", Mountpoint: "/", Fstype: "apfs"},
		{Device: "/dev/disk3s6", Mountpoint: "/System/Volumes/VM", Fstype: "apfs"},
		{Device: "/dev/disk3s5", Mountpoint: "/System/Volumes/Data", Fstype: "apfs"},
		{Device: "devfs", Mountpoint: "/dev", Fstype: "devfs"},
	}
	got = nil
	for _, p := range realPartitions("darwin", mac, isDir) {
		got = append(got, p.Mountpoint)
	}
	want = []string{"/", "/System/Volumes/Data"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("darwin: got %v want %v", got, want)
	}
}
