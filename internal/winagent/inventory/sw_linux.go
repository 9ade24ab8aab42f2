package inventory

import (
	"context"
	"errors"
	"fmt"
	"os/exec"

	"github.com/kanadehq/kanade-go/internal/core"
)

// platformSWSources ask the package manager: dpkg on Debian and its
// derivatives, rpm on Red Hat, SUSE and friends. A machine with neither
// reports no software rather than an error.
func platformSWSources() []swSource {
	return []swSource{{name: "packages", run: linuxPackages}}
}

func linuxPackages(ctx context.Context) ([]core.SoftwareItem, error) {
	if _, err := exec.LookPath("dpkg-query"); err == nil {
		out, err := exec.CommandContext(ctx, "dpkg-query", "-W", "-f="+dpkgQueryFormat).Output()
		if err != nil {
			return nil, fmt.Errorf("dpkg-query: %w", cmdErr(err))
		}
		return parseDpkg(out), nil
	}
	if _, err := exec.LookPath("rpm"); err == nil {
		out, err := exec.CommandContext(ctx, "rpm", "-qa", "--qf", rpmQueryFormat).Output()
		if err != nil {
			return nil, fmt.Errorf("rpm -qa: %w", cmdErr(err))
		}
		return parseRPM(out), nil
	}
	return nil, nil
}

// cmdErr adds a failed command's stderr to its error.
func cmdErr(err error) error {
	var ee *exec.ExitError
	if errors.As(err, &ee) && len(ee.Stderr) > 0 {
		return fmt.Errorf("%w: %s", err, firstLine(ee.Stderr))
	}
	return err
}
