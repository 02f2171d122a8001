"""Regenerates the captured seeds of fuzz/corpus/sock_diag (diag-*.bin) and
fuzz/corpus/procnet (netns-*): opens listeners (and some sockets the state filter must
drop) in a fresh network namespace, then saves /proc/net/{tcp,tcp6,udp,udp6} and the raw
NETLINK_SOCK_DIAG dump replies, one file per recv() buffer.

Run as root, in a namespace of its own so it cannot clash with real listeners:
    unshare -n sh -c 'ip link set lo up && python3 fuzz/tools/capture_netns.py OUT_DIR'
then copy OUT_DIR/diag-*.bin to fuzz/corpus/sock_diag/ and OUT_DIR/procnet-X to
fuzz/corpus/procnet/netns-X.
"""
import os, socket, struct, sys, time

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
keep = []

def tcp(family, addr, port, v6only=None, backlog=8):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((addr, port)); s.listen(backlog); keep.append(s); return s

def udp(family, addr, port, v6only=None):
    s = socket.socket(family, socket.SOCK_DGRAM)
    if v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((addr, port)); keep.append(s); return s

A4, A6 = socket.AF_INET, socket.AF_INET6
tcp(A4, '0.0.0.0', 867)
tcp(A4, '127.0.0.1', 22)
tcp(A4, '127.0.0.53', 53)
tcp(A6, '::', 8080, v6only=False)
tcp(A6, '::1', 631, v6only=True)
tcp(A6, '::', 443, v6only=True)
udp(A4, '0.0.0.0', 68)
udp(A4, '127.0.0.53', 53)
udp(A6, '::', 5353, v6only=True)
udp(A6, '::', 867, v6only=False)
udp(A6, '::1', 323)
# Noise the state filter must drop: an established TCP pair, a connected UDP client.
srv = tcp(A4, '127.0.0.1', 9000)
cli = socket.create_connection(('127.0.0.1', 9000)); keep.append(cli)
conn, _ = srv.accept(); keep.append(conn)
u = socket.socket(A4, socket.SOCK_DGRAM); u.connect(('127.0.0.1', 53)); keep.append(u)
u6 = socket.socket(A6, socket.SOCK_DGRAM); u6.connect(('::1', 323)); keep.append(u6)
# Many listeners, so one recv() holds many messages.
for p in range(20000, 20040):
    tcp(A4, '127.0.0.1', p)
for p in range(21000, 21020):
    udp(A6, '::1', p)
# A listener owned by another uid.
r, w = os.pipe()
pid = os.fork()
if pid == 0:
    os.setgid(65534); os.setuid(65534)
    tcp(A4, '0.0.0.0', 8000); udp(A6, '::', 8001, v6only=False)
    os.write(w, b'x'); time.sleep(30); os._exit(0)
os.read(r, 1)

for name in ['tcp', 'tcp6', 'udp', 'udp6']:
    with open(f'/proc/net/{name}', 'rb') as f, open(f'{out}/procnet-{name}', 'wb') as g:
        g.write(f.read())

SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
TCP_LISTEN, TCP_CLOSE = 1 << 10, 1 << 7
seq = 0

def dump(tag, family, proto, states, ext=0, recvbuf=65536):
    global seq
    seq += 1
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 4)  # NETLINK_SOCK_DIAG
    s.bind((0, 0))
    sockid = b'\0' * 48
    req = struct.pack('=BBBBI', family, proto, ext, 0, states) + sockid
    hdr = struct.pack('=IHHII', 16 + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    s.send(hdr + req)
    i = 0
    while True:
        buf = s.recv(recvbuf)
        i += 1
        with open(f'{out}/diag-{tag}-{i:02}.bin', 'wb') as f:
            f.write(buf)
        # done or error in this buffer?
        off, end = 0, False
        while off + 16 <= len(buf):
            ln, ty = struct.unpack_from('=IH', buf, off)
            if ty in (2, 3):
                end = True
            if ln < 16: break
            off += (ln + 3) & ~3
        if end or i > 50:
            break
    s.close()
    print(tag, i, 'buffers')

dump('tcp4-listen', A4, socket.IPPROTO_TCP, TCP_LISTEN)
dump('tcp6-listen', A6, socket.IPPROTO_TCP, TCP_LISTEN)
dump('udp4-close', A4, socket.IPPROTO_UDP, TCP_CLOSE)
dump('udp6-close', A6, socket.IPPROTO_UDP, TCP_CLOSE)
# More attribute kinds: every extension, every state.
dump('tcp6-listen-allext', A6, socket.IPPROTO_TCP, TCP_LISTEN, ext=0xff)
dump('tcp4-allstates-allext', A4, socket.IPPROTO_TCP, 0xffffffff, ext=0xff)
dump('udp6-allstates-allext', A6, socket.IPPROTO_UDP, 0xffffffff, ext=0xff)
# Small receive buffer: the dump spans several recv() calls.
dump('tcp4-listen-small', A4, socket.IPPROTO_TCP, TCP_LISTEN, recvbuf=2048)
# Error replies: a protocol inet_diag has no handler for, a bogus family.
dump('err-proto', A4, 250, TCP_LISTEN)
dump('err-family', 99, socket.IPPROTO_TCP, TCP_LISTEN)
os.kill(pid, 9)
