#!/usr/bin/python3
"""A streaming client that is not proxrt's own: Kubernetes' channel protocol over
WebSocket with Debian's python3-websocket (websocket-client), for tests/streaming.rs.

  ws_stream.py exec URL [--protocol P] [--stdin TEXT] [--close-stdin] [--resize WxH]
      Prints one JSON object: the negotiated protocol, stdout, stderr, and the error
      channel's message (a metav1.Status in v4/v5) once the server closes.
  ws_stream.py attach URL [--protocol P] [--step STEP]... [--wait-file PATH]
      Attach: runs the steps in order — `send:TEXT`, `expect:TEXT` (read stdout until TEXT
      was seen), `resize:WxH`, `close-stdin` — then reads until the server closes and
      prints the same JSON as exec. Says "connected" on stderr once the upgrade is done.
      With --wait-file it reads nothing until PATH exists (a client that does not keep up).
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


def cmd_attach(args):
    import os
    import time
    ws = connect(args.url, args.protocol, args.timeout)
    chosen = ws.getsubprotocol()
    print("connected", file=sys.stderr, flush=True)
    if args.wait_file:
        deadline = time.monotonic() + args.timeout
        while not os.path.exists(args.wait_file):
            if time.monotonic() > deadline:
                sys.exit("the wait file never appeared")
            time.sleep(0.05)
    out = {STDOUT: b"", STDERR: b"", ERROR: b""}
    closed = False

    def read_one():
        try:
            opcode, data = ws.recv_data()
        except websocket.WebSocketConnectionClosedException:
            return False
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return False
        if opcode == websocket.ABNF.OPCODE_BINARY and data and data[0] in out:
            out[data[0]] += data[1:]
        return True

    for step in args.step or []:
        kind, _, arg = step.partition(":")
        if kind == "send":
            ws.send_binary(bytes([STDIN]) + arg.encode())
        elif kind == "expect":
            while not closed and arg.encode() not in out[STDOUT]:
                closed = not read_one()
            if arg.encode() not in out[STDOUT]:
                sys.exit(f"closed before {arg!r}: {out[STDOUT]!r} {out[ERROR]!r}")
        elif kind == "resize":
            w, h = (int(x) for x in arg.split("x"))
            ws.send_binary(bytes([RESIZE]) + json.dumps({"Width": w, "Height": h}).encode())
        elif kind == "close-stdin":
            ws.send_binary(bytes([CLOSE, STDIN]))
        else:
            sys.exit(f"unknown step {step!r}")
    while not closed:
        closed = not read_one()
    ws.close()
    error = out[ERROR].decode(errors="replace")
    try:
        error = json.loads(error) if error else None
    except ValueError:
        pass
    print(json.dumps({
        "protocol": chosen,
        "stdout": out[STDOUT].decode(errors="replace"),
        "stdout_len": len(out[STDOUT]),
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
    a = sub.add_parser("attach")
    a.add_argument("url")
    a.add_argument("--protocol", default="v5.channel.k8s.io")
    a.add_argument("--step", action="append")
    a.add_argument("--wait-file")
    f = sub.add_parser("portforward")
    f.add_argument("url")
    f.add_argument("port", type=int)
    f.add_argument("--send", required=True)
    f.add_argument("--expect", required=True)
    args = p.parse_args()
    {"exec": cmd_exec, "attach": cmd_attach, "portforward": cmd_portforward}[args.cmd](args)


if __name__ == "__main__":
    main()
