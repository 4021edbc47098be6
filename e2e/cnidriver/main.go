// cnidriver drives CNI plugins through the reference runtime library (libcni)
// the way container runtimes and Multus do, for memif-cni's conformance tests
// and benchmark. See README.md for usage.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
)

const (
	exitOK       = 0
	exitFailure  = 1  // bench: an ADD failed
	exitCNIError = 2  // the plugin (or libcni) returned a CNI error object
	exitOther    = 3  // any other error
	exitUsage    = 64 // bad command line
)

const usageText = `usage:
  cnidriver add|check|del --conf FILE --netns PATH --ifname NAME --containerid ID
            [--args 'K=V;K=V'] [--cap-args JSON] [--cni-path DIR:DIR] [--cache-dir DIR]
  cnidriver version --conf FILE [--cni-path DIR:DIR]
  cnidriver exec --plugin NAME --command VERB [--conf FILE | --stdin-file FILE]
            [--netns PATH] [--ifname NAME] [--containerid ID] [--args 'K=V;K=V'] [--cni-path DIR:DIR]
  cnidriver status|gc ...        (same flags as exec, --command implied)
  cnidriver bench --conf FILE --netns-list FILE --ifname NAME [--n N]
            [--args 'K=V;K=V'] [--cap-args JSON] [--cni-path DIR:DIR] [--cache-dir DIR]
`

func main() {
	if filepath.Base(os.Args[0]) == prevProviderName {
		os.Exit(prevProvider())
	}
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usageText)
		os.Exit(exitUsage)
	}
	sub, rest := os.Args[1], os.Args[2:]
	var code int
	switch sub {
	case "add", "check", "del":
		code = cmdNetwork(sub, rest)
	case "version":
		code = cmdVersion(rest)
	case "exec":
		code = cmdExec(rest, "")
	case "status":
		code = cmdExec(rest, "STATUS")
	case "gc":
		code = cmdExec(rest, "GC")
	case "bench":
		code = cmdBench(rest)
	case "help", "-h", "--help":
		fmt.Fprint(os.Stdout, usageText)
	default:
		fmt.Fprintf(os.Stderr, "cnidriver: unknown subcommand %q\n%s", sub, usageText)
		code = exitUsage
	}
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// helpers

func defaultCNIPath() string {
	if p := os.Getenv("CNI_PATH"); p != "" {
		return p
	}
	return "/usr/lib/cni"
}

func splitPath(p string) []string {
	var out []string
	for _, d := range filepath.SplitList(p) {
		if d != "" {
			out = append(out, d)
		}
	}
	return out
}

// parseArgs turns "K=V;K=V" into libcni's RuntimeConf.Args pairs.
func parseArgs(s string) ([][2]string, error) {
	var out [][2]string
	if s == "" {
		return out, nil
	}
	for _, item := range strings.Split(s, ";") {
		if item == "" {
			continue
		}
		kv := strings.SplitN(item, "=", 2)
		if len(kv) != 2 {
			return nil, fmt.Errorf("invalid --args element %q (want K=V)", item)
		}
		out = append(out, [2]string{kv[0], kv[1]})
	}
	return out, nil
}

// loadList reads a single network config or a conflist and always returns a
// list, the way runtimes do (a single conf is wrapped by ConfListFromConf).
func loadList(file string) (*libcni.NetworkConfigList, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var probe map[string]json.RawMessage
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, fmt.Errorf("error parsing configuration %s: %w", file, err)
	}
	if _, ok := probe["plugins"]; ok {
		return libcni.ConfListFromBytes(data)
	}
	conf, err := libcni.ConfFromBytes(data)
	if err != nil {
		return nil, err
	}
	return libcni.ConfListFromConf(conf)
}

type errJSON struct {
	Code    uint   `json:"code"`
	Msg     string `json:"msg"`
	Details string `json:"details,omitempty"`
}

// reportError prints err as JSON on stdout and returns the exit code:
// exitCNIError for a *types.Error anywhere in the chain, exitOther otherwise.
func reportError(err error) int {
	var cerr *types.Error
	if errors.As(err, &cerr) {
		writeJSON(os.Stdout, errJSON{Code: cerr.Code, Msg: cerr.Msg, Details: cerr.Details})
		// Keep libcni's context (which plugin failed) visible for humans.
		fmt.Fprintf(os.Stderr, "cnidriver: %v\n", err)
		return exitCNIError
	}
	writeJSON(os.Stdout, errJSON{Code: 0, Msg: err.Error()})
	return exitOther
}

func writeJSON(w io.Writer, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnidriver: marshal: %v\n", err)
		return
	}
	w.Write(append(b, '\n'))
}

func usageErr(fs *flag.FlagSet, format string, a ...interface{}) int {
	fmt.Fprintf(os.Stderr, "cnidriver %s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fs.Usage()
	return exitUsage
}

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(os.Stderr, usageText)
	}
	return fs
}

// ---------------------------------------------------------------------------
// add / check / del

type netFlags struct {
	conf, netns, ifname, containerID, args, capArgs, cniPath, cacheDir string
}

func (n *netFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&n.conf, "conf", "", "network config (.conf with \"type\") or conflist (with \"plugins\")")
	fs.StringVar(&n.netns, "netns", "", "network namespace path (CNI_NETNS)")
	fs.StringVar(&n.ifname, "ifname", "", "interface name (CNI_IFNAME)")
	fs.StringVar(&n.containerID, "containerid", "", "container id (CNI_CONTAINERID)")
	fs.StringVar(&n.args, "args", "", "CNI_ARGS as 'K=V;K=V' (RuntimeConf.Args)")
	fs.StringVar(&n.capArgs, "cap-args", "", "JSON object of capability args (RuntimeConf.CapabilityArgs)")
	fs.StringVar(&n.cniPath, "cni-path", defaultCNIPath(), "plugin search path, ':'-separated")
	fs.StringVar(&n.cacheDir, "cache-dir", "", "libcni cache dir (default libcni's "+libcni.CacheDir+")")
}

func (n *netFlags) setup() (*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf, error) {
	list, err := loadList(n.conf)
	if err != nil {
		return nil, nil, nil, err
	}
	pairs, err := parseArgs(n.args)
	if err != nil {
		return nil, nil, nil, err
	}
	rt := &libcni.RuntimeConf{
		ContainerID: n.containerID,
		NetNS:       n.netns,
		IfName:      n.ifname,
		Args:        pairs,
	}
	if n.capArgs != "" {
		caps := map[string]interface{}{}
		if err := json.Unmarshal([]byte(n.capArgs), &caps); err != nil {
			return nil, nil, nil, fmt.Errorf("invalid --cap-args: %w", err)
		}
		rt.CapabilityArgs = caps
	}
	cni := libcni.NewCNIConfigWithCacheDir(splitPath(n.cniPath), n.cacheDir, nil)
	return cni, list, rt, nil
}

func cmdNetwork(verb string, argv []string) int {
	fs := newFlagSet(verb)
	var nf netFlags
	nf.register(fs)
	if err := fs.Parse(argv); err != nil {
		return exitUsage
	}
	if fs.NArg() > 0 {
		return usageErr(fs, "unexpected arguments %q", fs.Args())
	}
	if nf.conf == "" {
		return usageErr(fs, "--conf is required")
	}
	cni, list, rt, err := nf.setup()
	if err != nil {
		return reportError(err)
	}
	ctx := context.Background()
	switch verb {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			return reportError(err)
		}
		b, err := json.Marshal(res)
		if err != nil {
			return reportError(fmt.Errorf("marshal result: %w", err))
		}
		os.Stdout.Write(append(b, '\n'))
	case "check":
		if err := cni.CheckNetworkList(ctx, list, rt); err != nil {
			return reportError(err)
		}
	case "del":
		if err := cni.DelNetworkList(ctx, list, rt); err != nil {
			return reportError(err)
		}
	}
	return exitOK
}

// ---------------------------------------------------------------------------
// version

func cmdVersion(argv []string) int {
	fs := newFlagSet("version")
	conf := fs.String("conf", "", "network config or conflist")
	cniPath := fs.String("cni-path", defaultCNIPath(), "plugin search path, ':'-separated")
	if err := fs.Parse(argv); err != nil {
		return exitUsage
	}
	if *conf == "" {
		return usageErr(fs, "--conf is required")
	}
	list, err := loadList(*conf)
	if err != nil {
		return reportError(err)
	}
	cni := libcni.NewCNIConfig(splitPath(*cniPath), nil)
	out := map[string]json.RawMessage{}
	for _, p := range list.Plugins {
		t := p.Network.Type
		if _, done := out[t]; done {
			continue
		}
		info, err := cni.GetVersionInfo(context.Background(), t)
		if err != nil {
			return reportError(fmt.Errorf("plugin %q: %w", t, err))
		}
		var buf bytes.Buffer
		if err := info.Encode(&buf); err != nil {
			return reportError(err)
		}
		out[t] = json.RawMessage(bytes.TrimSpace(buf.Bytes()))
	}
	writeJSON(os.Stdout, out)
	return exitOK
}

// ---------------------------------------------------------------------------
// exec: raw invocation, bypassing libcni's checks

func cmdExec(argv []string, fixedCommand string) int {
	name := "exec"
	if fixedCommand != "" {
		name = strings.ToLower(fixedCommand)
	}
	fs := newFlagSet(name)
	plugin := fs.String("plugin", "", "plugin name (looked up in --cni-path) or path")
	command := fs.String("command", fixedCommand, "CNI_COMMAND")
	conf := fs.String("conf", "", "file whose bytes go to stdin verbatim")
	stdinFile := fs.String("stdin-file", "", "same as --conf")
	netns := fs.String("netns", "", "CNI_NETNS (unset unless given)")
	ifname := fs.String("ifname", "", "CNI_IFNAME (unset unless given)")
	containerID := fs.String("containerid", "", "CNI_CONTAINERID (unset unless given)")
	args := fs.String("args", "", "CNI_ARGS (unset unless given)")
	cniPath := fs.String("cni-path", defaultCNIPath(), "plugin search path; CNI_PATH is set only if given")
	if err := fs.Parse(argv); err != nil {
		return exitUsage
	}
	if *plugin == "" {
		return usageErr(fs, "--plugin is required")
	}
	if *conf != "" && *stdinFile != "" {
		return usageErr(fs, "give only one of --conf and --stdin-file")
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })

	pluginPath := *plugin
	if !strings.Contains(pluginPath, "/") {
		found := ""
		for _, d := range splitPath(*cniPath) {
			cand := filepath.Join(d, pluginPath)
			if st, err := os.Stat(cand); err == nil && st.Mode().IsRegular() {
				found = cand
				break
			}
		}
		if found == "" {
			return reportError(fmt.Errorf("failed to find plugin %q in path %s", pluginPath, *cniPath))
		}
		pluginPath = found
	}

	var stdin []byte
	if f := *conf + *stdinFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return reportError(err)
		}
		stdin = b
	}

	// Inherit our environment minus any CNI_* variable, then set exactly the
	// variables the caller gave (an explicitly empty value stays set).
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CNI_") {
			env = append(env, kv)
		}
	}
	set := func(flagName, envName, val string) {
		if given[flagName] {
			env = append(env, envName+"="+val)
		}
	}
	if given["command"] || fixedCommand != "" {
		env = append(env, "CNI_COMMAND="+*command)
	}
	set("containerid", "CNI_CONTAINERID", *containerID)
	set("netns", "CNI_NETNS", *netns)
	set("ifname", "CNI_IFNAME", *ifname)
	set("args", "CNI_ARGS", *args)
	set("cni-path", "CNI_PATH", *cniPath)

	cmd := exec.Command(pluginPath)
	cmd.Env = env
	cmd.Stdin = bytes.NewReader(stdin)
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr
	err := cmd.Run()
	if err == nil {
		return exitOK
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ee.ExitCode()
	}
	return reportError(err)
}

// ---------------------------------------------------------------------------
// bench

func cmdBench(argv []string) int {
	fs := newFlagSet("bench")
	var nf netFlags
	nf.register(fs)
	netnsList := fs.String("netns-list", "", "file with one netns path per line (created by the caller)")
	n := fs.Int("n", -1, "number of attachments (default: every line of --netns-list)")
	if err := fs.Parse(argv); err != nil {
		return exitUsage
	}
	if nf.conf == "" || *netnsList == "" {
		return usageErr(fs, "--conf and --netns-list are required")
	}
	if nf.ifname == "" {
		nf.ifname = "eth0"
	}
	paths, err := readLines(*netnsList)
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnidriver bench: %v\n", err)
		return exitFailure
	}
	if *n >= 0 {
		if *n > len(paths) {
			return usageErr(fs, "--n %d but %s has only %d netns paths", *n, *netnsList, len(paths))
		}
		paths = paths[:*n]
	}
	cni, list, rtBase, err := nf.setup()
	if err != nil {
		fmt.Fprintf(os.Stderr, "cnidriver bench: %v\n", err)
		return exitFailure
	}
	ctx := context.Background()
	rts := make([]*libcni.RuntimeConf, len(paths))
	for i, p := range paths {
		rt := *rtBase
		rt.ContainerID = fmt.Sprintf("bench%d", i)
		rt.NetNS = p
		rts[i] = &rt
	}

	addUs := make([]float64, 0, len(rts))
	delUs := make([]float64, 0, len(rts))
	errCount := 0
	var addErr error
	added := 0
	for i, rt := range rts {
		t0 := time.Now()
		_, err := cni.AddNetworkList(ctx, list, rt)
		d := time.Since(t0)
		if err != nil {
			addErr = fmt.Errorf("ADD %d (%s): %w", i, rt.NetNS, err)
			errCount++
			break
		}
		addUs = append(addUs, micros(d))
		added++
	}
	// DEL whatever was added (also after a failed ADD, to clean up; the
	// failed attachment itself gets a DEL too, as a runtime would do).
	delCount := added
	if addErr != nil {
		delCount = added + 1
	}
	for i := 0; i < delCount; i++ {
		t0 := time.Now()
		err := cni.DelNetworkList(ctx, list, rts[i])
		d := time.Since(t0)
		if err != nil {
			errCount++
			fmt.Fprintf(os.Stderr, "cnidriver bench: DEL %d (%s): %v\n", i, rts[i].NetNS, err)
			continue
		}
		if i < added {
			delUs = append(delUs, micros(d))
		}
	}

	writeJSON(os.Stdout, map[string]interface{}{
		"add_us": addUs,
		"del_us": delUs,
		"errors": errCount,
	})
	fmt.Fprintf(os.Stderr, "bench: n=%d add p50=%.0fus p99=%.0fus | del p50=%.0fus p99=%.0fus | errors=%d\n",
		len(rts), percentile(addUs, 50), percentile(addUs, 99),
		percentile(delUs, 50), percentile(delUs, 99), errCount)
	if addErr != nil {
		fmt.Fprintf(os.Stderr, "cnidriver bench: first error: %v\n", addErr)
		return exitFailure
	}
	return exitOK
}

func micros(d time.Duration) float64 {
	return math.Round(float64(d.Nanoseconds())/10) / 100 // two decimals
}

// percentile by nearest rank; 0 for an empty sample.
func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	rank := int(math.Ceil(p / 100 * float64(len(s))))
	if rank < 1 {
		rank = 1
	}
	return s[rank-1]
}

func readLines(file string) ([]string, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, line)
		}
	}
	return out, sc.Err()
}

// ---------------------------------------------------------------------------
// prev-provider: a minimal CNI plugin for chaining tests. Installed as a
// link named "cni-prev-provider" to this binary, it answers ADD with the
// config's "testResult" (cniVersion set to the config's), succeeds on DEL
// and CHECK, and answers VERSION. It creates nothing.

const prevProviderName = "cni-prev-provider"

func prevProvider() int {
	in, _ := io.ReadAll(os.Stdin)
	var conf map[string]interface{}
	_ = json.Unmarshal(in, &conf)
	ver, _ := conf["cniVersion"].(string)
	if ver == "" {
		ver = "1.0.0"
	}
	switch os.Getenv("CNI_COMMAND") {
	case "ADD":
		res, ok := conf["testResult"].(map[string]interface{})
		if !ok {
			writeJSON(os.Stdout, map[string]interface{}{"cniVersion": ver, "code": 7, "msg": "testResult missing"})
			return 1
		}
		res["cniVersion"] = ver
		writeJSON(os.Stdout, res)
	case "VERSION":
		writeJSON(os.Stdout, map[string]interface{}{"cniVersion": ver,
			"supportedVersions": []string{"0.3.0", "0.3.1", "0.4.0", "1.0.0"}})
	}
	return 0
}
