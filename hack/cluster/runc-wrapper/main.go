// runc-wrapper: the OCI runtime of the local cluster's nodes (hack/cluster.sh). It edits what
// runc is asked to do so that it fits this sandbox, then runs the real runc with the same
// arguments:
//   - a negative process.oomScoreAdj (kubelet asks -998 for pod sandboxes) becomes 0: lowering
//     it needs CAP_SYS_RESOURCE, which this machine's bounding set lacks, and runc then fails with
//     "can't get final child's PID from pipe: EOF";
//   - every capability list keeps only what this process's bounding set holds: a privileged
//     container (and `exec` into one) asks for all of them and fails with "unable to apply caps".
// It edits config.json of the bundle (create, run) and the --process file (exec).
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const realRunc = "/usr/sbin/runc"

// The kernel's capability numbers (include/uapi/linux/capability.h).
var capNames = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
	"CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
	"CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
	"CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
	"CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
	"CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
}

func bounding() map[string]bool {
	keep := map[string]bool{}
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(data), "\n") {
		if !strings.HasPrefix(line, "CapBnd:") {
			continue
		}
		mask, err := strconv.ParseUint(strings.TrimSpace(line[len("CapBnd:"):]), 16, 64)
		if err != nil {
			return nil
		}
		for i, name := range capNames {
			if mask&(1<<uint(i)) != 0 {
				keep[name] = true
			}
		}
	}
	return keep
}

// fixProcess edits one OCI "process" object; it says whether anything changed.
func fixProcess(proc map[string]any, keep map[string]bool) bool {
	changed := false
	if adj, ok := proc["oomScoreAdj"].(float64); ok && adj < 0 {
		proc["oomScoreAdj"] = 0
		changed = true
	}
	caps, ok := proc["capabilities"].(map[string]any)
	if !ok || keep == nil {
		return changed
	}
	for set, list := range caps {
		items, ok := list.([]any)
		if !ok {
			continue
		}
		kept := []any{}
		for _, c := range items {
			if name, ok := c.(string); ok && keep[name] {
				kept = append(kept, c)
			}
		}
		if len(kept) != len(items) {
			caps[set] = kept
			changed = true
		}
	}
	return changed
}

// fixFile rewrites a JSON file; inProcess says whether the object is a config (with "process").
func fixFile(path string, inProcess bool, keep map[string]bool) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		return err
	}
	proc := doc
	if inProcess {
		p, ok := doc["process"].(map[string]any)
		if !ok {
			return nil
		}
		proc = p
	}
	if !fixProcess(proc, keep) {
		return nil
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	return os.WriteFile(path, out, 0o600)
}

// optionValue finds "--name VALUE" or "--name=VALUE" (or the short form) in args.
func optionValue(args []string, names ...string) string {
	for i, a := range args {
		for _, n := range names {
			if a == n && i+1 < len(args) {
				return args[i+1]
			}
			if strings.HasPrefix(a, n+"=") {
				return a[len(n)+1:]
			}
		}
	}
	return ""
}

func command(args []string) (string, []string) {
	// Global options come first; those that take a value (runc --help).
	valued := map[string]bool{"--log": true, "--log-format": true, "--root": true, "--criu": true, "--rootless": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return a, args[i+1:]
		}
		if valued[a] {
			i++
		}
	}
	return "", nil
}

func main() {
	keep := bounding()
	cmd, rest := command(os.Args[1:])
	var err error
	switch cmd {
	case "create", "run":
		bundle := optionValue(rest, "--bundle", "-b")
		if bundle == "" {
			bundle, _ = os.Getwd()
		}
		err = fixFile(filepath.Join(bundle, "config.json"), true, keep)
	case "exec":
		if p := optionValue(rest, "--process", "-p"); p != "" {
			err = fixFile(p, false, keep)
		}
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "runc-wrapper: %v\n", err)
	}
	args := append([]string{realRunc}, os.Args[1:]...)
	if err := syscall.Exec(realRunc, args, os.Environ()); err != nil {
		fmt.Fprintf(os.Stderr, "runc-wrapper: exec %s: %v\n", realRunc, err)
		os.Exit(127)
	}
}
