package cmd

import (
	"context"
	"crypto/sha256"
	"debug/buildinfo"
	"debug/elf"
	"debug/macho"
	"debug/pe"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/kanadehq/kanade-go/cmd/cmdutil"
	"github.com/kanadehq/kanade-go/internal/core"
	"github.com/kanadehq/kanade-go/internal/winagent/update"
)

// kanadeModule is this project's module path: a Go binary built from it
// carries it in its build info.
const kanadeModule = "github.com/kanadehq/kanade-go"

// versionLDFlag is what a release build stamps core.Version with.
const versionLDFlag = kanadeModule + "/internal/core.Version="

// AgentPublishOptions are the inputs of `kanade agent publish`.
type AgentPublishOptions struct {
	IO        *cmdutil.IOStreams
	JetStream func(context.Context) (jetstream.JetStream, error)

	File    string
	Version string
	OS      string
	Arch    string
	JSON    bool
}

// AgentPublishResult is `kanade agent publish --json`.
type AgentPublishResult struct {
	Bucket  string   `json:"bucket"`
	Keys    []string `json:"keys"`
	Version string   `json:"version"`
	OS      string   `json:"os"`
	Arch    string   `json:"arch"`
	Size    int64    `json:"size"`
	// Digest is the object store's "SHA-256=<base64url>" form agents verify.
	Digest string `json:"digest"`
	// SHA256 is the same digest in hex, as sha256sum prints it.
	SHA256 string `json:"sha256"`
	// SignedBy is the key id the release is signed with (SPEC-2 §5), ""
	// when no signing key is configured.
	SignedBy string `json:"signed_by,omitempty"`
}

// NewAgentPublishCmd is `kanade agent publish FILE`.
func NewAgentPublishCmd(f *cmdutil.Factory, runF func(context.Context, *AgentPublishOptions) error) *cobra.Command {
	opts := &AgentPublishOptions{IO: f.IO, JetStream: f.JetStream}
	c := &cobra.Command{
		Use:   "publish FILE",
		Short: "Upload an agent build to the agent_releases object store",
		Long: `Upload an agent binary to object store agent_releases under upstream's
key for its platform (the bare <version> for windows/amd64,
<version>-linux-x86_64, <version>-linux-aarch64, <version>-macos-aarch64),
which agents look for first, and under <version>-<os>-<arch> (os windows,
linux or macos; arch amd64 or arm64).
Nothing changes on the fleet until ` + "`kanade agent rollout`" + ` points a scope at
the version.

The os and arch are read from the binary (PE, ELF or Mach-O). The version is
read from a kanade build's embedded build info (the -X …/internal/core.Version
stamp, else the module version); --version is needed for other builds (an
upstream agent) and must match what a kanade build reports, because agents
refuse a binary whose ` + "`version`" + ` is not the rollout target.

When a command-signing key is configured (KANADE_COMMAND_SIGNING_KEY and
KANADE_COMMAND_SIGNING_KID, or command-signing-key-file in the CLI config),
each key's object is signed: the signature covers its name and digest, and
agents that require signed commands install no release without a valid one
(docs/security.md).

Prints the keys, the size, the SHA-256 digest agents verify and the signing
key id.`,
		Example: `  kanade agent publish dist/kanade_windows_amd64/kanade.exe
  kanade agent publish ./kanade-agent.exe --version 0.38.2
  kanade agent publish dist/kanade_linux_arm64/kanade --json`,
		Args: cobra.ExactArgs(1),
		RunE: func(c *cobra.Command, args []string) error {
			opts.File = args[0]
			if opts.Version != "" {
				if err := core.ValidReleaseVersion(opts.Version); err != nil {
					return cmdutil.UsageErrorf("invalid --version: %v", err)
				}
			}
			if opts.OS != "" {
				goos, ok := releaseGOOS(opts.OS)
				if !ok {
					return cmdutil.UsageErrorf("invalid --os %q: want windows, linux or macos", opts.OS)
				}
				opts.OS = goos
			}
			if opts.Arch != "" && !releaseArch(opts.Arch) {
				return cmdutil.UsageErrorf("invalid --arch %q: want amd64 or arm64", opts.Arch)
			}
			if runF != nil {
				return runF(c.Context(), opts)
			}
			return runAgentPublish(c.Context(), opts)
		},
	}
	c.Flags().StringVar(&opts.Version, "version", "", "version label (default: read from the binary)")
	c.Flags().StringVar(&opts.OS, "os", "", "target OS when the binary does not say: windows, linux or macos")
	c.Flags().StringVar(&opts.Arch, "arch", "", "target architecture when the binary does not say: amd64 or arm64")
	c.Flags().BoolVar(&opts.JSON, "json", false, "print as JSON")
	return c
}

// releaseGOOS maps an --os value to a GOOS (macos and darwin both mean darwin).
func releaseGOOS(s string) (string, bool) {
	switch strings.ToLower(s) {
	case "windows":
		return "windows", true
	case "linux":
		return "linux", true
	case "macos", "darwin":
		return "darwin", true
	}
	return "", false
}

func releaseArch(s string) bool { return s == "amd64" || s == "arm64" }

// agentBinary is what publish learns from a file.
type agentBinary struct {
	GOOS, GOARCH string
	// Kanade is true for a Go binary of this module.
	Kanade bool
	// Module is the main module of any Go binary.
	Module string
	// VersionKnown says Version is what the build reports ("" meaning it
	// reports core.DevVersion). A -trimpath build hides its -ldflags, so
	// its version is known only when it can be run here.
	VersionKnown bool
	Version      string
}

// inspectAgentBinary reads the platform from the executable's headers and
// the version from Go build info, or by running a kanade build of this
// machine's platform (`version --json`, the agents' own smoke test).
func inspectAgentBinary(ctx context.Context, path string) (agentBinary, error) {
	var b agentBinary
	goos, goarch, err := binaryPlatform(path)
	if err != nil {
		return b, err
	}
	b.GOOS, b.GOARCH = goos, goarch
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return b, nil // not a Go binary (an upstream Rust agent): --version says
	}
	b.Module = bi.Main.Path
	b.Kanade = bi.Main.Path == kanadeModule
	trimpath := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "GOOS":
			if b.GOOS == "" {
				b.GOOS = s.Value
			}
		case "GOARCH":
			if b.GOARCH == "" {
				b.GOARCH = s.Value
			}
		case "-trimpath":
			trimpath = s.Value == "true"
		}
	}
	if !b.Kanade {
		return b, nil
	}
	if v, ok := ldflagsVersion(bi); ok {
		b.Version, b.VersionKnown = v, true
	} else if !trimpath {
		// No -X stamp at all: the build reports its module version.
		b.Version, b.VersionKnown = mainModuleVersion(bi), true
	} else if b.GOOS == runtime.GOOS && b.GOARCH == runtime.GOARCH {
		rctx, cancel := context.WithTimeout(ctx, update.SmokeTestTimeout)
		defer cancel()
		if v, err := update.RunVersion(rctx, path); err == nil {
			v = strings.TrimPrefix(v, "v")
			if v == core.DevVersion {
				v = ""
			}
			b.Version, b.VersionKnown = v, true
		}
	}
	return b, nil
}

// ldflagsVersion is the -X core.Version stamp recorded in build info (only
// builds without -trimpath record their -ldflags).
func ldflagsVersion(bi *buildinfo.BuildInfo) (string, bool) {
	for _, s := range bi.Settings {
		if s.Key != "-ldflags" {
			continue
		}
		if i := strings.Index(s.Value, versionLDFlag); i >= 0 {
			v := s.Value[i+len(versionLDFlag):]
			if j := strings.IndexAny(v, " \t'\""); j >= 0 {
				v = v[:j]
			}
			if v != "" {
				return strings.TrimPrefix(v, "v"), true
			}
		}
	}
	return "", false
}

// mainModuleVersion is what core.AgentVersion falls back to: the module
// version without its "v", "" for a (devel) build.
func mainModuleVersion(bi *buildinfo.BuildInfo) string {
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return strings.TrimPrefix(v, "v")
	}
	return ""
}

// binaryPlatform reads GOOS and GOARCH from a PE, ELF or Mach-O header. It
// returns "" for what the header does not tell (a universal Mach-O's arch)
// and an error for a file that is no executable of a supported platform.
func binaryPlatform(path string) (goos, goarch string, err error) {
	if f, err := pe.Open(path); err == nil {
		defer f.Close()
		switch f.Machine {
		case pe.IMAGE_FILE_MACHINE_AMD64:
			return "windows", "amd64", nil
		case pe.IMAGE_FILE_MACHINE_ARM64:
			return "windows", "arm64", nil
		}
		return "", "", fmt.Errorf("%s is a Windows executable for machine type %#x: only amd64 and arm64 agents are supported", path, f.Machine)
	}
	if f, err := elf.Open(path); err == nil {
		defer f.Close()
		if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
			return "", "", fmt.Errorf("%s is an ELF executable for %v: only Linux agents are supported", path, f.OSABI)
		}
		switch f.Machine {
		case elf.EM_X86_64:
			return "linux", "amd64", nil
		case elf.EM_AARCH64:
			return "linux", "arm64", nil
		}
		return "", "", fmt.Errorf("%s is a Linux executable for %v: only amd64 and arm64 agents are supported", path, f.Machine)
	}
	if f, err := macho.Open(path); err == nil {
		defer f.Close()
		switch f.Cpu {
		case macho.CpuAmd64:
			return "darwin", "amd64", nil
		case macho.CpuArm64:
			return "darwin", "arm64", nil
		}
		return "", "", fmt.Errorf("%s is a macOS executable for %v: only amd64 and arm64 agents are supported", path, f.Cpu)
	}
	if f, err := macho.OpenFat(path); err == nil {
		f.Close()
		return "darwin", "", nil // universal: --arch picks the key
	}
	return "", "", fmt.Errorf("%s is not a Windows (PE), Linux (ELF) or macOS (Mach-O) executable", path)
}

// resolveRelease combines what the binary says with the flags into the
// release's os, arch and version, refusing contradictions.
func resolveRelease(file string, b agentBinary, opts *AgentPublishOptions) (goos, goarch, version string, notes []string, err error) {
	goos, goarch = b.GOOS, b.GOARCH
	if opts.OS != "" {
		if goos != "" && goos != opts.OS {
			return "", "", "", nil, cmdutil.UsageErrorf("%s is a %s binary but --os says %s", file, core.OSFamilyOf(goos), core.OSFamilyOf(opts.OS))
		}
		goos = opts.OS
	}
	if opts.Arch != "" {
		if goarch != "" && goarch != opts.Arch {
			return "", "", "", nil, cmdutil.UsageErrorf("%s is an %s binary but --arch says %s", file, goarch, opts.Arch)
		}
		goarch = opts.Arch
	}
	if goos == "" || goarch == "" {
		return "", "", "", nil, cmdutil.UsageErrorf("cannot tell the platform of %s: pass --os and --arch", file)
	}
	if _, ok := releaseGOOS(core.OSFamilyOf(goos)); !ok || !releaseArch(goarch) {
		return "", "", "", nil, cmdutil.UsageErrorf("%s is a %s/%s binary: agents run on windows, linux or macos, amd64 or arm64", file, goos, goarch)
	}

	version = opts.Version
	switch {
	case b.Kanade && !b.VersionKnown && version == "":
		return "", "", "", nil, cmdutil.UsageErrorf("cannot tell the version of %s (a -trimpath build for another platform hides it): pass --version", file)
	case b.Kanade && !b.VersionKnown:
		notes = append(notes, fmt.Sprintf("note: cannot check that %s reports %s; agents will refuse it if it does not", file, version))
	case b.Kanade && b.Version == "" && version == "":
		return "", "", "", nil, cmdutil.UsageErrorf("%s carries no version (it reports %s): build it with -ldflags \"-X %s<version>\"", file, core.DevVersion, versionLDFlag)
	case b.Kanade && b.Version == "":
		return "", "", "", nil, cmdutil.UsageErrorf("%s reports version %s, not %s: agents refuse a build whose version is not the rollout target; stamp it with -ldflags \"-X %s%s\"", file, core.DevVersion, version, versionLDFlag, version)
	case b.Kanade && version != "" && version != b.Version:
		return "", "", "", nil, cmdutil.UsageErrorf("%s reports version %s but --version says %s: agents refuse a build whose version is not the rollout target", file, b.Version, version)
	case b.Kanade:
		version = b.Version
	case version == "":
		return "", "", "", nil, cmdutil.UsageErrorf("cannot read a version from %s (not a kanade Go build): pass --version", file)
	case b.Module != "":
		notes = append(notes, fmt.Sprintf("note: %s is a Go program of module %s, not kanade; publishing it as %s anyway", file, b.Module, version))
	}
	if err := core.ValidReleaseVersion(version); err != nil {
		return "", "", "", nil, cmdutil.UsageErrorf("cannot publish %s: %v", file, err)
	}
	return goos, goarch, version, notes, nil
}

// agentReleaseKeys are the keys a release is stored under: upstream's key
// for the platform (which upstream agents fetch) and part 1's
// <version>-<os>-<arch> (which earlier kanade-go agents fetch).
func agentReleaseKeys(version, goos, goarch string) []string {
	return core.ReleaseKeys(version, goos, goarch)
}

func runAgentPublish(ctx context.Context, opts *AgentPublishOptions) error {
	fi, err := os.Stat(opts.File)
	if err != nil {
		return fmt.Errorf("read agent binary: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Size() == 0 {
		return cmdutil.UsageErrorf("%s is not a non-empty file", opts.File)
	}
	bin, err := inspectAgentBinary(ctx, opts.File)
	if err != nil {
		return &cmdutil.UsageError{Err: err}
	}
	goos, goarch, version, notes, err := resolveRelease(opts.File, bin, opts)
	if err != nil {
		return err
	}
	for _, n := range notes {
		fmt.Fprintln(opts.IO.ErrOut, n)
	}

	// Signed when a signing key is configured: agents that enforce
	// signatures install nothing else. The signature covers each key's
	// name and the digest of the bytes, computed before the upload so the
	// object is never in the store unsigned.
	signer, err := cmdutil.CommandSigner(ctx)
	if err != nil {
		return err
	}
	digest, err := fileObjectDigest(opts.File)
	if err != nil {
		return err
	}

	js, err := opts.JetStream(ctx)
	if err != nil {
		return err
	}
	store, err := js.ObjectStore(ctx, core.ObjectAgentReleases)
	if err != nil {
		return cmdutil.WithHint(fmt.Errorf("open object store %q: %w", core.ObjectAgentReleases, err), "run `kanade jetstream setup` first")
	}

	res := AgentPublishResult{
		Bucket: core.ObjectAgentReleases, Keys: agentReleaseKeys(version, goos, goarch),
		Version: version, OS: core.OSFamilyOf(goos), Arch: goarch, Size: fi.Size(),
	}
	if signer != nil {
		res.SignedBy = signer.KID()
	}
	for _, key := range res.Keys {
		var sig nats.Header
		if signer != nil {
			sig = nats.Header{}
			signer.SignRelease(key, digest, time.Now()).ApplyTo(sig)
		}
		info, sum, err := putAgentRelease(ctx, store, opts.IO, opts.File, key, res, sig)
		if err != nil {
			return err
		}
		if info.Digest != digest {
			return fmt.Errorf("upload %s/%s: digest %s differs from the file's %s (was the file changed during the upload?)", core.ObjectAgentReleases, key, info.Digest, digest)
		}
		if info.Size != uint64(fi.Size()) {
			return fmt.Errorf("upload %s/%s: stored %d bytes, the file has %d (was it changed during the upload?)", core.ObjectAgentReleases, key, info.Size, fi.Size())
		}
		if res.Digest != "" && (info.Digest != res.Digest || sum != res.SHA256) {
			return fmt.Errorf("upload %s/%s: digest %s differs from the first upload's %s (was the file changed during the upload?)", core.ObjectAgentReleases, key, info.Digest, res.Digest)
		}
		res.Digest, res.SHA256 = info.Digest, sum
	}

	if opts.JSON {
		return cmdutil.WriteJSON(opts.IO.Out, res)
	}
	rows := [][2]string{
		{"version", res.Version},
		{"platform", res.OS + "/" + res.Arch},
		{"size", fmt.Sprintf("%s (%d bytes)", humanBytes(uint64(res.Size)), res.Size)},
		{"digest", res.Digest},
		{"sha256", res.SHA256},
	}
	if res.SignedBy != "" {
		rows = append(rows, [2]string{"signed by", res.SignedBy})
	}
	for _, k := range res.Keys {
		rows = append(rows, [2]string{"key", res.Bucket + "/" + k})
	}
	if err := writeKV(opts.IO.Out, rows); err != nil {
		return err
	}
	if res.SignedBy == "" {
		fmt.Fprintf(opts.IO.ErrOut, "note: the release is not signed (no signing key configured): agents that require signed commands will not install it\n")
	}
	fmt.Fprintf(opts.IO.ErrOut, "next: kanade agent rollout %s --group canary --jitter 5m   (then --global --jitter 30m)\n", version)
	return nil
}

// fileObjectDigest is the object store's digest of file's bytes
// ("SHA-256=<base64url>"), what a release signature covers.
func fileObjectDigest(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("read agent binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read agent binary: %w", err)
	}
	return jetstream.GetObjectDigestValue(h), nil
}

// putAgentRelease uploads file under key (with the release signature
// headers sig, nil for none), with progress on ErrOut, and
// returns the stored info and the hex SHA-256 of what was read.
func putAgentRelease(ctx context.Context, store jetstream.ObjectStore, ios *cmdutil.IOStreams, file, key string, r AgentPublishResult, sig nats.Header) (*jetstream.ObjectInfo, string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, "", fmt.Errorf("read agent binary: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	pr := &publishProgress{r: io.TeeReader(f, h), w: ios.ErrOut, tty: ios.ErrTTY, total: r.Size, key: key}
	pr.start()
	info, err := store.Put(ctx, jetstream.ObjectMeta{
		Name:        key,
		Description: fmt.Sprintf("kanade agent %s for %s/%s", r.Version, r.OS, r.Arch),
		Metadata:    map[string]string{"version": r.Version, "os": r.OS, "arch": r.Arch},
		Headers:     sig,
	}, pr)
	pr.finish(err)
	if err != nil {
		return nil, "", fmt.Errorf("upload %s/%s: %w", core.ObjectAgentReleases, key, err)
	}
	return info, hex.EncodeToString(h.Sum(nil)), nil
}

// publishProgress counts bytes read for the upload and reports progress on
// stderr: a rewritten percentage on a terminal, start and end lines when
// piped.
type publishProgress struct {
	r     io.Reader
	w     io.Writer
	tty   bool
	total int64
	key   string
	done  int64
	shown int64 // last percentage shown
}

func (p *publishProgress) start() {
	if p.tty {
		fmt.Fprintf(p.w, "uploading %s   0%%", p.key)
		return
	}
	fmt.Fprintf(p.w, "uploading %s (%s)…\n", p.key, humanBytes(uint64(p.total)))
}

func (p *publishProgress) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	p.done += int64(n)
	if p.tty && p.total > 0 {
		if pct := p.done * 100 / p.total; pct != p.shown {
			p.shown = pct
			fmt.Fprintf(p.w, "\ruploading %s %3d%%", p.key, pct)
		}
	}
	return n, err
}

func (p *publishProgress) finish(err error) {
	switch {
	case p.tty && err == nil:
		fmt.Fprintf(p.w, "\r✓ uploaded %s          \n", p.key)
	case p.tty:
		fmt.Fprintln(p.w)
	case err == nil:
		fmt.Fprintf(p.w, "✓ uploaded %s\n", p.key)
	}
}
