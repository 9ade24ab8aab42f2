package main

import (
	"context"
	"fmt"
	"os/exec"
	"runtime"
	"strings"
)

// runEnv prints the machine the figures come from.
func runEnv(ctx context.Context, _ *options) error {
	fmt.Printf("go: %s %s/%s, GOMAXPROCS %d\n", runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0))
	for _, c := range [][]string{{"nproc"}, {"sh", "-c", "lscpu | head -n 15"}, {"free", "-h"}, {"uptime"}, {"uname", "-srm"}} {
		out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput()
		fmt.Printf("$ %s\n", strings.Join(c, " "))
		if err != nil {
			fmt.Printf("(%v)\n", err)
			continue
		}
		fmt.Print(string(out))
	}
	return nil
}
