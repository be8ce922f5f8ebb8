// A SPDY/3.1 client for proxrt's streaming adapter, written the way Kubernetes' client-go
// speaks to kubelet: an HTTP upgrade to SPDY/3.1, then moby/spdystream (the code
// Kubernetes vendors) for the remotecommand v4 protocol (exec) and one port-forward
// session. Built in GOPATH mode against Debian's golang-github-docker-spdystream-dev.
//
// Usage: go-spdy-client ADDR ECHO_PORT CLOSED_PORT UNLISTED_PORT
//        go-spdy-client exec-url URL   (the URL a CRI Exec answered, for a container
//                                       running `cat; echo to stderr >&2; exit 3`)
// Exits 0 when everything the server sent is what the protocol promises; otherwise prints
// what differed and exits 1.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/moby/spdystream"
)

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-spdy-client: "+format+"\n", args...)
	os.Exit(1)
}

// step says how far the client got (on stderr, which the test shows when it fails).
func step(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-spdy-client: "+format+"\n", args...)
}

// bufferedConn reads through the bufio.Reader the response head was read with, so bytes
// the server sent right after it are not lost (client-go does the same).
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// upgrade opens a connection to addr and upgrades it to SPDY/3.1 with the given
// subprotocols (client's preference order); returns the connection and the chosen one.
func upgrade(addr, path string, protocols ...string) (*spdystream.Connection, string) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		fail("dial %s: %v", addr, err)
	}
	req, _ := http.NewRequest("POST", "http://"+addr+path, nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "SPDY/3.1")
	for _, p := range protocols {
		req.Header.Add("X-Stream-Protocol-Version", p)
	}
	if err := req.Write(conn); err != nil {
		fail("write upgrade request: %v", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		fail("read upgrade response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		fail("upgrade answered %s", resp.Status)
	}
	if !strings.EqualFold(resp.Header.Get("Upgrade"), "SPDY/3.1") {
		fail("upgrade answered Upgrade: %q", resp.Header.Get("Upgrade"))
	}
	chosen := resp.Header.Get("X-Stream-Protocol-Version")
	sc, err := spdystream.NewConnection(&bufferedConn{conn, br}, false)
	if err != nil {
		fail("spdystream: %v", err)
	}
	// The server never pushes streams: refuse any (client-go's rejectPushStreams).
	go sc.Serve(func(s *spdystream.Stream) { s.Refuse() })
	return sc, chosen
}

func stream(c *spdystream.Connection, pairs ...string) *spdystream.Stream {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Set(pairs[i], pairs[i+1])
	}
	s, err := c.CreateStream(h, nil, false)
	if err != nil {
		fail("create stream %v: %v", pairs, err)
	}
	if err := s.WaitTimeout(30 * time.Second); err != nil {
		fail("stream %v not accepted: %v", pairs, err)
	}
	return s
}

func readAll(name string, r io.Reader, out *[]byte, wg *sync.WaitGroup) {
	defer wg.Done()
	b, err := ioutil.ReadAll(r)
	if err != nil {
		fail("read %s: %v", name, err)
	}
	step("%s: EOF after %d bytes", name, len(b))
	*out = b
}

type status struct {
	Status  string `json:"status"`
	Message string `json:"message"`
	Reason  string `json:"reason"`
	Details struct {
		Causes []struct {
			Reason  string `json:"reason"`
			Message string `json:"message"`
		} `json:"causes"`
	} `json:"details"`
}

// execV4 runs the remotecommand v4 client protocol: stdin is echoed back on stdout, the
// server writes "to stderr\n" on stderr and ends with exit code 3.
func execV4(addr, path string) {
	c, chosen := upgrade(addr, path, "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")
	if chosen != "v4.channel.k8s.io" {
		fail("exec: server chose %q, want v4.channel.k8s.io", chosen)
	}
	// client-go's order: error first, then stdin, stdout, stderr.
	errStream := stream(c, "streamType", "error")
	stdin := stream(c, "streamType", "stdin")
	stdout := stream(c, "streamType", "stdout")
	stderr := stream(c, "streamType", "stderr")
	step("exec: streams accepted")

	// More than the 64 KiB SPDY/3.1 window, in client-go's 32 KiB writes.
	input := bytes.Repeat([]byte("0123456789abcdef"), 20000)
	input = append(input, []byte("end of stdin\n")...)
	go func() {
		if _, err := io.Copy(stdin, bytes.NewReader(input)); err != nil {
			fail("write stdin: %v", err)
		}
		stdin.Close()
		step("exec: stdin written and closed")
	}()
	var out, errOut, statusBytes []byte
	var wg sync.WaitGroup
	wg.Add(3)
	go readAll("stdout", stdout, &out, &wg)
	go readAll("stderr", stderr, &errOut, &wg)
	go readAll("error stream", errStream, &statusBytes, &wg)
	wg.Wait()
	if !bytes.Equal(out, input) {
		fail("stdout: got %d bytes, want the %d of stdin back", len(out), len(input))
	}
	if string(errOut) != "to stderr\n" {
		fail("stderr: got %q", errOut)
	}
	var st status
	if err := json.Unmarshal(statusBytes, &st); err != nil {
		fail("error stream is not a metav1.Status: %v (%q)", err, statusBytes)
	}
	if st.Status != "Failure" || st.Reason != "NonZeroExitCode" || len(st.Details.Causes) != 1 ||
		st.Details.Causes[0].Reason != "ExitCode" || st.Details.Causes[0].Message != "3" {
		fail("status: got %s", statusBytes)
	}
	c.Close()
	fmt.Printf("exec: %d bytes echoed, stderr %q, exit code %s\n", len(out), errOut, st.Details.Causes[0].Message)
}

// forwardPair opens one port-forward pair for port, sends payload, half-closes and returns
// what came back on the data stream and on the error stream.
func forwardPair(c *spdystream.Connection, port, requestID string, payload []byte) ([]byte, []byte) {
	errStream := stream(c, "streamType", "error", "port", port, "requestID", requestID)
	data := stream(c, "streamType", "data", "port", port, "requestID", requestID)
	step("port-forward %s: pair %s accepted", port, requestID)
	errStream.Close() // client-go never writes on it
	go func() {
		if _, err := data.Write(payload); err != nil {
			fail("write data for port %s: %v", port, err)
		}
		data.Close()
	}()
	var got, errText []byte
	var wg sync.WaitGroup
	wg.Add(2)
	go readAll("data "+port, data, &got, &wg)
	go readAll("error "+port, errStream, &errText, &wg)
	wg.Wait()
	return got, errText
}

func portForward(addr, echoPort, closedPort, unlistedPort string) {
	c, chosen := upgrade(addr, "/portforward", "portforward.k8s.io")
	if chosen != "portforward.k8s.io" {
		fail("port-forward: server chose %q", chosen)
	}
	payload := []byte("through the port-forward\n")
	got, errText := forwardPair(c, echoPort, "0", payload)
	if !bytes.Equal(got, payload) || len(errText) != 0 {
		fail("port-forward to the echo port: got %q, error stream %q", got, errText)
	}
	got, errText = forwardPair(c, closedPort, "1", payload)
	if len(got) != 0 || !strings.Contains(string(errText), "error forwarding port "+closedPort) {
		fail("port-forward to a closed port: got %q, error stream %q", got, errText)
	}
	got, errText = forwardPair(c, unlistedPort, "2", payload)
	if len(got) != 0 || !strings.Contains(string(errText), "was not in the PortForward request") {
		fail("port-forward to a port not requested: got %q, error stream %q", got, errText)
	}
	// The session is still usable after the failures.
	got, errText = forwardPair(c, echoPort, "3", payload)
	if !bytes.Equal(got, payload) || len(errText) != 0 {
		fail("second port-forward to the echo port: got %q, error stream %q", got, errText)
	}
	c.Close()
	fmt.Printf("port-forward: echo ok, closed port refused, unlisted port refused\n")
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "exec-url" {
		u, err := url.Parse(os.Args[2])
		if err != nil || u.Scheme != "http" {
			fail("exec-url: not an http URL: %q", os.Args[2])
		}
		execV4(u.Host, u.Path)
		return
	}
	if len(os.Args) != 5 {
		fail("usage: go-spdy-client ADDR ECHO_PORT CLOSED_PORT UNLISTED_PORT")
	}
	addr := os.Args[1]
	execV4(addr, "/exec")
	portForward(addr, os.Args[2], os.Args[3], os.Args[4])
}
