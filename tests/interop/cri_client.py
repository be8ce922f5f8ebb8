#!/usr/bin/env python3
"""A CRI client on grpcio (the Python gRPC stack, C core): Version, ListContainers and
ContainerStatus of an unknown id (NOT_FOUND) on a unix socket, with raw method names and
hand-encoded protobuf bytes (no generated CRI stubs).

Usage: cri_client.py SOCKET_PATH {default,path,localhost}
       cri_client.py SOCKET_PATH stats CONTAINER_ID
       cri_client.py SOCKET_PATH update CONTAINER_ID MEMORY_BYTES
       cri_client.py SOCKET_PATH events COUNT
       cri_client.py SOCKET_PATH podip POD_ID
       cri_client.py SOCKET_PATH list POD_ID
       cri_client.py SOCKET_PATH execsync CONTAINER_ID CMD...
       cri_client.py SOCKET_PATH exec CONTAINER_ID CMD...
       cri_client.py SOCKET_PATH attach CONTAINER_ID
       cri_client.py SOCKET_PATH portforward POD_ID PORT
       cri_client.py SOCKET_PATH teardown CONTAINER_ID POD_ID
       cri_client.py SOCKET_PATH create POD_ID POD_NAME POD_UID POD_NAMESPACE IMAGE HOST_PATH CONTAINER_PATH CMD...
  default    grpcio's own :authority for a unix: target (since 1.57 the %-encoded path)
  path       the socket path itself, as grpc-go and grpc-java send it
  localhost  what newer kubelets send
  stats      ListContainerStats filtered by CONTAINER_ID: prints the figures of the one
             container answered
  update     UpdateContainerResources of CONTAINER_ID to a memory limit of MEMORY_BYTES
  events     GetContainerEvents (server streaming): prints "subscribed" once the stream is
             open, then one line per event until COUNT events were read
  podip      PodSandboxStatus of POD_ID: prints its network's ip and additional ips
  list       ListContainers{filter: {pod_sandbox_id: POD_ID}}: one line per container
             with the fields decoded from the wire
  execsync   ExecSync of CMD in CONTAINER_ID (timeout 10 s): prints "exit_code=N" and the
             command's stdout after a line "stdout:"
  teardown   kubelet's teardown of a running CONTAINER_ID and its POD_ID: StopContainer
             (timeout 1 s), ContainerStatus (EXITED), ListContainerStats of it,
             RemoveContainer twice, ContainerStatus (NOT_FOUND), StopPodSandbox,
             RemovePodSandbox twice, PodSandboxStatus (NOT_FOUND); a line per call
  create     CreateContainer in POD_ID (named "py", IMAGE, CMD, HOST_PATH bound at
             CONTAINER_PATH, the pod's metadata as sandbox_config) then StartContainer:
             prints "created id=ID"
  create-confined
             the same, the container confined as kubelet's seccompDefault and a pod spec
             dropping capabilities ask: seccomp RuntimeDefault, capabilities drop ALL,
             add CHOWN and NET_BIND_SERVICE, no_new_privs unset
  exec, attach, portforward
             Exec, Attach (stdin, stdout, stderr) or PortForward: prints "url=URL", the
             streaming URL, for a client of the streaming protocol to open

Run by tests/interop.rs with the venv hack/setup makes. Prints one line per call and
"all ok"; exits 1 with the reason otherwise.
"""
import json
import sys

import grpc

UNKNOWN_ID = "0123456789abcdef" * 4


def fields(msg):
    """Top-level length-delimited fields of a protobuf message: {number: [bytes]}."""
    out, i = {}, 0

    def varint():
        nonlocal i
        value, shift = 0, 0
        while True:
            b = msg[i]
            i += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while i < len(msg):
        key = varint()
        if key & 7 == 0:
            out.setdefault(key >> 3, []).append(varint())
        elif key & 7 == 2:
            n = varint()
            out.setdefault(key >> 3, []).append(msg[i : i + n])
            i += n
        else:
            raise ValueError(f"unexpected wire type {key & 7}")
    return out


def string(msg, n):
    return fields(msg).get(n, [b""])[0].decode()


def length_delimited(number, payload):
    """One length-delimited field: key, varint length, bytes."""
    out, n = bytearray([number << 3 | 2]), len(payload)
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out) + payload


def path(msg, *numbers):
    """The first value at a path of nested message fields (None when absent)."""
    for n in numbers:
        values = fields(msg).get(n)
        if not values:
            return None
        msg = values[0]
    return msg


def unary(channel, method, request):
    """One unary RuntimeService call; an RPC error ends the client, naming the method."""
    rpc = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}")
    try:
        return rpc(request, timeout=30)
    except grpc.RpcError as e:
        sys.exit(f"cri_client.py: {method}: {e.code()}: {e.details()}")


def list_containers(channel, pod_id):
    """ListContainers of one pod: every container's fields as a Python client reads them."""
    request = length_delimited(1, length_delimited(3, pod_id.encode()))
    reply = unary(channel, "ListContainers", request)
    for c in fields(reply).get(1, []):
        f = fields(c)
        labels = {}
        for entry in f.get(8, []):
            labels[string(entry, 1)] = string(entry, 2)
        print(
            f"container id={string(c, 1)} pod={string(c, 2)} name={path(c, 3, 1).decode()} "
            f"image={path(c, 4, 1).decode()} image_ref={string(c, 5)} "
            f"state={f.get(6, [0])[0]} created_at={f.get(7, [0])[0]} "
            f"labels={','.join(f'{k}={v}' for k, v in sorted(labels.items()))} "
            f"annotations={len(f.get(9, []))} image_id={string(c, 10)}"
        )


def container_stats(channel, container_id):
    """ListContainerStats{filter: {id}}: the one container's id, CPU and memory figures."""
    request = length_delimited(1, length_delimited(1, container_id.encode()))
    reply = unary(channel, "ListContainerStats", request)
    stats = fields(reply).get(1, [])
    if len(stats) != 1:
        sys.exit(f"cri_client.py: ListContainerStats: want 1 container, got {len(stats)}")
    s = stats[0]
    got_id = path(s, 1, 1).decode()
    cpu_ns = path(s, 2, 2, 1)  # cpu.usage_core_nano_seconds.value
    cpu_ts = path(s, 2, 1)  # cpu.timestamp
    working_set = path(s, 3, 2, 1)  # memory.working_set_bytes.value
    layer_bytes = path(s, 4, 3, 1)  # writable_layer.used_bytes.value
    print(
        f"ListContainerStats ok id={got_id} cpu_ns={cpu_ns} cpu_timestamp={cpu_ts} "
        f"working_set={working_set} writable_layer_bytes={layer_bytes}"
    )


def varint_field(number, value):
    """One varint field (non-negative int64)."""
    out = bytearray([number << 3])
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def update_resources(channel, container_id, memory_bytes):
    """UpdateContainerResources{container_id, linux: {memory_limit_in_bytes}}."""
    linux = varint_field(4, memory_bytes)
    request = length_delimited(1, container_id.encode()) + length_delimited(2, linux)
    unary(channel, "UpdateContainerResources", request)
    print(f"UpdateContainerResources ok id={container_id} memory={memory_bytes}")


def varint_value(msg, n):
    """A top-level varint field (0 when absent, as protobuf reads it)."""
    return fields(msg).get(n, [0])[0]


def expect_not_found(channel, method, request):
    """A call that must answer NOT_FOUND."""
    rpc = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}")
    try:
        rpc(request, timeout=30)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            sys.exit(f"cri_client.py: {method}: want NOT_FOUND, got {e.code()}: {e.details()}")
        print(f"{method} NOT_FOUND ok")
        return
    sys.exit(f"cri_client.py: {method} of a removed object succeeded")


def teardown(channel, container_id, pod_id):
    """What kubelet calls when a pod goes, each answer decoded from the wire."""
    container = length_delimited(1, container_id.encode())
    pod = length_delimited(1, pod_id.encode())
    unary(channel, "StopContainer", container + varint_field(2, 1))
    print("StopContainer ok")
    status = path(unary(channel, "ContainerStatus", container), 1)
    print(
        f"ContainerStatus ok state={varint_value(status, 3)} "
        f"finished_at={varint_value(status, 6)} exit_code={varint_value(status, 7)}"
    )
    reply = unary(channel, "ListContainerStats", length_delimited(1, container))
    stats = fields(reply).get(1, [])
    if len(stats) != 1:
        sys.exit(f"cri_client.py: ListContainerStats: want 1 container, got {len(stats)}")
    print(
        f"ListContainerStats ok id={path(stats[0], 1, 1).decode()} "
        f"cpu={path(stats[0], 2) is not None} memory={path(stats[0], 3) is not None}"
    )
    for attempt in ("", " again"):
        unary(channel, "RemoveContainer", container)
        print(f"RemoveContainer{attempt} ok")
    expect_not_found(channel, "ContainerStatus", container)
    unary(channel, "StopPodSandbox", pod)
    print("StopPodSandbox ok")
    for attempt in ("", " again"):
        unary(channel, "RemovePodSandbox", pod)
        print(f"RemovePodSandbox{attempt} ok")
    expect_not_found(channel, "PodSandboxStatus", pod)


def container_events(channel, count):
    """GetContainerEvents{}: COUNT events, each as the fields kubelet's Evented PLEG reads."""
    rpc = channel.unary_stream("/runtime.v1.RuntimeService/GetContainerEvents")
    stream = rpc(b"", timeout=120)
    try:
        stream.initial_metadata()  # the server has answered: the stream is subscribed
        print("subscribed", flush=True)
        for n, event in enumerate(stream, 1):
            pod = path(event, 4) or b""
            containers = ",".join(
                f"{string(c, 1)}:{varint_value(c, 3)}" for c in fields(event).get(5, [])
            )
            print(
                f"event type={varint_value(event, 2)} id={string(event, 1)} "
                f"created_at={varint_value(event, 3)} pod={string(pod, 1)} "
                f"pod_uid={string(path(pod, 2) or b'', 2)} pod_state={varint_value(pod, 3)} "
                f"containers={containers}",
                flush=True,
            )
            if n == count:
                stream.cancel()
                return
    except grpc.RpcError as e:
        sys.exit(f"cri_client.py: GetContainerEvents: {e.code()}: {e.details()}")
    sys.exit("cri_client.py: GetContainerEvents: the stream ended early")


def pod_ip(channel, pod_id):
    """PodSandboxStatus{pod_sandbox_id, verbose}: status.network.ip, .additional_ips[].ip,
    and from the verbose info map's "info" JSON which CNI path attached the pod."""
    request = length_delimited(1, pod_id.encode()) + varint_field(2, 1)
    reply = unary(channel, "PodSandboxStatus", request)
    network = path(reply, 1, 5) or b""
    ip = string(network, 1)
    additional = [string(a, 1) for a in fields(network).get(2, [])]
    info = {string(e, 1): string(e, 2) for e in fields(reply).get(2, [])}
    in_process = json.loads(info["info"])["network"].get("inProcess") if "info" in info else None
    print(f"PodSandboxStatus ok id={string(path(reply, 1), 1)} ip={ip} additional={','.join(additional)}")
    print(f"inProcess={in_process}")


def exec_sync(channel, container_id, cmd):
    """ExecSync{container_id, cmd, timeout: 10}: exit code and stdout from the wire."""
    request = length_delimited(1, container_id.encode())
    request += b"".join(length_delimited(2, c.encode()) for c in cmd) + varint_field(3, 10)
    reply = unary(channel, "ExecSync", request)
    print(f"ExecSync ok exit_code={varint_value(reply, 3)}")
    print("stdout:")
    print(fields(reply).get(1, [b""])[0].decode(), end="")


def create_and_start(channel, pod_id, pod_name, pod_uid, pod_namespace, image, host_path,
                     container_path, cmd, confined=False):
    """CreateContainer{pod_sandbox_id, config: {metadata: {name}, image: {image}, command,
    mounts: [{container_path, host_path}], linux: {security_context: {namespace_options:
    {pid: CONTAINER}}}}, sandbox_config: {metadata}} and
    StartContainer{container_id} of the id it answers."""
    config = length_delimited(1, length_delimited(1, b"py"))
    config += length_delimited(2, length_delimited(1, image.encode()))
    config += b"".join(length_delimited(3, c.encode()) for c in cmd)
    mount = length_delimited(1, container_path.encode()) + length_delimited(2, host_path.encode())
    config += length_delimited(7, mount)
    # linux.security_context.namespace_options.pid = CONTAINER, as kubelet sends it
    # (the pod's pid namespace is not shared).
    security = length_delimited(3, varint_field(2, 1))
    if confined:
        # capabilities {add_capabilities: CHOWN, NET_BIND_SERVICE; drop_capabilities: ALL}
        caps = length_delimited(1, b"CHOWN") + length_delimited(1, b"NET_BIND_SERVICE")
        caps += length_delimited(2, b"ALL")
        # seccomp {profile_type: RuntimeDefault (0, the default value: an empty message)}
        security = length_delimited(1, caps) + security + length_delimited(15, b"")
        # annotations (a map: one entry message {key, value} each), one of them an
        # instruction crun would obey (an empty seccomp program in place of the profile)
        for key, value in ((b"run.oci.seccomp_bpf_data", b""), (b"example.com/note", b"kept")):
            config += length_delimited(10, length_delimited(1, key) + length_delimited(2, value))
    config += length_delimited(15, length_delimited(2, security))
    metadata = b"".join(
        length_delimited(n, v.encode())
        for n, v in ((1, pod_name), (2, pod_uid), (3, pod_namespace))
    )
    request = length_delimited(1, pod_id.encode()) + length_delimited(2, config)
    request += length_delimited(3, length_delimited(1, metadata))
    container_id = string(unary(channel, "CreateContainer", request), 1)
    print(f"created id={container_id}")
    unary(channel, "StartContainer", length_delimited(1, container_id.encode()))
    print("StartContainer ok")


def exec_url(channel, container_id, cmd):
    """Exec{container_id, cmd, stdout, stderr}: prints the streaming URL it answers."""
    request = length_delimited(1, container_id.encode())
    for arg in cmd:
        request += length_delimited(2, arg.encode())
    request += varint_field(5, 1) + varint_field(6, 1)
    reply = unary(channel, "Exec", request)
    print(f"url={string(reply, 1)}")


def attach_url(channel, container_id):
    """Attach{container_id, stdin, stdout, stderr}: prints the streaming URL it answers."""
    request = length_delimited(1, container_id.encode())
    request += varint_field(2, 1) + varint_field(4, 1) + varint_field(5, 1)
    reply = unary(channel, "Attach", request)
    print(f"url={string(reply, 1)}")


def port_forward_url(channel, pod_id, port):
    """PortForward{pod_sandbox_id, port: [PORT]} (packed, as protobuf encoders send
    repeated int32): prints the streaming URL it answers."""
    packed = varint_field(1, port)[1:]  # the value's varint without its key
    request = length_delimited(1, pod_id.encode()) + length_delimited(2, packed)
    reply = unary(channel, "PortForward", request)
    print(f"url={string(reply, 1)}")


def main():
    modes = ("default", "path", "localhost")
    if len(sys.argv) >= 5 and sys.argv[2] == "execsync":
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            exec_sync(channel, sys.argv[3], sys.argv[4:])
        return
    if len(sys.argv) >= 11 and sys.argv[2] in ("create", "create-confined"):
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            create_and_start(channel, *sys.argv[3:10], sys.argv[10:],
                             confined=sys.argv[2] == "create-confined")
        print("all ok")
        return
    if len(sys.argv) == 5 and sys.argv[2] == "teardown":
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            teardown(channel, sys.argv[3], sys.argv[4])
        print("all ok")
        return
    if len(sys.argv) >= 4 and sys.argv[2] in ("exec", "attach", "portforward"):
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            if sys.argv[2] == "exec":
                exec_url(channel, sys.argv[3], sys.argv[4:])
            elif sys.argv[2] == "attach":
                attach_url(channel, sys.argv[3])
            else:
                port_forward_url(channel, sys.argv[3], int(sys.argv[4]))
        return
    if len(sys.argv) in (4, 5) and sys.argv[2] in ("stats", "update", "events", "podip", "list"):
        with grpc.insecure_channel("unix:" + sys.argv[1]) as channel:
            grpc.channel_ready_future(channel).result(timeout=30)
            if sys.argv[2] == "stats":
                container_stats(channel, sys.argv[3])
            elif sys.argv[2] == "events":
                container_events(channel, int(sys.argv[3]))
            elif sys.argv[2] == "podip":
                pod_ip(channel, sys.argv[3])
            elif sys.argv[2] == "list":
                list_containers(channel, sys.argv[3])
            else:
                update_resources(channel, sys.argv[3], int(sys.argv[4]))
        print("all ok")
        return
    if len(sys.argv) != 3 or sys.argv[2] not in modes:
        sys.exit(__doc__)
    socket, mode = sys.argv[1], sys.argv[2]
    options = []
    if mode == "path":
        options.append(("grpc.default_authority", socket))
    elif mode == "localhost":
        options.append(("grpc.default_authority", "localhost"))
    print(f"grpcio {grpc.__version__}, authority {mode}")
    with grpc.insecure_channel("unix:" + socket, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)

        def call(method, request):
            rpc = channel.unary_unary(f"/runtime.v1.RuntimeService/{method}")
            return rpc(request, timeout=30)

        try:
            reply = call("Version", b"\x0a\x02v1")
            print(
                f"Version ok runtime_name={string(reply, 2)} "
                f"runtime_api_version={string(reply, 4)}"
            )
            reply = call("ListContainers", b"")
            print(f"ListContainers ok containers={len(fields(reply).get(1, []))}")
        except grpc.RpcError as e:
            sys.exit(f"cri_client.py: {e.code()}: {e.details()}")

        try:
            call("ContainerStatus", b"\x0a" + bytes([len(UNKNOWN_ID)]) + UNKNOWN_ID.encode())
            sys.exit("cri_client.py: ContainerStatus of an unknown id succeeded")
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.NOT_FOUND:
                sys.exit(f"cri_client.py: ContainerStatus: want NOT_FOUND, got {e.code()}: {e.details()}")
            print(f"ContainerStatus unknown id: {e.code().name} ok")
    print("all ok")


if __name__ == "__main__":
    main()
