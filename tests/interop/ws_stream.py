#!/usr/bin/python3
"""A streaming client that is not proxrt's own: Kubernetes' channel protocol over
WebSocket with Debian's python3-websocket (websocket-client), for tests/streaming.rs.

  ws_stream.py exec URL [--protocol P] [--stdin TEXT] [--close-stdin] [--resize WxH]
      Prints one JSON object: the negotiated protocol, stdout, stderr, and the error
      channel's message (a metav1.Status in v4/v5) once the server closes.
  ws_stream.py portforward URL PORT --send TEXT --expect TEXT
      Forwards PORT (kubelet's v4 WebSocket port-forward), sends TEXT on the data channel,
      reads until EXPECT was seen; prints JSON: the port prefixes and the data received.

Every wait is bounded (--timeout, 60 s): a server that hangs fails the test.
"""

import argparse
import json
import sys

import websocket

STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def connect(url, protocol, timeout):
    ws_url = url.replace("http://", "ws://", 1)
    subprotocols = [protocol] if protocol else None
    return websocket.create_connection(ws_url, subprotocols=subprotocols, timeout=timeout)


def cmd_exec(args):
    ws = connect(args.url, args.protocol, args.timeout)
    chosen = ws.getsubprotocol()
    if args.resize:
        w, h = (int(x) for x in args.resize.split("x"))
        ws.send_binary(bytes([RESIZE]) + json.dumps({"Width": w, "Height": h}).encode())
    if args.stdin is not None:
        ws.send_binary(bytes([STDIN]) + args.stdin.encode())
    if args.close_stdin:
        ws.send_binary(bytes([CLOSE, STDIN]))
    out = {STDOUT: b"", STDERR: b"", ERROR: b""}
    while True:
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            break
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        if opcode != websocket.ABNF.OPCODE_BINARY or not data:
            continue
        if data[0] in out:
            out[data[0]] += data[1:]
    ws.close()
    error = out[ERROR].decode(errors="replace")
    try:
        error = json.loads(error) if error else None
    except ValueError:
        pass
    print(json.dumps({
        "protocol": chosen,
        "stdout": out[STDOUT].decode(errors="replace"),
        "stderr": out[STDERR].decode(errors="replace"),
        "error": error,
    }))


def cmd_portforward(args):
    sep = "&" if "?" in args.url else "?"
    ws = connect(f"{args.url}{sep}port={args.port}", "v4.channel.k8s.io", args.timeout)
    prefixes = {}
    # The first message on each of the port's two channels is the port (u16 LE).
    while len(prefixes) < 2:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            sys.exit("closed before the port prefixes")
        prefixes[data[0]] = int.from_bytes(data[1:3], "little")
    ws.send_binary(bytes([0]) + args.send.encode())
    got, errors = b"", b""
    while args.expect.encode() not in got:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        if data and data[0] == 0:
            got += data[1:]
        elif data and data[0] == 1:
            errors += data[1:]
            break
    ws.close()
    print(json.dumps({
        "prefixes": {str(k): v for k, v in prefixes.items()},
        "data": got.decode(errors="replace"),
        "error": errors.decode(errors="replace"),
    }))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--timeout", type=float, default=60)
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("exec")
    e.add_argument("url")
    e.add_argument("--protocol", default="v5.channel.k8s.io")
    e.add_argument("--stdin")
    e.add_argument("--close-stdin", action="store_true")
    e.add_argument("--resize")
    f = sub.add_parser("portforward")
    f.add_argument("url")
    f.add_argument("port", type=int)
    f.add_argument("--send", required=True)
    f.add_argument("--expect", required=True)
    args = p.parse_args()
    {"exec": cmd_exec, "portforward": cmd_portforward}[args.cmd](args)


if __name__ == "__main__":
    main()
