package inventory

import (
	"reflect"
	"testing"

	"github.com/kanadehq/kanade-go/internal/core"
)

func TestOSReleaseName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\n", "Debian GNU/Linux 12 (bookworm)"},
		{"NAME=\"Ubuntu\"\nVERSION=\"24.04.1 LTS (Noble Numbat)\"\n", "Ubuntu 24.04.1 LTS (Noble Numbat)"},
		{"# comment\nPRETTY_NAME='Alpine Linux v3.20'\n", "Alpine Linux v3.20"},
		{"PRETTY_NAME=\"say \\\"hi\\\"\"\n", `say "hi"`},
		{"garbage\n", ""},
	}
	for _, tt := range tests {
		if got := osReleaseName(tt.in); got != tt.want {
			t.Errorf("osReleaseName(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseDpkg(t *testing.T) {
	out := "adduser\t3.134\tDebian Adduser Developers <adduser@packages.debian.org>\tii \n" +
		"old-lib\t1.0\tSomeone\trc \n" +
		"held\t2.0-1\tX\thi \n" +
		"broken line\n\n"
	got := parseDpkg([]byte(out))
	want := []core.SoftwareItem{
		{Name: "adduser", Version: "3.134", Publisher: "Debian Adduser Developers <adduser@packages.debian.org>"},
		{Name: "held", Version: "2.0-1", Publisher: "X"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestParseRPM(t *testing.T) {
	out := "bash\t(none):5.2.15-5.el9\tRed Hat, Inc.\t1717171717\n" +
		"kernel\t1:6.1.0-1\t(none)\t(none)\n" +
		"gpg-pubkey\t(none):fd431d51-4ae0493b\t(none)\t1700000000\n"
	got := parseRPM([]byte(out))
	want := []core.SoftwareItem{
		{Name: "bash", Version: "5.2.15-5.el9", Publisher: "Red Hat, Inc.", InstallDate: "2024-05-31"},
		{Name: "kernel", Version: "1:6.1.0-1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestSoftwareFromUninstall(t *testing.T) {
	got := softwareFromUninstall([]uninstallEntry{
		{DisplayName: "Mozilla Firefox (x64 ja)", DisplayVersion: "128.0", Publisher: "Mozilla", InstallDate: ""},
		{DisplayName: "7-Zip 23.01 (x64)", DisplayVersion: "23.01", Publisher: "Igor Pavlov", InstallDate: "20240131"},
		{DisplayName: "Microsoft Visual C++ 2022 X64 Minimum Runtime", SystemComponent: 1},
		{DisplayName: "Security Update for Office (KB123)", ReleaseType: "Security Update"},
		{DisplayName: "Child", ParentKeyName: "Office16.PROPLUS"},
		{DisplayName: "  ", DisplayVersion: "1"},
		{DisplayName: "Odd date", InstallDate: "31/01/2024"},
	})
	want := []core.SoftwareItem{
		{Name: "Mozilla Firefox (x64 ja)", Version: "128.0", Publisher: "Mozilla"},
		{Name: "7-Zip 23.01 (x64)", Version: "23.01", Publisher: "Igor Pavlov", InstallDate: "2024-01-31"},
		{Name: "Odd date"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
}

func TestPlistStrings(t *testing.T) {
	xmlPlist := `<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleName</key>
	<string>Safari</string>
	<key>CFBundleDocumentTypes</key>
	<array><dict><key>CFBundleTypeName</key><string>nested</string></dict></array>
	<key>LSRequiresNativeExecution</key>
	<true/>
	<key>CFBundleShortVersionString</key>
	<string>17.5</string>
</dict>
</plist>`
	vals, ok := plistStrings([]byte(xmlPlist))
	if !ok || vals["CFBundleName"] != "Safari" || vals["CFBundleShortVersionString"] != "17.5" {
		t.Fatalf("got %v, %v", vals, ok)
	}
	if _, nested := vals["CFBundleTypeName"]; nested {
		t.Error("a nested dict's key leaked to the top level")
	}
	if _, ok := plistStrings([]byte("bplist00\x00\x01")); ok {
		t.Error("binary plist must report ok=false")
	}
	it := appFromInfoPlist("Safari.app", vals)
	if it != (core.SoftwareItem{Name: "Safari", Version: "17.5"}) {
		t.Errorf("item = %+v", it)
	}
	if it := appFromInfoPlist("Thing.app", nil); it.Name != "Thing" {
		t.Errorf("unreadable bundle = %+v", it)
	}
}

func TestNormalizeSoftware(t *testing.T) {
	got := normalizeSoftware([]core.SoftwareItem{
		{Name: "b", Version: "1"}, {Name: "A", Version: "2"}, {Name: "b", Version: "1"}, {Name: "a", Version: "1"},
	})
	want := []core.SoftwareItem{{Name: "a", Version: "1"}, {Name: "A", Version: "2"}, {Name: "b", Version: "1"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v want %+v", got, want)
	}
	if normalizeSoftware(nil) != nil {
		t.Error("nil in, nil out")
	}
}
