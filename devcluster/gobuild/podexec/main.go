// Command podexec serves the kubelet exec endpoint for the devcluster's simulated nodes.
//
// kwok simulates nodes and pods but its own exec handler drops exit codes and never passes a
// client's stdin EOF on. podexec runs each pods/exec command as a process on this machine the
// way a container runtime would, so the e2e tier sees what a real cluster does:
//
//   - the exit code travels back in the exec Status (NonZeroExitCode / ExitCode cause), a
//     command that cannot start gives a Status without one, as containerd does;
//   - stdin EOF (or a dropped stream) closes the process's stdin; a disconnect does not kill
//     the process (kubernetes#89031): orphan handling is the client's job;
//   - inside, the process sees its pod: a private UTS and mount namespace with the pod's
//     hostname, its own /dev/shm, a resolv.conf pointing at the devcluster's CoreDNS with the
//     pod's search domains, the pod's service-account token at the standard path, the container's
//     env (plain values with the kubelet's $(VAR) expansion, and the downward API's fieldRefs)
//     and KUBERNETES_SERVICE_HOST/PORT, and the container's runAsUser/runAsGroup.
//
// Only the API server may connect: TLS with a required client certificate from the
// devcluster CA. Usage: podexec serve [flags]; "podexec enter" is its own re-exec step.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/creack/pty"
	authv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
	utilexec "k8s.io/utils/exec"
)

const saMountPath = "/var/run/secrets/kubernetes.io/serviceaccount"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "enter" {
		enter(os.Args[2:])
		return
	}
	if len(os.Args) < 2 || os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: podexec serve [flags]")
		os.Exit(2)
	}
	serve(os.Args[2:])
}

// ---------------------------------------------------------------------------------------
// serve

type server struct {
	api           *apiClient
	stateDir      string
	dnsAddress    string
	clusterDomain string
	serviceHost   string
	servicePort   string
	self          string

	idleTimeout time.Duration

	mu     sync.Mutex
	tokens map[string]time.Time // pod UID -> when its token was written
}

func serve(args []string) {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:10250", "address to serve the kubelet API on")
	cert := fs.String("tls-cert-file", "", "serving certificate")
	key := fs.String("tls-private-key-file", "", "serving key")
	clientCA := fs.String("client-ca-file", "", "CA that signs the API server's client certificate")
	apiServer := fs.String("apiserver", "", "API server URL, for pod lookups and tokens")
	apiCert := fs.String("api-client-cert", "", "client certificate for the API server")
	apiKey := fs.String("api-client-key", "", "client key for the API server")
	stateDir := fs.String("state-dir", "", "where per-pod files (tokens, resolv.conf) live")
	dns := fs.String("dns-address", "", "nameserver for the pods' resolv.conf")
	domain := fs.String("cluster-domain", "cluster.local", "cluster DNS domain")
	svcHost := fs.String("service-host", "", "KUBERNETES_SERVICE_HOST inside pods")
	svcPort := fs.String("service-port", "", "KUBERNETES_SERVICE_PORT inside pods")
	idle := fs.Duration("stream-idle-timeout", 4*time.Hour,
		"close an exec stream after this long without a data frame either way (containerd's stream_idle_timeout)")
	_ = fs.Parse(args)

	// The enter step must be this very binary: the file at os.Executable()'s path is rebuilt
	// by every checkout's "up" (a shared cache), and another build's "enter" may not know this
	// one's spec. /proc/self/exe is the running file even after it was replaced.
	self := "/proc/self/exe"
	api, err := newAPIClient(*apiServer, *clientCA, *apiCert, *apiKey)
	if err != nil {
		log.Fatalf("podexec: %v", err)
	}
	// The bind-mount target must exist; it stays empty outside the pods' mount namespaces.
	if err := os.MkdirAll(saMountPath, 0o755); err != nil {
		log.Fatalf("podexec: %v", err)
	}
	s := &server{
		api: api, stateDir: *stateDir, dnsAddress: *dns, clusterDomain: *domain,
		serviceHost: *svcHost, servicePort: *svcPort, self: self, tokens: map[string]time.Time{},
		idleTimeout: *idle,
	}
	caPEM, err := os.ReadFile(*clientCA)
	if err != nil {
		log.Fatalf("podexec: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("/exec/", s.handleExec)
	srv := &http.Server{
		Addr:              *listen,
		Handler:           mux,
		ReadHeaderTimeout: 30 * time.Second,
		TLSConfig:         &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool, MinVersion: tls.VersionTLS12},
	}
	log.Printf("podexec: serving on %s", *listen)
	log.Fatal(srv.ListenAndServeTLS(*cert, *key))
}

// handleExec serves /exec/{namespace}/{pod}/{container} and /exec/{namespace}/{pod}/{uid}/{container}.
func (s *server) handleExec(w http.ResponseWriter, req *http.Request) {
	if req.TLS == nil || len(req.TLS.VerifiedChains) == 0 {
		http.Error(w, "client certificate required", http.StatusUnauthorized)
		return
	}
	parts := strings.Split(strings.TrimPrefix(req.URL.Path, "/exec/"), "/")
	var ns, pod, uid, container string
	switch len(parts) {
	case 3:
		ns, pod, container = parts[0], parts[1], parts[2]
	case 4:
		ns, pod, uid, container = parts[0], parts[1], parts[2], parts[3]
	default:
		http.Error(w, "bad exec path", http.StatusBadRequest)
		return
	}
	opts, err := remotecommand.NewOptions(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	cmd := req.URL.Query()[corev1.ExecCommandParam]
	remotecommand.ServeExec(w, req, s, ns+"/"+pod, uid, container, cmd, opts,
		s.idleTimeout, 30*time.Second, remotecommand.SupportedStreamingProtocols)
}

// enterSpec is what the re-exec'd child needs to make its namespaces look like the pod.
type enterSpec struct {
	Hostname string  `json:"hostname"`
	Resolv   string  `json:"resolv,omitempty"`
	SADir    string  `json:"saDir,omitempty"`
	Shm      string  `json:"shm,omitempty"`
	UID      *int64  `json:"uid,omitempty"`
	GID      *int64  `json:"gid,omitempty"`
	Groups   []int64 `json:"groups,omitempty"`
	Dir      string  `json:"dir,omitempty"`
}

// ExecInContainer implements remotecommand.Executor.
func (s *server) ExecInContainer(ctx context.Context, name, _ string, container string, cmd []string,
	in io.Reader, out, errOut io.WriteCloser, tty bool, resize <-chan remotecommand.TerminalSize, _ time.Duration,
) error {
	if len(cmd) == 0 {
		return errors.New("no command given")
	}
	ns, podName, _ := strings.Cut(name, "/")
	pod, err := s.api.getPod(ctx, ns, podName)
	if err != nil {
		return err
	}
	c, err := findContainer(pod, container)
	if err != nil {
		return err
	}
	spec := enterSpec{Hostname: pod.Spec.Hostname, Dir: c.WorkingDir}
	if spec.Hostname == "" {
		spec.Hostname = pod.Name
	}
	env := []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOSTNAME=" + spec.Hostname,
	}
	if v, ok := os.LookupEnv("HOME"); ok {
		env = append(env, "HOME="+v)
	}
	if spec.Shm, err = s.shm(pod); err != nil {
		return err
	}
	if spec.Resolv, err = s.resolvConf(pod); err != nil {
		return err
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		if spec.SADir, err = s.serviceAccount(ctx, pod); err != nil {
			return err
		}
		env = append(env, "KUBERNETES_SERVICE_HOST="+s.serviceHost, "KUBERNETES_SERVICE_PORT="+s.servicePort)
	}
	env = append(env, containerEnv(pod, c)...)
	spec.UID, spec.GID, spec.Groups = identity(pod, c)
	// A command that cannot start is an error without exit code, as containerd reports it.
	if _, err := lookPath(cmd[0], env); err != nil {
		return fmt.Errorf("exec: %q: executable file not found in $PATH", cmd[0])
	}
	raw, _ := json.Marshal(spec)
	p := exec.Command(s.self, append([]string{"enter", string(raw), "--"}, cmd...)...)
	p.Env = env
	p.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWUTS | syscall.CLONE_NEWNS}
	if tty {
		err = runTTY(p, in, out, resize)
	} else {
		err = runPipes(p, in, out, errOut)
	}
	return exitError(err)
}

func runPipes(p *exec.Cmd, in io.Reader, out, errOut io.Writer) error {
	p.Stdout, p.Stderr = out, errOut
	if in == nil {
		return p.Run()
	}
	w, err := p.StdinPipe()
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil {
		return err
	}
	go func() {
		// Client EOF, or a broken stream, is the process's stdin EOF (containerd: StdinOnce).
		_, _ = io.Copy(w, in)
		_ = w.Close()
	}()
	return p.Wait()
}

func runTTY(p *exec.Cmd, in io.Reader, out io.Writer, resize <-chan remotecommand.TerminalSize) error {
	p.SysProcAttr.Setsid = true
	p.SysProcAttr.Setctty = true
	f, err := pty.StartWithAttrs(p, nil, p.SysProcAttr)
	if err != nil {
		return err
	}
	defer f.Close()
	if resize != nil {
		go func() {
			for size := range resize {
				_ = pty.Setsize(f, &pty.Winsize{Rows: size.Height, Cols: size.Width})
			}
		}()
	}
	if in != nil {
		go func() { _, _ = io.Copy(f, in) }()
	}
	go func() { _, _ = io.Copy(out, f) }()
	return p.Wait()
}

// exitError turns a finished process into what ServeExec reports: exit N, or 128+signal.
func exitError(err error) error {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return err
	}
	code := ee.ExitCode()
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	return utilexec.CodeExitError{Err: err, Code: code}
}

// containerEnv is the container's env as the kubelet makes it: values with $(VAR) expanded
// from the variables before them, fieldRefs from the pod (the downward API's fields; a missing
// label or annotation is empty). Other sources (secrets, config maps, resources) are skipped.
func containerEnv(pod *corev1.Pod, c *corev1.Container) []string {
	seen := map[string]string{}
	var out []string
	for _, e := range c.Env {
		value := e.Value
		switch {
		case e.ValueFrom == nil:
			value = expandEnv(value, seen)
		case e.ValueFrom.FieldRef != nil:
			var ok bool
			if value, ok = podField(pod, e.ValueFrom.FieldRef.FieldPath); !ok {
				continue
			}
		default:
			continue
		}
		seen[e.Name] = value
		out = append(out, e.Name+"="+value)
	}
	return out
}

// podField is a downward API fieldPath of the pod, as the kubelet resolves it.
func podField(pod *corev1.Pod, path string) (string, bool) {
	for prefix, m := range map[string]map[string]string{
		"metadata.labels": pod.Labels, "metadata.annotations": pod.Annotations,
	} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], true
		}
	}
	switch path {
	case "metadata.name":
		return pod.Name, true
	case "metadata.namespace":
		return pod.Namespace, true
	case "metadata.uid":
		return string(pod.UID), true
	case "spec.nodeName":
		return pod.Spec.NodeName, true
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, true
	case "status.podIP":
		return pod.Status.PodIP, true
	case "status.hostIP":
		return pod.Status.HostIP, true
	}
	return "", false
}

// expandEnv is the kubelet's $(VAR) expansion (k8s.io/kubernetes third_party expansion):
// $(NAME) of a variable defined before becomes its value, an unknown one stays as written,
// $$ is a literal $.
func expandEnv(input string, vars map[string]string) string {
	var buf strings.Builder
	checkpoint := 0
	for cursor := 0; cursor < len(input); cursor++ {
		if input[cursor] != '$' || cursor+1 >= len(input) {
			continue
		}
		buf.WriteString(input[checkpoint:cursor])
		rest := input[cursor+1:]
		advance := 1
		switch {
		case rest[0] == '$':
			buf.WriteByte('$')
		case rest[0] == '(':
			if end := strings.IndexByte(rest, ')'); end > 0 {
				name := rest[1:end]
				if v, ok := vars[name]; ok {
					buf.WriteString(v)
				} else {
					buf.WriteString("$(" + name + ")")
				}
				advance = end + 1
			} else {
				buf.WriteString("$(")
			}
		default:
			buf.WriteString(input[cursor : cursor+2])
		}
		cursor += advance
		checkpoint = cursor + 1
	}
	return buf.String() + input[checkpoint:]
}

func findContainer(pod *corev1.Pod, name string) (*corev1.Container, error) {
	if pod.Status.Phase != corev1.PodRunning {
		return nil, fmt.Errorf("pod %s/%s is not running (phase %s)", pod.Namespace, pod.Name, pod.Status.Phase)
	}
	for i := range pod.Spec.Containers {
		if name == "" || pod.Spec.Containers[i].Name == name {
			return &pod.Spec.Containers[i], nil
		}
	}
	return nil, fmt.Errorf("container %q not found in pod %s/%s", name, pod.Namespace, pod.Name)
}

// identity is the container's effective runAsUser/runAsGroup/supplementalGroups.
func identity(pod *corev1.Pod, c *corev1.Container) (uid, gid *int64, groups []int64) {
	if psc := pod.Spec.SecurityContext; psc != nil {
		uid, gid, groups = psc.RunAsUser, psc.RunAsGroup, psc.SupplementalGroups
	}
	if csc := c.SecurityContext; csc != nil {
		if csc.RunAsUser != nil {
			uid = csc.RunAsUser
		}
		if csc.RunAsGroup != nil {
			gid = csc.RunAsGroup
		}
	}
	if uid != nil && gid == nil {
		zero := int64(0)
		gid = &zero // the runtime's default: group 0 unless runAsGroup says otherwise
	}
	return uid, gid, groups
}

func (s *server) podDir(pod *corev1.Pod) string {
	return filepath.Join(s.stateDir, "pods", string(pod.UID))
}

// shm is the pod's own /dev/shm (as a runtime gives each pod one): what the pod's processes
// leave there stays in the pod's folder under the state dir, not in this machine's /dev/shm.
func (s *server) shm(pod *corev1.Pod) (string, error) {
	dir := filepath.Join(s.podDir(pod), "shm")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, os.Chmod(dir, 0o1777)
}

func (s *server) resolvConf(pod *corev1.Pod) (string, error) {
	if s.dnsAddress == "" {
		return "", nil
	}
	d := s.clusterDomain
	search := []string{pod.Namespace + ".svc." + d, "svc." + d, d}
	if dc := pod.Spec.DNSConfig; dc != nil {
		search = append(search, dc.Searches...)
	}
	text := fmt.Sprintf("nameserver %s\nsearch %s\noptions ndots:5\n", s.dnsAddress, strings.Join(search, " "))
	path := filepath.Join(s.podDir(pod), "resolv.conf")
	return path, writeAtomic(path, []byte(text), 0o644)
}

// serviceAccount writes a pod-bound token (refreshed every 30 minutes), the CA and the
// namespace, as the kubelet's projected volume would, and returns the folder.
func (s *server) serviceAccount(ctx context.Context, pod *corev1.Pod) (string, error) {
	dir := filepath.Join(s.podDir(pod), "serviceaccount")
	s.mu.Lock()
	fresh := time.Since(s.tokens[string(pod.UID)]) < 30*time.Minute
	s.mu.Unlock()
	if fresh {
		return dir, nil
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	token, err := s.api.createToken(ctx, pod, sa)
	if err != nil {
		return "", err
	}
	for name, data := range map[string][]byte{"token": []byte(token), "ca.crt": s.api.caPEM, "namespace": []byte(pod.Namespace)} {
		if err := writeAtomic(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	s.mu.Lock()
	s.tokens[string(pod.UID)] = time.Now()
	s.mu.Unlock()
	return dir, nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return exec.LookPath(name)
	}
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			for _, dir := range filepath.SplitList(v) {
				p := filepath.Join(dir, name)
				if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
					return p, nil
				}
			}
		}
	}
	return "", exec.ErrNotFound
}

// ---------------------------------------------------------------------------------------
// the API server, with the devcluster's client certificate

type apiClient struct {
	base  string
	http  *http.Client
	caPEM []byte
}

func newAPIClient(server, caFile, certFile, keyFile string) (*apiClient, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	return &apiClient{base: strings.TrimRight(server, "/"), http: &http.Client{Transport: tr, Timeout: 30 * time.Second}, caPEM: caPEM}, nil
}

func (a *apiClient) do(ctx context.Context, method, path string, body, into any) error {
	var rd io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		var st struct{ Message string }
		_ = json.Unmarshal(raw, &st)
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, st.Message)
	}
	return json.Unmarshal(raw, into)
}

func (a *apiClient) getPod(ctx context.Context, ns, name string) (*corev1.Pod, error) {
	var pod corev1.Pod
	err := a.do(ctx, http.MethodGet, "/api/v1/namespaces/"+ns+"/pods/"+name, nil, &pod)
	return &pod, err
}

func (a *apiClient) createToken(ctx context.Context, pod *corev1.Pod, sa string) (string, error) {
	exp := int64(3600)
	req := authv1.TokenRequest{
		TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"},
		Spec: authv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}
	var out authv1.TokenRequest
	path := "/api/v1/namespaces/" + pod.Namespace + "/serviceaccounts/" + sa + "/token"
	if err := a.do(ctx, http.MethodPost, path, req, &out); err != nil {
		return "", err
	}
	return out.Status.Token, nil
}

// ---------------------------------------------------------------------------------------
// enter: runs in the new UTS and mount namespaces, then becomes the command

func enter(args []string) {
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "podexec: "+format+"\n", a...)
		os.Exit(126)
	}
	if len(args) < 3 || args[1] != "--" {
		fail("usage: enter SPEC -- COMMAND...")
	}
	var spec enterSpec
	if err := json.Unmarshal([]byte(args[0]), &spec); err != nil {
		fail("bad spec: %v", err)
	}
	argv := args[2:]
	// Keep this namespace's mounts to itself.
	if err := syscall.Mount("", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fail("making mounts private: %v", err)
	}
	if spec.Shm != "" {
		if err := syscall.Mount(spec.Shm, "/dev/shm", "", syscall.MS_BIND, ""); err != nil {
			fail("/dev/shm: %v", err)
		}
	}
	if spec.Resolv != "" {
		if err := syscall.Mount(spec.Resolv, "/etc/resolv.conf", "", syscall.MS_BIND, ""); err != nil {
			fail("resolv.conf: %v", err)
		}
	}
	if spec.SADir != "" {
		if err := syscall.Mount(spec.SADir, saMountPath, "", syscall.MS_BIND, ""); err != nil {
			fail("service-account token: %v", err)
		}
	}
	if err := syscall.Sethostname([]byte(spec.Hostname)); err != nil {
		fail("hostname: %v", err)
	}
	if spec.Dir != "" {
		_ = os.Chdir(spec.Dir) // images' working dirs need not exist on this machine
	}
	if spec.UID != nil {
		groups := make([]int, len(spec.Groups))
		for i, g := range spec.Groups {
			groups[i] = int(g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			fail("setgroups: %v", err)
		}
		if err := syscall.Setgid(int(*spec.GID)); err != nil {
			fail("setgid: %v", err)
		}
		if err := syscall.Setuid(int(*spec.UID)); err != nil {
			fail("setuid: %v", err)
		}
		// runc's choice for a uid the image may not know: HOME=/.
		os.Setenv("HOME", "/")
	}
	path, err := lookPath(argv[0], os.Environ())
	if err != nil {
		fail("%s: not found", argv[0])
	}
	if err := syscall.Exec(path, argv, os.Environ()); err != nil {
		fail("exec %s: %v", argv[0], err)
	}
}
