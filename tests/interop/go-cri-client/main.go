// A CRI client the way older kubelets and crictl up to 1.26 dial a unix socket: grpc-go
// given the bare socket path as its target and a context dialer, so the path itself
// becomes the HTTP/2 :authority. Raw method names and a pass-through codec: no
// generated CRI stubs.
//
// Built by tests/interop.rs from Debian's golang-google-grpc-dev (GOPATH mode, no
// module downloads). Usage: go-cri-client SOCKET_PATH
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// rawCodec hands bytes through: requests are hand-encoded protobuf.
type rawCodec struct{}

func (rawCodec) Marshal(v interface{}) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v interface{}) error {
	*v.(*[]byte) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// fields reads the top-level length-delimited fields of a protobuf message.
func fields(msg []byte) (map[int][][]byte, error) {
	out := map[int][][]byte{}
	varint := func() (uint64, error) {
		var v uint64
		for shift := uint(0); shift < 64; shift += 7 {
			if len(msg) == 0 {
				return 0, fmt.Errorf("truncated varint")
			}
			b := msg[0]
			msg = msg[1:]
			v |= uint64(b&0x7f) << shift
			if b < 0x80 {
				return v, nil
			}
		}
		return 0, fmt.Errorf("varint too long")
	}
	for len(msg) > 0 {
		key, err := varint()
		if err != nil {
			return nil, err
		}
		switch key & 7 {
		case 0:
			if _, err := varint(); err != nil {
				return nil, err
			}
		case 2:
			n, err := varint()
			if err != nil {
				return nil, err
			}
			if uint64(len(msg)) < n {
				return nil, fmt.Errorf("truncated field")
			}
			out[int(key>>3)] = append(out[int(key>>3)], msg[:n])
			msg = msg[n:]
		default:
			return nil, fmt.Errorf("unexpected wire type %d", key&7)
		}
	}
	return out, nil
}

func str(f map[int][][]byte, n int) string {
	if len(f[n]) == 0 {
		return ""
	}
	return string(f[n][0])
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "go-cri-client: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: go-cri-client SOCKET_PATH")
	}
	socket := os.Args[1]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}
	conn, err := grpc.DialContext(ctx, socket, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(dialer), grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		fail("dial %s: %v", socket, err)
	}
	defer conn.Close()
	fmt.Printf("authority %s\n", conn.Target())

	req := []byte("\x0a\x02v1")
	var resp []byte
	if err := conn.Invoke(ctx, "/runtime.v1.RuntimeService/Version", &req, &resp); err != nil {
		fail("Version: %v", err)
	}
	f, err := fields(resp)
	if err != nil {
		fail("Version reply: %v", err)
	}
	fmt.Printf("Version ok runtime_name=%s runtime_api_version=%s\n", str(f, 2), str(f, 4))

	req = []byte{}
	resp = nil
	if err := conn.Invoke(ctx, "/runtime.v1.RuntimeService/ListContainers", &req, &resp); err != nil {
		fail("ListContainers: %v", err)
	}
	if f, err = fields(resp); err != nil {
		fail("ListContainers reply: %v", err)
	}
	fmt.Printf("ListContainers ok containers=%d\n", len(f[1]))

	id := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	req = append([]byte{0x0a, byte(len(id))}, id...)
	resp = nil
	err = conn.Invoke(ctx, "/runtime.v1.RuntimeService/ContainerStatus", &req, &resp)
	if status.Code(err) != codes.NotFound {
		fail("ContainerStatus of an unknown id: want NotFound, got %v", err)
	}
	fmt.Println("ContainerStatus unknown id: NOT_FOUND ok")
	fmt.Println("all ok")
}
