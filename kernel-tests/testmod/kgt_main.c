// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgraft_testmod: the test module whose functions the kgraft samples patch.
 *
 * It holds one long-lived device and serves two proc files:
 *   /proc/kgraft_testmod  reading it calls kgt_describe(dev, m), "kgt <name> v1";
 *   /proc/kgraft_pair     each read computes kgt_decode(kgt_encode(x)) for a fresh x in one
 *                         system call and prints "1" when the round trip gives x back, else "0";
 *   /proc/kgraft_nap      a read sleeps in kgt_nap for 30 s (less when signalled) and prints its
 *                         result: a task that holds a transition up until an engine's fake
 *                         signal wakes it.
 *   /proc/kgraft_nap_killable
 *                         a read sleeps in kgt_nap for 30 s in a killable sleep, which only a
 *                         fatal signal ends: no engine's fake signal wakes it, so it holds a
 *                         transition up for good, as a task blocked inside a patched function
 *                         does (for `kgraftc kernel load --timeout` and `force`).
 *   /proc/kgraft_bench    a read calls kgt_bench_target 1,000,000 times and prints
 *                         "calls=N ns=T": the cost of a call, patched or not, for the engines'
 *                         benchmark.
 *   /proc/kgraft_twins    "first=A second=B": kgt_twin(1) of this file and kgt_twin(1) of
 *                         kgt_twin.c, two static functions of one name (symbol positions 1 and 2).
 *   /proc/kgraft_spin     with the parameter spin=1, a kernel thread checks the encode/decode
 *                         pair in a loop, resting 50-100 us every 100 rounds; the file shows
 *                         "calls=N mismatches=M": a busy kernel thread, which never passes
 *                         through user space, for the transition to move.
 *
 * The patched functions are noinline and noipa: every call goes through their fentry NOP, and
 * gcc makes no clones or assumptions about them that a patch could not follow.
 */
#include <linux/atomic.h>
#include <linux/delay.h>
#include <linux/kthread.h>
#include <linux/module.h>
#include <linux/proc_fs.h>
#include <linux/sched/signal.h>
#include <linux/seq_file.h>

#define KGT_PATCHABLE noinline __attribute__((noipa))

struct kgt_dev {
	u64 id;
	char name[32];
};

void kgt_describe(struct kgt_dev *dev, struct seq_file *m);
u64 kgt_encode(u64 x);
u64 kgt_decode(u64 y);
int kgt_nap(unsigned int ms);
u64 kgt_bench_target(u64 x);

static struct kgt_dev kgt_the_dev = { .id = 1, .name = "alpha" };
static atomic64_t kgt_pair_next;

KGT_PATCHABLE void kgt_describe(struct kgt_dev *dev, struct seq_file *m)
{
	seq_printf(m, "kgt %s v1\n", dev->name);
}

KGT_PATCHABLE u64 kgt_encode(u64 x)
{
	return x ^ 0x5a5a5a5a5a5a5a5aULL;
}

KGT_PATCHABLE u64 kgt_decode(u64 y)
{
	return y ^ 0x5a5a5a5a5a5a5a5aULL;
}

/*
 * With this bit in its argument, kgt_nap sleeps in TASK_KILLABLE: a fake signal (the livepatch
 * core's or the kgraft engine's) does not wake it, a fatal signal does.
 */
#define KGT_NAP_KILLABLE 0x80000000u

/*
 * Returns 0 after sleeping `ms`, 1 when a signal (or an engine's fake one) woke it; a killable
 * nap returns 1 when a fatal signal ended it.
 */
KGT_PATCHABLE int kgt_nap(unsigned int ms)
{
	long left;

	if (!(ms & KGT_NAP_KILLABLE))
		return msleep_interruptible(ms) ? 1 : 0;
	left = msecs_to_jiffies(ms & ~KGT_NAP_KILLABLE) + 1;
	while (left && !fatal_signal_pending(current))
		left = schedule_timeout_killable(left);
	return left ? 1 : 0;
}

/* The function the benchmark calls: as small as a function gets. */
KGT_PATCHABLE u64 kgt_bench_target(u64 x)
{
	return x + 1;
}

#define KGT_BENCH_CALLS 1000000

static int kgt_bench_show(struct seq_file *m, void *v)
{
	u64 t0, t1, acc = 0;
	int i;

	t0 = ktime_get_ns();
	for (i = 0; i < KGT_BENCH_CALLS; i++)
		acc = kgt_bench_target(acc);
	t1 = ktime_get_ns();
	seq_printf(m, "calls=%llu ns=%llu\n", acc, t1 - t0);
	return 0;
}

/* The first kgt_twin of the module (kgt_twin.c has the second). */
static KGT_PATCHABLE __attribute__((used)) u64 kgt_twin(u64 x)
{
	return x + 1;
}

u64 kgt_twin_second(u64 x);

static int kgt_twins_show(struct seq_file *m, void *v)
{
	seq_printf(m, "first=%llu second=%llu\n", kgt_twin(1), kgt_twin_second(1));
	return 0;
}

static int kgt_describe_show(struct seq_file *m, void *v)
{
	kgt_describe(&kgt_the_dev, m);
	return 0;
}

static int kgt_pair_show(struct seq_file *m, void *v)
{
	u64 x = (u64)atomic64_inc_return(&kgt_pair_next) * 0x9e3779b97f4a7c15ULL;
	u64 y = kgt_encode(x);

	seq_printf(m, "%d\n", kgt_decode(y) == x);
	return 0;
}

static int kgt_nap_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%d\n", kgt_nap(30000));
	return 0;
}

static int kgt_nap_killable_show(struct seq_file *m, void *v)
{
	seq_printf(m, "%d\n", kgt_nap(KGT_NAP_KILLABLE | 30000));
	return 0;
}

static bool spin;
module_param(spin, bool, 0444);
MODULE_PARM_DESC(spin, "Run the pair-checking kernel thread (/proc/kgraft_spin)");

static struct task_struct *kgt_spinner;
static atomic64_t kgt_spin_calls, kgt_spin_mismatches;

static int kgt_spin_fn(void *unused)
{
	u64 x = 1;

	while (!kthread_should_stop()) {
		int i;

		for (i = 0; i < 100; i++) {
			x = x * 0x9e3779b97f4a7c15ULL + 1;
			if (kgt_decode(kgt_encode(x)) != x)
				atomic64_inc(&kgt_spin_mismatches);
			atomic64_inc(&kgt_spin_calls);
		}
		usleep_range(50, 100);
	}
	return 0;
}

static int kgt_spin_show(struct seq_file *m, void *v)
{
	seq_printf(m, "calls=%lld mismatches=%lld\n", (long long)atomic64_read(&kgt_spin_calls),
		   (long long)atomic64_read(&kgt_spin_mismatches));
	return 0;
}

/* The module's /proc files, created in this order and removed in the reverse one. */
static const struct {
	const char *name;
	int (*show)(struct seq_file *m, void *v);
} kgt_files[] = {
	{ "kgraft_testmod", kgt_describe_show },
	{ "kgraft_pair", kgt_pair_show },
	{ "kgraft_nap", kgt_nap_show },
	{ "kgraft_nap_killable", kgt_nap_killable_show },
	{ "kgraft_bench", kgt_bench_show },
	{ "kgraft_twins", kgt_twins_show },
};

/* Removes the first `n` files of kgt_files. */
static void kgt_remove_files(int n)
{
	while (n-- > 0)
		remove_proc_entry(kgt_files[n].name, NULL);
}

static int __init kgt_init(void)
{
	int i;

	for (i = 0; i < ARRAY_SIZE(kgt_files); i++) {
		if (!proc_create_single(kgt_files[i].name, 0444, NULL, kgt_files[i].show)) {
			kgt_remove_files(i);
			return -ENOMEM;
		}
	}
	if (spin) {
		kgt_spinner = kthread_run(kgt_spin_fn, NULL, "kgt_spin");
		if (IS_ERR(kgt_spinner)) {
			kgt_remove_files(ARRAY_SIZE(kgt_files));
			return PTR_ERR(kgt_spinner);
		}
		if (!proc_create_single("kgraft_spin", 0444, NULL, kgt_spin_show)) {
			kthread_stop(kgt_spinner);
			kgt_remove_files(ARRAY_SIZE(kgt_files));
			return -ENOMEM;
		}
	}
	return 0;
}

static void __exit kgt_exit(void)
{
	if (spin) {
		remove_proc_entry("kgraft_spin", NULL);
		kthread_stop(kgt_spinner);
	}
	kgt_remove_files(ARRAY_SIZE(kgt_files));
}

module_init(kgt_init);
module_exit(kgt_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Functions for the kgraft samples to patch");
