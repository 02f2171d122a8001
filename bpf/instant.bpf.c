// SPDX-License-Identifier: MIT OR Apache-2.0 OR GPL-2.0
//
// portsentinel's instant detection: the kernel reports the moment a socket starts (or
// stops) listening, so a listener that lives for milliseconds is still recorded.
//
// - tp_btf/inet_sock_set_state: a TCP socket entering LISTEN, and leaving it;
// - cgroup/post_bind4, cgroup/post_bind6 on the root cgroup: a UDP or UDP-Lite socket
//   bound to a port, after the bind succeeded, with the port it got;
// - cgroup/sock_release: such a socket closing; cgroup/connect4, cgroup/connect6: or
//   connecting, which makes it a client;
// Not kprobes, fentry or the BPF LSM on inet_bind: each needs kernel options (kprobes,
// ftrace trampolines, lsm=bpf) that kernels ship without; the cgroup hooks need only
// cgroup v2, and cost nothing but on a bind or a close.
//
// Built by `tools/build-bpf` into instant.bpf.o, which the daemon embeds; a test rebuilds
// it and checks the committed object is this source's. No headers are needed beyond the
// compiler's own: the kernel types below carry only the fields read, and CO-RE relocates
// them against the running kernel's BTF.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;

#define SEC(name) __attribute__((section(name), used))
#define CORE __attribute__((preserve_access_index))

// Helper ids from the kernel's uapi (include/uapi/linux/bpf.h).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)16;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *src) = (void *)115;
static __u64 (*bpf_ktime_get_boot_ns)(void) = (void *)125;
static long (*bpf_ringbuf_output)(void *ringbuf, void *data, __u64 size, __u64 flags) = (void *)130;
static long (*bpf_loop)(__u32 nr_loops, void *callback, void *ctx, __u64 flags) = (void *)181;
static __u64 (*bpf_get_current_task)(void) = (void *)35;

#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_MAP_TYPE_PERCPU_ARRAY 6

#define __uint(name, val) int (*name)[val]
#define __type(name, val) __typeof__(val) *name

#define AF_INET 2
#define AF_INET6 10
#define SOCK_DGRAM 2
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_UDPLITE 136
#define TCP_CLOSE 7
#define TCP_LISTEN 10

// The kernel's types, only the fields read (CO-RE matches them by name).
struct ns_common { unsigned int inum; } CORE;
struct net { struct ns_common ns; } CORE;
typedef struct { struct net *net; } possible_net_t;
struct in6_addr { __u8 in6_u[16]; };
struct sock_common {
	__u32 skc_daddr;
	__u32 skc_rcv_saddr;
	__u16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
} CORE;
typedef struct { __u32 val; } kuid_t;
struct sock {
	struct sock_common __sk_common;
	struct socket *sk_socket;
	__u16 sk_type;
	__u16 sk_protocol;
	kuid_t sk_uid;
} CORE;
struct super_block { __u32 s_dev; } CORE;
struct inode { unsigned long i_ino; struct super_block *i_sb; } CORE;
// The inode's change time, as kernels have kept it: two integers since 6.11, a
// timespec64 named __i_ctime in 6.6-6.10, i_ctime before (CO-RE picks the one there is).
struct timespec64 { long long tv_sec; long tv_nsec; };
struct inode___ctime_split { long long i_ctime_sec; __u32 i_ctime_nsec; } CORE;
struct inode___ctime_hidden { struct timespec64 __i_ctime; } CORE;
struct inode___ctime_plain { struct timespec64 i_ctime; } CORE;
struct socket { struct sock *sk; } CORE;
struct socket_alloc { struct socket socket; struct inode vfs_inode; } CORE;
struct qstr { const unsigned char *name; } CORE;
struct dentry { struct dentry *d_parent; struct qstr d_name; } CORE;
struct vfsmount { struct dentry *mnt_root; } CORE;
struct mount { struct mount *mnt_parent; struct dentry *mnt_mountpoint; struct vfsmount mnt; } CORE;
struct path { struct vfsmount *mnt; struct dentry *dentry; } CORE;
struct file { struct path f_path; struct inode *f_inode; } CORE;
struct mm_struct { struct file *exe_file; } CORE;
struct nsproxy { struct net *net_ns; } CORE;
struct pid_namespace { struct ns_common ns; } CORE;
struct upid { int nr; struct pid_namespace *ns; }; // an array element: its layout is fixed
struct pid { unsigned int level; struct upid numbers[1]; } CORE;
struct task_struct {
	struct nsproxy *nsproxy;
	struct pid *thread_pid;
	struct mm_struct *mm;
	struct task_struct *group_leader;
	__u64 start_boottime;
} CORE;

#define READ(dst, src) bpf_probe_read_kernel(&(dst), sizeof(dst), &(src))

// The daemon's PID namespace (its inode), set by the loader: pids are reported as the
// daemon sees them, or as 0 for a process it cannot see.
const volatile __u32 PIDNS_INUM = 0;
#define PIDNS_LEVELS 8 // namespaces nested deeper than this report pid 0

// The current process's pid in the daemon's PID namespace.
static __u32 daemon_pid(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = 0;
	struct pid *pid = 0;
	unsigned int level = 0;
	READ(leader, task->group_leader);
	if (!leader)
		return 0;
	READ(pid, leader->thread_pid);
	if (!pid)
		return 0;
	READ(level, pid->level);
	for (int i = 0; i < PIDNS_LEVELS; i++) {
		if (i > level)
			break;
		struct upid u = {};
		unsigned int inum = 0;
		bpf_probe_read_kernel(&u, sizeof(u), &pid->numbers[i]);
		if (u.ns)
			READ(inum, u.ns->ns.inum);
		if (inum == PIDNS_INUM)
			return u.nr;
	}
	return 0;
}

// What happened (the daemon's src/source/instant.rs reads the same layout).
#define EV_LISTEN 1   // a TCP socket entered LISTEN
#define EV_UNLISTEN 2 // ... and left it
#define EV_BIND 3     // a UDP or UDP-Lite socket was bound
#define EV_UNBIND 4   // ... and closed
#define EV_CONNECT 5  // ... or connected: a client

#define PATH_BYTES 256 // the exe path, its names leaf first, each ended by a NUL
#define NAME_BYTES 64  // at most this much of one name (longer ones make the path unusable)
#define DEPTH 32       // names followed up from the exe (deeper paths are unusable)

struct event {
	__u64 time_ns;        // CLOCK_BOOTTIME
	__u64 key;            // TCP: the socket's inode (as sock_diag shows it); UDP: its cookie
	__u64 start_boottime; // the process's start, to tell a reused pid apart
	__u64 exe_ino;        // the file the process runs, whatever its path says
	__u32 exe_dev;        // ... and its device, in the kernel's encoding
	__u32 netns;
	__u32 pid;            // the thread group (what ps calls the pid), in the daemon's PID namespace; 0: not there
	__u32 uid;            // the socket's uid
	__u16 port;
	__u16 pad0;
	__u8 kind;
	__u8 protocol;
	__u8 family;
	__u8 pad1;
	__u8 addr[16];        // IPv4 in the first four bytes
	char comm[16];
	__u16 path_len;       // bytes of path used; 0 when there is none
	__u8 path_truncated;  // the walk stopped early: the path is not the whole path
	__u8 pad[5];
	char path[PATH_BYTES];
	// The exe's change time: no process can set it, so it tells apart two files whose
	// device and inode look the same (an overlayfs or btrfs inode, whose stat() device
	// is not its superblock's).
	__u64 exe_ctime_sec;
	__u32 exe_ctime_nsec;
	__u32 pad2;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18); // 256 KiB: about 700 events
} EVENTS SEC(".maps");

// Events the ring buffer had no room for: the daemon logs them and polls.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} LOST SEC(".maps");

// UDP sockets reported bound, so that only their close is reported (not every client's).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} BOUND SEC(".maps");

// The event being built, and the exe path walk's place: one per CPU (an event is bigger
// than the stack allows, and bpf_loop's callback finds the walk here).
struct scratch {
	struct event e;
	struct dentry *dentry;
	struct mount *mnt;
	__u32 off;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} SCRATCH SEC(".maps");

static __u64 socket_inode(struct sock *sk)
{
	struct socket *sock = 0;
	unsigned long ino = 0;
	READ(sock, sk->sk_socket);
	if (!sock)
		return 0;
	READ(ino, ((struct socket_alloc *)sock)->vfs_inode.i_ino);
	return ino;
}

// A cleared event to fill, or none (the scratch map is missing: never on a loaded program).
static struct scratch *start(void)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&SCRATCH, &zero);
	if (s)
		__builtin_memset(&s->e, 0, sizeof(s->e));
	return s;
}

// Into the ring buffer; never waits: a full buffer counts the event lost.
static void send(struct scratch *s)
{
	if (bpf_ringbuf_output(&EVENTS, &s->e, sizeof(s->e), 0) != 0) {
		__u32 zero = 0;
		__u64 *lost = bpf_map_lookup_elem(&LOST, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
	}
}

// The socket's side of an event: protocol, address, port, namespace, inode, uid.
static void fill_socket(struct event *e, struct sock *sk)
{
	struct net *net = 0;
	__u16 family = 0, protocol = 0;
	e->time_ns = bpf_ktime_get_boot_ns();
	READ(family, sk->__sk_common.skc_family);
	READ(protocol, sk->sk_protocol);
	e->family = family;
	e->protocol = protocol;
	READ(e->port, sk->__sk_common.skc_num);
	if (family == AF_INET6)
		READ(e->addr, sk->__sk_common.skc_v6_rcv_saddr);
	else
		bpf_probe_read_kernel(e->addr, 4, &sk->__sk_common.skc_rcv_saddr);
	READ(net, sk->__sk_common.skc_net.net);
	if (net)
		READ(e->netns, net->ns.inum);
	READ(e->uid, sk->sk_uid.val);
	e->key = socket_inode(sk);
	e->pid = daemon_pid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

// One step of the exe path walk: one name, or one mount crossed. 1 ends the walk.
static long walk_step(__u32 index, void *ctx)
{
	__u32 zero = 0;
	struct scratch *s = bpf_map_lookup_elem(&SCRATCH, &zero);
	if (!s)
		return 1;
	struct dentry *dentry = s->dentry, *parent = 0, *mnt_root = 0;
	struct mount *mnt = s->mnt;
	READ(mnt_root, mnt->mnt.mnt_root);
	READ(parent, dentry->d_parent);
	if (dentry == mnt_root || dentry == parent) {
		struct mount *mnt_parent = 0;
		READ(mnt_parent, mnt->mnt_parent);
		if (dentry != mnt_root || mnt_parent == mnt || !mnt_parent) {
			s->e.path_truncated = 0; // the root: done
			return 1;
		}
		READ(s->dentry, mnt->mnt_mountpoint);
		s->mnt = mnt_parent;
		return 0;
	}
	const unsigned char *name = 0;
	READ(name, dentry->d_name.name);
	__u32 off = s->off;
	if (off > PATH_BYTES - NAME_BYTES)
		return 1;
	long n = bpf_probe_read_kernel_str(&s->e.path[off], NAME_BYTES, name);
	if (n <= 0)
		return 1;
	s->off = off + n;
	s->dentry = parent;
	return 0;
}

#define FIELD_EXISTS(f) __builtin_preserve_field_info(f, 2 /* BPF_FIELD_EXISTS */)
#define I_CTIME_QUERIED (1U << 31) // a flag the kernel keeps in i_ctime_nsec (6.13 and later)

// The exe inode's change time, whichever way this kernel keeps it.
static void read_ctime(struct event *e, struct inode *inode)
{
	struct inode___ctime_split *split = (void *)inode;
	struct inode___ctime_hidden *hidden = (void *)inode;
	struct inode___ctime_plain *plain = (void *)inode;
	struct timespec64 ts = {};
	if (FIELD_EXISTS(split->i_ctime_sec)) {
		READ(ts.tv_sec, split->i_ctime_sec);
		__u32 nsec = 0;
		READ(nsec, split->i_ctime_nsec);
		ts.tv_nsec = nsec & ~I_CTIME_QUERIED;
	} else if (FIELD_EXISTS(hidden->__i_ctime)) {
		READ(ts, hidden->__i_ctime);
	} else if (FIELD_EXISTS(plain->i_ctime)) {
		READ(ts, plain->i_ctime);
	}
	e->exe_ctime_sec = ts.tv_sec;
	e->exe_ctime_nsec = ts.tv_nsec;
}

// The process's side: when it started, and the file it runs with that file's path.
static void fill_process(struct scratch *s)
{
	struct event *e = &s->e;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *leader = 0;
	struct mm_struct *mm = 0;
	struct file *exe = 0;
	struct inode *inode = 0;
	struct super_block *sb = 0;
	READ(leader, task->group_leader);
	if (leader)
		READ(e->start_boottime, leader->start_boottime);
	READ(mm, task->mm);
	if (!mm)
		return;
	READ(exe, mm->exe_file);
	if (!exe)
		return;
	READ(inode, exe->f_inode);
	if (inode) {
		READ(e->exe_ino, inode->i_ino);
		READ(sb, inode->i_sb);
		if (sb)
			READ(e->exe_dev, sb->s_dev);
		read_ctime(e, inode);
	}

	// The path: names from the file up to the root, crossing mounts, as d_path would.
	struct vfsmount *vfsmnt = 0;
	READ(s->dentry, exe->f_path.dentry);
	READ(vfsmnt, exe->f_path.mnt);
	// container_of(vfsmnt, struct mount, mnt), at the running kernel's offset.
	__u64 mnt_off = __builtin_preserve_field_info(((struct mount *)0)->mnt, 0 /* byte offset */);
	s->mnt = (struct mount *)((char *)vfsmnt - mnt_off);
	s->off = 0;
	s->e.path_truncated = 1;
	bpf_loop(DEPTH, walk_step, 0, 0);
	s->e.path_len = s->off;
}

SEC("tp_btf/inet_sock_set_state")
int inet_sock_set_state(unsigned long long *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int oldstate = (int)ctx[1];
	int newstate = (int)ctx[2];
	__u16 protocol = 0;
	__u8 kind;
	if (newstate == TCP_LISTEN)
		kind = EV_LISTEN;
	else if (oldstate == TCP_LISTEN)
		kind = EV_UNLISTEN;
	else
		return 0;
	READ(protocol, sk->sk_protocol);
	if (protocol != IPPROTO_TCP)
		return 0;
	struct scratch *s = start();
	if (!s)
		return 0;
	struct event *e = &s->e;
	e->kind = kind;
	fill_socket(e, sk);
	if (kind == EV_LISTEN)
		fill_process(s);
	send(s);
	return 0;
}

// What a cgroup socket program sees of a socket (include/uapi/linux/bpf.h).
struct bpf_sock {
	__u32 bound_dev_if;
	__u32 family;
	__u32 type;
	__u32 protocol;
	__u32 mark;
	__u32 priority;
	__u32 src_ip4;
	__u32 src_ip6[4];
	__u32 src_port; // host order
	__u16 dst_port; // network order
	__u16 pad;
	__u32 dst_ip4;
	__u32 dst_ip6[4];
	__u32 state;
	__s32 rx_queue_mapping;
};

static __u64 (*bpf_get_socket_cookie)(void *ctx) = (void *)46;
static __u64 (*bpf_get_current_uid_gid)(void) = (void *)15;

static int is_udp(struct bpf_sock *ctx)
{
	return ctx->type == SOCK_DGRAM &&
	       (ctx->protocol == IPPROTO_UDP || ctx->protocol == IPPROTO_UDPLITE);
}

// The calling process: pid, name, uid and network namespace (the one it binds in).
static void fill_current(struct event *e)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct nsproxy *nsproxy = 0;
	struct net *net = 0;
	e->time_ns = bpf_ktime_get_boot_ns();
	e->pid = daemon_pid();
	e->uid = (__u32)bpf_get_current_uid_gid();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	READ(nsproxy, task->nsproxy);
	if (nsproxy)
		READ(net, nsproxy->net_ns);
	if (net)
		READ(e->netns, net->ns.inum);
}

// A UDP or UDP-Lite socket bound (a cgroup hook: tracing the kernel's bind functions
// needs fentry or kprobes, which not every kernel has; this one needs only cgroup v2).
// The return value lets the bind stand: 0 would refuse it.
static __attribute__((always_inline)) int bound(struct bpf_sock *ctx, int family)
{
	if (!is_udp(ctx))
		return 1;
	struct scratch *s = start();
	if (!s)
		return 1;
	struct event *e = &s->e;
	e->kind = EV_BIND;
	e->key = bpf_get_socket_cookie(ctx);
	e->family = family;
	e->protocol = ctx->protocol;
	e->port = ctx->src_port;
	// Each hook may read only its own family's address.
	if (family == AF_INET6) {
		__builtin_memcpy(e->addr, ctx->src_ip6, 16);
	} else {
		__u32 a = ctx->src_ip4;
		__builtin_memcpy(e->addr, &a, 4);
	}
	fill_current(e);
	fill_process(s);
	send(s);
	__u8 one = 1;
	bpf_map_update_elem(&BOUND, &e->key, &one, 0);
	return 1;
}

SEC("cgroup/post_bind4")
int udp_bound4(struct bpf_sock *ctx)
{
	return bound(ctx, AF_INET);
}

SEC("cgroup/post_bind6")
int udp_bound6(struct bpf_sock *ctx)
{
	return bound(ctx, AF_INET6);
}

// Any socket closing: reported only for the UDP sockets reported bound.
SEC("cgroup/sock_release")
int udp_released(struct bpf_sock *ctx)
{
	if (!is_udp(ctx))
		return 1;
	__u64 key = bpf_get_socket_cookie(ctx);
	if (!bpf_map_lookup_elem(&BOUND, &key))
		return 1;
	bpf_map_delete_elem(&BOUND, &key);
	struct scratch *s = start();
	if (!s)
		return 1;
	struct event *e = &s->e;
	e->kind = EV_UNBIND;
	e->key = key;
	e->family = ctx->family;
	e->protocol = ctx->protocol;
	fill_current(e);
	send(s);
	return 1;
}

// What a cgroup address program sees (include/uapi/linux/bpf.h); nothing of it is read.
struct bpf_sock_addr;

// A bound UDP socket connecting: a client (bindresvport's NFS and NIS clients bind a
// reserved port, then connect), never a listener; its close is not reported.
static int connecting(struct bpf_sock_addr *ctx)
{
	__u64 key = bpf_get_socket_cookie(ctx);
	if (!bpf_map_lookup_elem(&BOUND, &key))
		return 1;
	bpf_map_delete_elem(&BOUND, &key);
	struct scratch *s = start();
	if (!s)
		return 1;
	struct event *e = &s->e;
	e->kind = EV_CONNECT;
	e->key = key;
	fill_current(e);
	send(s);
	return 1; // the connect goes ahead
}

SEC("cgroup/connect4")
int udp_connect4(struct bpf_sock_addr *ctx)
{
	return connecting(ctx);
}

SEC("cgroup/connect6")
int udp_connect6(struct bpf_sock_addr *ctx)
{
	return connecting(ctx);
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
