/*
 * The user-mode host's "kernel": the functions that patches replace.
 *
 * This file is compiled with the kernel's tracing flags (-pg -mfentry -mnop-mcount
 * -mrecord-mcount), so every function starts with the 5-byte fentry NOP and the linker keeps a
 * list of those NOPs in the section __mcount_loc. The Rust side of the host finds the patch
 * sites in that list, never at the symbol address.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "include/kgraft_host.h"

#define noinline __attribute__((noinline))
#define notrace __attribute__((no_instrument_function))
#define used __attribute__((used))

/* The per-thread universe flag that the reality-check trampolines read through %fs. */
__thread unsigned char kgt_universe;

/* Returns the offset of this thread's universe flag from the thread pointer. */
notrace long kgt_universe_tpoff(void)
{
	return (long)((char *)&kgt_universe - (char *)__builtin_thread_pointer());
}

/* Returns the address of the calling thread's universe flag. */
notrace unsigned char *kgt_universe_ptr(void)
{
	return &kgt_universe;
}

noinline void seq_puts(struct seq_file *m, const char *s)
{
	size_t len = strlen(s);
	if (m->count + len >= m->size)
		len = m->size - m->count - 1;
	memcpy(m->buf + m->count, s, len);
	m->count += len;
	m->buf[m->count] = '\0';
}

/* Returns nothing, as the kernel's does since Linux 4.3. */
noinline void seq_printf(struct seq_file *m, const char *fmt, ...)
{
	va_list ap;
	size_t room = m->size - m->count;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(m->buf + m->count, room, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= room)
		n = (int)room - 1;
	m->count += (size_t)n;
}

/* The log callbacks print to; the host reads it back through kgt_log_take(). */
static char kgt_log[4096];
static size_t kgt_log_len;
static volatile int kgt_log_lock;

noinline int _printk(const char *fmt, ...)
{
	char buf[256], *line = buf;
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	if (n < 0)
		return n;
	if ((size_t)n >= sizeof(buf))
		n = sizeof(buf) - 1;
	/*
	 * Drop the log level prefix ("\0016" is KERN_INFO) from the formatted text, as the
	 * kernel's log does: the level may come in through an argument.
	 */
	if (n >= 2 && line[0] == '\001') {
		line += 2;
		n -= 2;
	}
	while (__atomic_exchange_n(&kgt_log_lock, 1, __ATOMIC_ACQUIRE))
		;
	if (kgt_log_len + (size_t)n < sizeof(kgt_log)) {
		memcpy(kgt_log + kgt_log_len, line, (size_t)n);
		kgt_log_len += (size_t)n;
	}
	__atomic_store_n(&kgt_log_lock, 0, __ATOMIC_RELEASE);
	return n;
}

/* Copies the printk log into buf (NUL-terminated) and empties it; returns its length. */
notrace size_t kgt_log_take(char *buf, size_t size)
{
	size_t n;

	while (__atomic_exchange_n(&kgt_log_lock, 1, __ATOMIC_ACQUIRE))
		;
	n = kgt_log_len < size - 1 ? kgt_log_len : size - 1;
	memcpy(buf, kgt_log, n);
	buf[n] = '\0';
	kgt_log_len = 0;
	__atomic_store_n(&kgt_log_lock, 0, __ATOMIC_RELEASE);
	return n;
}

char kgt_boot_cmdline[] = "BOOT_IMAGE=/vmlinuz-kgraft-host root=/dev/kgraft ro quiet";
char *saved_command_line = kgt_boot_cmdline;

/* The host's copy of the kernel's /proc/cmdline handler. */
noinline int cmdline_proc_show(struct seq_file *m, void *v)
{
	(void)v;
	seq_puts(m, saved_command_line);
	seq_puts(m, "\n");
	return 0;
}

/* The built-in module kgraft_testmod (struct kgt_dev is in kgraft_host.h). */
struct kgt_dev kgt_the_dev = { .id = 1, .name = "kgt0" };

noinline void kgt_describe(struct kgt_dev *dev, struct seq_file *m)
{
	seq_printf(m, "kgt %s v1\n", dev->name);
}

noinline u64 kgt_encode(u64 x)
{
	return x ^ 0x5a5a5a5a5a5a5a5aULL;
}

noinline u64 kgt_decode(u64 y)
{
	return y ^ 0x5a5a5a5a5a5a5a5aULL;
}

/* A function with nothing to do, for measuring the cost of a call through each kind of site. */
noinline u64 kgt_bench_target(u64 x)
{
	__asm__ volatile("" : "+r"(x));
	return x + 1;
}

/* A function the benchmarks redirect to, in the host's own text. */
noinline u64 kgt_bench_replacement(u64 x)
{
	__asm__ volatile("" : "+r"(x));
	return x + 2;
}

/*
 * The "system calls". Each runs between the entry and the exit of the host's syscall boundary
 * (the Rust dispatcher), where a thread holds no frame of a patchable function.
 */

/* read(/proc/cmdline): fills buf with what cmdline_proc_show writes. */
noinline long sys_read_cmdline(char *buf, size_t size)
{
	struct seq_file m = { .buf = buf, .size = size, .count = 0 };
	int ret;

	buf[0] = '\0';
	ret = cmdline_proc_show(&m, NULL);
	return ret < 0 ? ret : (long)m.count;
}

/* read(/proc/kgraft_testmod): fills buf with what kgt_describe writes. */
noinline long sys_read_testmod(char *buf, size_t size)
{
	struct seq_file m = { .buf = buf, .size = size, .count = 0 };

	buf[0] = '\0';
	kgt_describe(&kgt_the_dev, &m);
	return (long)m.count;
}

/* write/read(/proc/kgraft_pair): 1 when kgt_decode(kgt_encode(x)) == x, 0 otherwise. */
noinline long sys_pair(u64 x)
{
	u64 y = kgt_encode(x);
	/* Give the other threads and the patcher a window between the two calls. */
	__asm__ volatile("pause");
	return kgt_decode(y) == x;
}

/* Sleeps for ms milliseconds; -EINTR when a signal (the kick) cut the sleep short. */
noinline long sys_nap(long ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	if (nanosleep(&ts, NULL) != 0)
		return -errno;
	return 0;
}

/* Spins while *flag is set: a thread that never leaves the kernel (a straggler). */
noinline long sys_spin(volatile int *flag)
{
	long n = 0;

	while (__atomic_load_n(flag, __ATOMIC_ACQUIRE))
		n++;
	return n;
}

/* The first of the generated batch-benchmark functions; naming it links them all in. */
extern u64 kgt_many_0(u64 x);
u64 (*const kgt_many_anchor)(u64) = kgt_many_0;

/*
 * Two local functions of the same name, one here and one in the generated file: a patch tells
 * them apart by sympos, their order by address as in kallsyms.
 */
static __attribute__((__noinline__, __noclone__, __used__)) u64 kgt_local(u64 x)
{
	__asm__ volatile("" : "+r"(x));
	return x + 100;
}

noinline u64 kgt_local_first(u64 x)
{
	return kgt_local(x);
}
