package inventory

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/kanadehq/kanade-go/internal/core"
)

// This file holds the pure decoders behind the software and OS sources, with
// no build tags so every platform's parsing is tested everywhere.

// osReleaseName returns PRETTY_NAME from an os-release file, else NAME plus
// VERSION, else "".
func osReleaseName(content string) string {
	vals := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(content))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		vals[strings.TrimSpace(k)] = unquoteShell(strings.TrimSpace(v))
	}
	if n := vals["PRETTY_NAME"]; n != "" {
		return n
	}
	return strings.TrimSpace(vals["NAME"] + " " + vals["VERSION"])
}

// unquoteShell undoes os-release's shell quoting ("..." or '...').
func unquoteShell(v string) string {
	if len(v) >= 2 && (v[0] == '"' && v[len(v)-1] == '"' || v[0] == '\'' && v[len(v)-1] == '\'') {
		q := v[0]
		v = v[1 : len(v)-1]
		if q == '"' {
			r := strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`, "\\`", "`")
			v = r.Replace(v)
		}
	}
	return v
}

// dpkgQueryFormat is the -f argument of dpkg-query -W: package, version,
// maintainer and the abbreviated status, tab separated.
const dpkgQueryFormat = "${Package}\\t${Version}\\t${Maintainer}\\t${db:Status-Abbrev}\\n"

// parseDpkg decodes dpkgQueryFormat output, keeping installed packages
// (status "ii"; "rc" = removed with config left is not installed).
func parseDpkg(out []byte) []core.SoftwareItem {
	var items []core.SoftwareItem
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 4 || f[0] == "" {
			continue
		}
		if st := strings.TrimSpace(f[3]); !strings.HasPrefix(st, "ii") && !strings.HasPrefix(st, "hi") {
			continue
		}
		items = append(items, core.SoftwareItem{
			Name:      f[0],
			Version:   f[1],
			Publisher: strings.TrimSpace(f[2]),
		})
	}
	return items
}

// rpmQueryFormat is the --qf argument of rpm -qa.
const rpmQueryFormat = "%{NAME}\\t%{EPOCH}:%{VERSION}-%{RELEASE}\\t%{VENDOR}\\t%{INSTALLTIME}\\n"

// parseRPM decodes rpmQueryFormat output. "(none)" is rpm's empty value; an
// absent epoch is dropped from the version; INSTALLTIME (unix seconds)
// becomes a UTC date.
func parseRPM(out []byte) []core.SoftwareItem {
	var items []core.SoftwareItem
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Split(line, "\t")
		if len(f) < 4 || f[0] == "" || f[0] == "gpg-pubkey" {
			continue
		}
		ver := strings.TrimPrefix(f[1], "(none):")
		it := core.SoftwareItem{Name: f[0], Version: ver}
		if v := strings.TrimSpace(f[2]); v != "(none)" {
			it.Publisher = v
		}
		if secs, err := strconv.ParseInt(strings.TrimSpace(f[3]), 10, 64); err == nil && secs > 0 {
			it.InstallDate = time.Unix(secs, 0).UTC().Format(time.DateOnly)
		}
		items = append(items, it)
	}
	return items
}

// registryInstallDate turns the Uninstall key's InstallDate ("20240131")
// into "2024-01-31"; anything else is kept only if it already is a date.
func registryInstallDate(s string) string {
	s = strings.TrimSpace(s)
	if t, err := time.Parse("20060102", s); err == nil {
		return t.Format(time.DateOnly)
	}
	if _, err := time.Parse(time.DateOnly, s); err == nil {
		return s
	}
	return ""
}

// uninstallEntry is what one HKLM\...\Uninstall\<key> holds.
type uninstallEntry struct {
	DisplayName     string
	DisplayVersion  string
	Publisher       string
	InstallDate     string
	SystemComponent uint64
	ParentKeyName   string
	ReleaseType     string
}

// softwareFromUninstall keeps what "Apps & features" shows: entries with a
// display name that are not system components, updates or hotfixes, or
// children of another product.
func softwareFromUninstall(entries []uninstallEntry) []core.SoftwareItem {
	var items []core.SoftwareItem
	for _, e := range entries {
		name := strings.TrimSpace(e.DisplayName)
		switch {
		case name == "", e.SystemComponent == 1, e.ParentKeyName != "":
			continue
		case strings.EqualFold(e.ReleaseType, "Update"), strings.EqualFold(e.ReleaseType, "Hotfix"), strings.EqualFold(e.ReleaseType, "Security Update"):
			continue
		}
		items = append(items, core.SoftwareItem{
			Name:        name,
			Version:     strings.TrimSpace(e.DisplayVersion),
			Publisher:   strings.TrimSpace(e.Publisher),
			InstallDate: registryInstallDate(e.InstallDate),
		})
	}
	return items
}

// plistStrings reads the top-level string values of an XML property list
// (Info.plist). Binary plists ("bplist00") return ok=false; the caller
// converts them with plutil.
func plistStrings(b []byte) (map[string]string, bool) {
	if bytes.HasPrefix(b, []byte("bplist")) {
		return nil, false
	}
	dec := xml.NewDecoder(bytes.NewReader(b))
	dec.Strict = false
	out := map[string]string{}
	depth := 0 // depth of <dict> nesting
	var key string
	var inKey, inString bool
	var text strings.Builder
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return out, true
		}
		if err != nil {
			return out, len(out) > 0
		}
		switch t := tok.(type) {
		case xml.StartElement:
			switch t.Name.Local {
			case "dict":
				depth++
			case "key":
				inKey = depth == 1
				text.Reset()
			case "string":
				inString = depth == 1 && key != ""
				text.Reset()
			}
		case xml.CharData:
			if inKey || inString {
				text.Write(t)
			}
		case xml.EndElement:
			switch t.Name.Local {
			case "dict":
				depth--
			case "key":
				if inKey {
					key = text.String()
					inKey = false
				}
			case "string":
				if inString {
					out[key] = text.String()
					inString = false
				}
				key = ""
			default:
				if depth == 1 && t.Name.Local != "key" {
					key = ""
				}
			}
		}
	}
}

// appFromInfoPlist builds the item for one /Applications bundle: the display
// name (CFBundleDisplayName, CFBundleName, else the bundle's file name) and
// the short version string; bundles carry no publisher.
func appFromInfoPlist(bundleName string, vals map[string]string) core.SoftwareItem {
	name := strings.TrimSpace(vals["CFBundleDisplayName"])
	if name == "" {
		name = strings.TrimSpace(vals["CFBundleName"])
	}
	if name == "" {
		name = strings.TrimSuffix(bundleName, ".app")
	}
	ver := strings.TrimSpace(vals["CFBundleShortVersionString"])
	if ver == "" {
		ver = strings.TrimSpace(vals["CFBundleVersion"])
	}
	return core.SoftwareItem{Name: name, Version: ver}
}

// normalizeSoftware sorts by name then version and drops exact duplicates
// (the 32- and 64-bit registry views list some products twice).
func normalizeSoftware(items []core.SoftwareItem) []core.SoftwareItem {
	if len(items) == 0 {
		return nil
	}
	sort.Slice(items, func(i, j int) bool {
		a, b := items[i], items[j]
		if la, lb := strings.ToLower(a.Name), strings.ToLower(b.Name); la != lb {
			return la < lb
		}
		if a.Version != b.Version {
			return a.Version < b.Version
		}
		return a.Publisher < b.Publisher
	})
	out := items[:1]
	for _, it := range items[1:] {
		if it == out[len(out)-1] {
			continue
		}
		out = append(out, it)
	}
	return out
}
