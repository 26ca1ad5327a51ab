// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgraft's own engine in the kernel: the kernel-facing half.
 *
 * Compiled by kbuild into a patch module built with `--engine kgraft`. The transition itself
 * (when to start, poll, kick, reverse and settle) is kgraft-rt's `transition` state machine, in
 * Rust; this file gives it the kernel's primitives:
 *
 *  - every changed function gets a reality check during a transition: an IPMODIFY ftrace_ops
 *    whose handler picks the old or the new code by the universe of the current task (of the
 *    CPU, in interrupt context and in the idle task);
 *  - tasks change universe at kernel entry and exit (the sys_enter and sys_exit tracepoints,
 *    registered only for the transition), or when a reliable stack trace of a task that is not
 *    running shows no function of the change; each CPU's interrupt universe moves when that CPU
 *    runs process context; a fork inherits the parent's universe;
 *  - stragglers are kicked with a fake signal (kernel threads: an interruptible wake-up);
 *  - once every task and CPU is in the new universe, each function is entered by a direct call
 *    (register_ftrace_direct_multi) to a two-instruction entry that jumps to the new code, and
 *    the reality check goes: a patched call runs no ftrace handler. Unpatching puts the check
 *    back over the direct call first, so no call ever sees a gap.
 *
 * State and control: /sys/kernel/kgraft/<patch>/{enabled,transition,stragglers,functions,force}.
 *
 * Kernel functions this needs that 6.1 does not export are found through kallsyms, whose
 * lookup is itself found with a kprobe. The symbols the patch itself uses that the kernel does
 * not export are resolved here too, from the table kgraftc writes (.kgraft.relocs): the module
 * is no livepatch module and needs nothing of the livepatch core's relocations.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/elf.h>
#include <linux/ftrace.h>
#include <linux/hash.h>
#include <linux/hashtable.h>
#include <linux/rculist.h>
#include <linux/refcount.h>
#include <linux/kprobes.h>
#include <linux/kernfs.h>
#include <linux/kobject.h>
#include <linux/mm.h>
#include <linux/mutex.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/sched/task.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/tracepoint.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

/*
 * What this file shares with the Rust side (the relocation table, `struct kg_func`, the
 * callback kinds), written by kgraftc from kgraft-rt's contract.rs.
 */
#include "kgraft_contract.h"

/* What `kgraftc kernel` looks for: this module applies itself. */
MODULE_INFO(kgraft, "engine");

/* What the engine keeps for one changed function. */
struct kg_site {
	struct ftrace_ops check; /* the reality check, during transitions */
	struct ftrace_ops direct; /* the direct call, between transitions */
	const char *name;
	const char *object; /* NULL: vmlinux */
	unsigned long sympos; /* 0: the only symbol of the name, N: the Nth in kallsyms order */
	unsigned long ip; /* the fentry site */
	unsigned long old_addr, old_size;
	unsigned long new_addr, new_size;
	unsigned long direct_addr;
	bool live; /* located: vmlinux, or a module that is loaded */
	bool check_on, direct_on;
	bool yielded; /* a kgraft patch stacked on this one holds the site now */
	struct kg_peer *below; /* the kgraft patch this one is stacked on for this function */
	unsigned long below_addr, below_size; /* its code, which universe 0 runs */
	bool nop; /* replace_all: a function an older patch changes and this one does not, restored */
	char *nop_name; /* its name, allocated */
};

static const char *kg_patch_name;
static struct kg_site *kg_sites;
static int kg_nsites, kg_capacity;
static bool kg_replace_all;
static DEFINE_MUTEX(kg_mutex);

/* Universes: 0 runs the original code, 1 the patch's. */
static u8 kg_goal;
static u8 kg_default_u; /* tasks the table does not list */
static bool kg_moving; /* a transition is in progress: the hooks move tasks */
static bool kg_busy; /* what `transition` shows: until the post callbacks have run */
static bool kg_enabled; /* patched, or on the way to it */
/*
 * A module that came while the patch was off and whose symbols the patch takes could not be
 * resolved: it was let in (nothing of the patch runs for it), and the patch cannot be enabled
 * again while it is loaded. Empty: none.
 */
static char kg_unresolved[MODULE_NAME_LEN];
static bool kg_sharing; /* our own check and direct call may share a site */
static DEFINE_PER_CPU(u8, kg_cpu_u);
static DEFINE_PER_CPU(struct work_struct, kg_cpu_work);

/* The universe of each task the engine moved, or that forked during a transition. */
struct kg_slot {
	struct task_struct *task;
	u8 u;
};
static struct kg_slot *kg_slots;
static unsigned int kg_slot_bits;
static DEFINE_RAW_SPINLOCK(kg_slots_lock);

/* Kernel functions found through kallsyms. */
static unsigned long (*kg_lookup_name)(const char *name);
static int (*kg_size_offset)(unsigned long addr, unsigned long *size, unsigned long *offset);
static int (*kg_stack_reliable)(struct task_struct *t, unsigned long *store, unsigned int size);
static unsigned int (*kg_stack_save)(struct task_struct *t, unsigned long *store, unsigned int size,
				     unsigned int skip);
static int (*kg_task_call)(struct task_struct *p, task_call_f func, void *arg);
static int (*kg_wake_up_state)(struct task_struct *p, unsigned int state);
static unsigned long (*kg_ftrace_location)(unsigned long ip);
static struct kset **kg_module_kset;

static struct tracepoint *kg_tp_enter, *kg_tp_exit, *kg_tp_fork;
static bool kg_tps_on;

static struct delayed_work kg_poll_work;
static struct kobject *kg_kobj;

/*
 * Stacking: a patch of the kgraft engine may change a function another one holds. The patches
 * find each other in /sys/kernel/kgraft, a kset whose every entry is a struct kg_entry, and talk
 * through their struct kg_peer (KG_PEER_ABI says which layout). The newer patch starts its
 * transition with its reality check sending universe 0 to the older patch's code, and the
 * older patch yields its direct call; the newer one hands the site back when it is taken off.
 * A patch another one is stacked on cannot be taken off before it.
 */
#define KG_PEER_ABI 3

/* A system state, as kgraft-rt's `state::State` lays it out (the livepatch core's klp_state). */
struct kg_state {
	unsigned long id;
	unsigned int version;
	void *data;
};

struct kg_peer {
	struct module *owner;
	const char *name;
	/* 0 and the code when this patch sends every call of `ip` to its code, -EBUSY if it is
	 * moving, -ENOENT if it does not change `ip`. */
	int (*site_owned)(unsigned long ip, unsigned long *new_addr, unsigned long *new_size);
	/* The functions this patch sends to its code now: up to `max` fentry sites. */
	int (*sites)(unsigned long *ips, int max);
	/* A replace_all patch has taken every function of this one over: it is off now. */
	void (*replaced)(const char *by);
	/* The patch above takes `ip` over: drop the direct call (the caller's check is on). */
	int (*yield)(unsigned long ip);
	/* The patch above is gone from `ip`: take the direct call back (the caller's check is on). */
	int (*take_back)(unsigned long ip);
	/* Whether this patch is stacked on `below` for any function. */
	bool (*stacked_on)(const struct kg_peer *below);
	/* Lets the patch above register its check beside this patch's direct calls, or not. */
	void (*share)(bool on);
	/* The system states of this patch while it is on (patched, or in a transition), in `*n`;
	 * NULL when it is off. */
	struct kg_state *(*states)(int *n);
	/* The shadow store this patch shares with the others (see kg_store_attach). */
	struct kg_store *(*store)(void);
};

struct kg_entry {
	struct kobject kobj;
	u32 abi; /* KG_PEER_ABI: the layout of what follows */
	struct kg_peer *peer;
};

static struct kset *kg_registry;
static struct kg_peer kg_self;
/* replace_all: the older patches this one replaces, their modules held. */
#define KG_MAX_PEERS 64
static struct kg_peer *kg_replacing[KG_MAX_PEERS];
static int kg_nreplacing;
/* replace_all: room for the functions of the older patches this one does not change. */
#define KG_MAX_NOPS 256
static int kg_take_over(void);
static void kg_finish_replacing(void);
static const char *kg_stacked_above(void);

/* Forcing (see "forcing" below). */
static bool kg_forced;
static bool kg_keep_self;
static void kg_force_all(void);
static void kg_keep_replaced(void);

/* Implemented by kgraft-rt (`kernel::kgraft`), called with kg_mutex held. */
extern void kgraft_engine_poll(void);
extern int kgraft_engine_disable(void);
extern int kgraft_engine_enable(void);
extern void kgraft_engine_replaced(void);
extern bool kgraft_engine_has_object(const char *module);
extern int kgraft_engine_object_event(const char *module, int kind, int state);

#define KG_STACK_MAX 64
static unsigned long kg_stack[KG_STACK_MAX];

/* ---- the task table -------------------------------------------------------------------- */

static struct kg_slot *kg_find_slot(struct task_struct *t)
{
	unsigned long mask = (1UL << kg_slot_bits) - 1;
	unsigned long i = hash_ptr(t, kg_slot_bits);
	unsigned long n;

	for (n = 0; n <= mask; n++, i = (i + 1) & mask) {
		struct task_struct *k = smp_load_acquire(&kg_slots[i].task);

		if (k == t || !k)
			return &kg_slots[i];
	}
	return NULL;
}

static u8 notrace kg_universe_of(struct task_struct *t)
{
	struct kg_slot *s;

	if (!kg_slots)
		return kg_default_u;
	s = kg_find_slot(t);
	if (!s || s->task != t)
		return kg_default_u;
	return READ_ONCE(s->u);
}

/* Sets the universe of `t`; false when the table is full. */
static bool kg_set_universe(struct task_struct *t, u8 u)
{
	unsigned long flags;
	struct kg_slot *s;
	bool ok = false;

	raw_spin_lock_irqsave(&kg_slots_lock, flags);
	if (kg_slots) {
		s = kg_find_slot(t);
		if (s) {
			WRITE_ONCE(s->u, u);
			if (!s->task)
				smp_store_release(&s->task, t);
			ok = true;
		}
	}
	raw_spin_unlock_irqrestore(&kg_slots_lock, flags);
	return ok;
}

/* ---- what differs between kernels ------------------------------------------------------ */

/*
 * The engine builds for every kernel of a fleet from this one file. What differs is told by the
 * target itself: by its headers' macros, or by kgraftc from its BTF (KG_DIRECT_MULTI: ftrace's
 * direct calls through register_ftrace_direct_multi, Linux 6.1 to 6.4, where 6.5 on has
 * register_ftrace_direct of an ops; KG_KALLSYMS_MODULE: a kallsyms_on_each_symbol callback that
 * takes the symbol's module, before 6.3). Never by a version number.
 */
#ifdef ftrace_regs_set_instruction_pointer
#define kg_set_ip(fregs, ip) ftrace_regs_set_instruction_pointer(fregs, ip)
#else
#define kg_set_ip(fregs, ip) ftrace_instruction_pointer_set(fregs, ip)
#endif

#ifdef KG_DIRECT_MULTI
#define kg_register_direct(ops, addr) register_ftrace_direct_multi(ops, addr)
#define kg_unregister_direct(ops, addr) unregister_ftrace_direct_multi(ops, addr)
#else
/* The ops' filter is freed with it: kg_direct_on sets a new one on a cleared ops. */
#define kg_register_direct(ops, addr) register_ftrace_direct(ops, addr)
#define kg_unregister_direct(ops, addr) unregister_ftrace_direct(ops, addr, true)
#endif

/* ---- the reality check ----------------------------------------------------------------- */

static void notrace kg_check(unsigned long ip, unsigned long parent_ip, struct ftrace_ops *ops,
			     struct ftrace_regs *fregs)
{
	struct kg_site *site = container_of(ops, struct kg_site, check);
	u8 u;

	preempt_disable_notrace();
	if (in_task() && !(current->flags & PF_IDLE))
		u = kg_universe_of(current);
	else
		u = __this_cpu_read(kg_cpu_u);
	if (u) {
		if (!site->nop)
			kg_set_ip(fregs, site->new_addr);
	} else if (site->below_addr)
		kg_set_ip(fregs, site->below_addr);
	preempt_enable_notrace();
}

/* Our own check and direct call share a site only while the engine hands one to the other. */
static int kg_share(struct ftrace_ops *ops, enum ftrace_ops_cmd cmd)
{
	switch (cmd) {
	case FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_SELF:
	case FTRACE_OPS_CMD_ENABLE_SHARE_IPMODIFY_PEER:
		return READ_ONCE(kg_sharing) ? 0 : -EBUSY;
	default:
		return 0;
	}
}

/* ---- migration ------------------------------------------------------------------------- */

static void kg_migrate_current(void)
{
	u8 goal = READ_ONCE(kg_goal);

	if (!READ_ONCE(kg_moving))
		return;
	if (kg_universe_of(current) != goal)
		kg_set_universe(current, goal);
	/* Process context at a system call boundary: no interrupt is in progress on this CPU. */
	this_cpu_write(kg_cpu_u, goal);
}

static void kg_sys_enter(void *data, struct pt_regs *regs, long id)
{
	kg_migrate_current();
}

static void kg_sys_exit(void *data, struct pt_regs *regs, long ret)
{
	kg_migrate_current();
}

static void kg_fork(void *data, struct task_struct *parent, struct task_struct *child)
{
	if (READ_ONCE(kg_moving))
		kg_set_universe(child, kg_universe_of(parent));
}

static void kg_cpu_work_fn(struct work_struct *work)
{
	/* A worker runs in process context: no interrupt is in progress on this CPU. */
	if (READ_ONCE(kg_moving))
		this_cpu_write(kg_cpu_u, READ_ONCE(kg_goal));
}

/* Whether `addr` lies in code a task leaving universe `from` may not be inside. */
static bool kg_in_change(unsigned long addr, u8 from)
{
	int i;

	for (i = 0; i < kg_nsites; i++) {
		struct kg_site *s = &kg_sites[i];
		unsigned long start, size;

		if (from && !s->nop) {
			/* Universe 1 runs the replacement. */
			start = s->new_addr;
			size = s->new_size;
		} else if (!from && s->below_addr) {
			/* Universe 0 runs the patch this one is stacked on. */
			start = s->below_addr;
			size = s->below_size;
		} else {
			/* The original function: universe 0's, or universe 1's for a function restored. */
			start = s->old_addr;
			size = s->live ? s->old_size : 0;
		}

		if (addr >= start && addr < start + size)
			return true;
	}
	return false;
}

/* Called by task_call_func with the task pinned off the CPU (or returning -EBUSY). */
static int kg_try_task(struct task_struct *t, void *arg)
{
	u8 from = kg_universe_of(t);
	int n, i;

	if (READ_ONCE(t->on_cpu))
		return -EBUSY;
	n = kg_stack_reliable(t, kg_stack, KG_STACK_MAX);
	if (n < 0)
		return -EINVAL;
	for (i = 0; i < n; i++)
		if (kg_in_change(kg_stack[i], from))
			return -EADDRINUSE;
	return kg_set_universe(t, kg_goal) ? 0 : -ENOSPC;
}

/* One pass over every task and CPU; returns how many are still outside the goal. */
int kg_migrate(void)
{
	struct task_struct *g, *t;
	int left = 0, cpu;

	if (kg_forced)
		kg_force_all();
	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (kg_universe_of(t) == kg_goal)
			continue;
		if (t == current) {
			/* The engine's worker runs none of the changed code. */
			if (!kg_set_universe(t, kg_goal))
				left++;
			continue;
		}
		if (kg_task_call(t, kg_try_task, NULL))
			left++;
	}
	rcu_read_unlock();
	for_each_possible_cpu(cpu) {
		if (!cpu_online(cpu))
			/* An offline CPU starts afresh, with nothing of the old code on its stacks. */
			per_cpu(kg_cpu_u, cpu) = kg_goal;
		else if (per_cpu(kg_cpu_u, cpu) != kg_goal)
			left++;
	}
	return left;
}

/* Queues the work item that moves each online CPU's interrupt universe, where it is behind. */
static void kg_cpus_move(void)
{
	int cpu;

	for_each_online_cpu(cpu)
		if (per_cpu(kg_cpu_u, cpu) != kg_goal)
			queue_work_on(cpu, system_wq, per_cpu_ptr(&kg_cpu_work, cpu));
}

/*
 * Wakes the stragglers: a fake signal sends a user task through the kernel's exit. The fake
 * signal is TIF_NOTIFY_SIGNAL, as the livepatch core's (set_notify_signal, whose wake-up 6.1 does
 * not export): an interruptible sleep ends and its system call restarts. Not TIF_SIGPENDING
 * without a signal: a task that has it set counts as having a signal pending already, and a
 * fatal signal other than SIGKILL then does not wake it from a killable sleep.
 */
void kg_kick(void)
{
	struct task_struct *g, *t;

	rcu_read_lock();
	for_each_process_thread(g, t) {
		if (kg_universe_of(t) == kg_goal || t == current)
			continue;
		if (t->flags & PF_KTHREAD)
			kg_wake_up_state(t, TASK_INTERRUPTIBLE);
		else if (!test_and_set_tsk_thread_flag(t, TIF_NOTIFY_SIGNAL) &&
			 !kg_wake_up_state(t, TASK_INTERRUPTIBLE))
			/* Running: an interrupt sends it through the exit to user mode. */
			kick_process(t);
	}
	rcu_read_unlock();
	kg_cpus_move();
}

/* ---- transitions ----------------------------------------------------------------------- */

static void kg_tracepoints_off(void)
{
	if (!kg_tps_on)
		return;
	tracepoint_probe_unregister(kg_tp_enter, (void *)kg_sys_enter, NULL);
	tracepoint_probe_unregister(kg_tp_exit, (void *)kg_sys_exit, NULL);
	tracepoint_probe_unregister(kg_tp_fork, (void *)kg_fork, NULL);
	tracepoint_synchronize_unregister();
	kg_tps_on = false;
}

static int kg_tracepoints_on(void)
{
	int ret;

	ret = tracepoint_probe_register(kg_tp_fork, (void *)kg_fork, NULL);
	if (ret)
		return ret;
	ret = tracepoint_probe_register(kg_tp_enter, (void *)kg_sys_enter, NULL);
	if (ret) {
		tracepoint_probe_unregister(kg_tp_fork, (void *)kg_fork, NULL);
		return ret;
	}
	ret = tracepoint_probe_register(kg_tp_exit, (void *)kg_sys_exit, NULL);
	if (ret) {
		tracepoint_probe_unregister(kg_tp_enter, (void *)kg_sys_enter, NULL);
		tracepoint_probe_unregister(kg_tp_fork, (void *)kg_fork, NULL);
		return ret;
	}
	kg_tps_on = true;
	return 0;
}

static void kg_check_off(struct kg_site *s)
{
	if (s->check_on) {
		unregister_ftrace_function(&s->check);
		ftrace_set_filter_ip(&s->check, s->ip, 1, 0);
		s->check_on = false;
	}
}

static int kg_check_on(struct kg_site *s)
{
	int ret;

	s->check.func = kg_check;
	s->check.flags |= FTRACE_OPS_FL_SAVE_REGS | FTRACE_OPS_FL_IPMODIFY | FTRACE_OPS_FL_RECURSION;
	ret = ftrace_set_filter_ip(&s->check, s->ip, 0, 0);
	if (ret)
		return ret;
	ret = register_ftrace_function(&s->check);
	if (ret) {
		ftrace_set_filter_ip(&s->check, s->ip, 1, 0);
		return ret;
	}
	s->check_on = true;
	return 0;
}

static void kg_direct_off(struct kg_site *s)
{
	if (s->direct_on) {
		kg_unregister_direct(&s->direct, s->direct_addr);
		s->direct_on = false;
	}
}

static int kg_direct_on(struct kg_site *s)
{
	int ret;

	memset(&s->direct, 0, sizeof(s->direct));
	s->direct.ops_func = kg_share;
	ret = ftrace_set_filter_ip(&s->direct, s->ip, 0, 0);
	if (ret)
		return ret;
	ret = kg_register_direct(&s->direct, s->direct_addr);
	if (ret) {
		ftrace_set_filter_ip(&s->direct, s->ip, 1, 0);
		return ret;
	}
	s->direct_on = true;
	return 0;
}

static void kg_table_free(void)
{
	struct kg_slot *slots = kg_slots;
	unsigned long flags;

	raw_spin_lock_irqsave(&kg_slots_lock, flags);
	kg_slots = NULL;
	raw_spin_unlock_irqrestore(&kg_slots_lock, flags);
	kvfree(slots);
}

/* Every check is off, no tracepoint runs: the table and the per-CPU works can go. */
static void kg_transition_end(void)
{
	int cpu;

	WRITE_ONCE(kg_moving, false);
	kg_forced = false;
	kg_tracepoints_off();
	for_each_possible_cpu(cpu)
		cancel_work_sync(per_cpu_ptr(&kg_cpu_work, cpu));
	kg_table_free();
}

/*
 * Starts a transition to `goal`: every task and CPU is in the other universe, and each changed
 * function gets its reality check (over the direct call when unpatching). Returns 0 or a
 * negative errno; on failure nothing is left changed.
 */
int kg_begin(u8 goal)
{
	struct task_struct *g, *t;
	unsigned long count = 0;
	int i, ret, cpu;

	rcu_read_lock();
	for_each_process_thread(g, t)
		count++;
	rcu_read_unlock();
	/* Room for four times the tasks there are now, and forks. */
	kg_slot_bits = order_base_2(4 * count + 4096);
	kg_default_u = !goal;
	kg_goal = goal;
	for_each_possible_cpu(cpu)
		per_cpu(kg_cpu_u, cpu) = !goal;
	kg_slots = kvcalloc(1UL << kg_slot_bits, sizeof(*kg_slots), GFP_KERNEL);
	if (!kg_slots)
		return -ENOMEM;
	/* The hooks are in place before anything changes, and move no task yet. */
	ret = kg_tracepoints_on();
	if (ret) {
		pr_err("kgraft: %s: cannot register the system call tracepoints (error %d)\n", kg_patch_name, ret);
		kg_transition_end();
		return ret;
	}
	WRITE_ONCE(kg_sharing, true);
	for (i = 0; i < kg_nsites; i++) {
		if (!kg_sites[i].live)
			continue;
		/* Over the direct call of the patch this one is stacked on, by its leave. */
		if (kg_sites[i].below)
			kg_sites[i].below->share(true);
		ret = kg_check_on(&kg_sites[i]);
		if (kg_sites[i].below)
			kg_sites[i].below->share(false);
		if (ret) {
			pr_err("kgraft: %s: cannot redirect %s: another live patch or tracer holds it (error %d)\n",
			       kg_patch_name, kg_sites[i].name, ret);
			break;
		}
	}
	if (!ret && goal)
		ret = kg_take_over();
	if (ret) {
		while (i-- > 0)
			kg_check_off(&kg_sites[i]);
		WRITE_ONCE(kg_sharing, false);
		kg_transition_end();
		return ret;
	}
	/* Unpatching: the check now decides, and it sends every task to the patch until moved. */
	for (i = 0; i < kg_nsites; i++)
		kg_direct_off(&kg_sites[i]);
	WRITE_ONCE(kg_sharing, false);
	/*
	 * Only now may a task move: every changed function decides by the universe, so a moved
	 * task runs the goal's code in all of them, never the goal's in one and the start's in
	 * another.
	 */
	WRITE_ONCE(kg_moving, true);
	kg_enabled = goal;
	WRITE_ONCE(kg_busy, true);
	/* An idle CPU runs no system call: a work item moves its interrupt universe now. */
	kg_cpus_move();
	return 0;
}

/* The transition is over, its callbacks included. */
void kg_done(void)
{
	WRITE_ONCE(kg_busy, false);
}

/* Turns the transition around: tasks already moved go back, the others are there already. */
void kg_reverse(void)
{
	/*
	 * Tasks the table does not list never left the start, which is the new goal; a slot that
	 * names the old goal now means "not back yet", and the walk and the hooks treat it so.
	 */
	WRITE_ONCE(kg_goal, !kg_goal);
	kg_enabled = kg_goal;
	/* A forced transition turned around is checked again: the tasks forced over go back by the
	 * stack check, as the ones the engine moved. */
	kg_forced = false;
	kg_cpus_move();
}

/*
 * Every task and CPU is in the goal: patched functions get their direct call, then the checks
 * go; unpatched ones lose their check and run the original code.
 */
void kg_settle(void)
{
	int i, ret;

	if (kg_goal) {
		WRITE_ONCE(kg_sharing, true);
		for (i = 0; i < kg_nsites; i++) {
			if (!kg_sites[i].live)
				continue;
			if (kg_sites[i].nop) {
				/* Restored: the original code runs, with nothing on its site. */
				kg_check_off(&kg_sites[i]);
				continue;
			}
			ret = kg_direct_on(&kg_sites[i]);
			if (ret) {
				/* The check stays: it sends every task to the patch, as the call would. */
				pr_warn("kgraft: %s: %s keeps its ftrace handler: no direct call (error %d)\n",
					kg_patch_name, kg_sites[i].name, ret);
				continue;
			}
			kg_check_off(&kg_sites[i]);
		}
		WRITE_ONCE(kg_sharing, false);
		kg_finish_replacing();
	} else {
		for (i = 0; i < kg_nsites; i++) {
			struct kg_site *s = &kg_sites[i];

			if (s->below && s->live && s->below->take_back(s->ip))
				pr_err("kgraft: %s: %s: %s did not take its direct call back; its code stays behind the check\n",
				       kg_patch_name, s->name, s->below->name);
			else
				kg_check_off(s);
		}
	}
	kg_transition_end();
}

/* Polls again in `ms` milliseconds. */
void kg_schedule(unsigned int ms)
{
	schedule_delayed_work(&kg_poll_work, msecs_to_jiffies(ms));
}

/* The current time in milliseconds, for the state machine. */
u64 kg_now_ms(void)
{
	return jiffies_to_msecs(get_jiffies_64());
}

/* Holds and releases this module: it stays loaded while the patch is enabled. */
void kg_hold(void)
{
	__module_get(THIS_MODULE);
}

void kg_release_hold(void)
{
	if (kg_keep_self) {
		pr_warn("kgraft: %s: the transition was forced: the module stays loaded until the next boot\n",
			kg_patch_name);
		return;
	}
	module_put(THIS_MODULE);
}

static void kg_poll_fn(struct work_struct *work)
{
	mutex_lock(&kg_mutex);
	kgraft_engine_poll();
	mutex_unlock(&kg_mutex);
}

/* ---- sysfs ----------------------------------------------------------------------------- */

static ssize_t enabled_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(kg_enabled));
}

static ssize_t enabled_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			     size_t count)
{
	bool on;
	int ret;

	ret = kstrtobool(buf, &on);
	if (ret)
		return ret;
	mutex_lock(&kg_mutex);
	if (on && !kg_enabled && kg_unresolved[0]) {
		pr_err("kgraft: %s: cannot be enabled while module %s, whose symbols it could not resolve, is loaded\n",
		       kg_patch_name, kg_unresolved);
		ret = -EINVAL;
	} else if (on) {
		ret = kg_enabled ? 0 : kgraft_engine_enable();
	} else if (kg_enabled) {
		const char *above = kg_stacked_above();

		if (above) {
			pr_err("kgraft: %s: cannot be taken off before %s, which is stacked on it\n", kg_patch_name,
			       above);
			ret = -EBUSY;
		} else {
			ret = kgraft_engine_disable();
		}
	} else {
		ret = 0;
	}
	mutex_unlock(&kg_mutex);
	return ret ? ret : count;
}

static ssize_t transition_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(kg_busy));
}

static ssize_t stragglers_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	static unsigned long frames[8];
	struct task_struct *g, *t;
	int len = 0, cpu;

	mutex_lock(&kg_mutex);
	if (!kg_moving)
		goto out;
	rcu_read_lock();
	for_each_process_thread(g, t) {
		unsigned int n, i;

		if (kg_universe_of(t) == kg_goal)
			continue;
		if (len > PAGE_SIZE - 256)
			break;
		len += sysfs_emit_at(buf, len, "%s (pid %d)", t->comm, t->pid);
		n = kg_stack_save(t, frames, ARRAY_SIZE(frames), 0);
		for (i = 0; i < n && len < PAGE_SIZE - 64; i++)
			len += sysfs_emit_at(buf, len, "%s%ps", i ? " <- " : ": ", (void *)frames[i]);
		len += sysfs_emit_at(buf, len, "\n");
	}
	rcu_read_unlock();
	for_each_online_cpu(cpu)
		if (per_cpu(kg_cpu_u, cpu) != kg_goal && len < PAGE_SIZE - 64)
			len += sysfs_emit_at(buf, len, "cpu %d (interrupts)\n", cpu);
out:
	mutex_unlock(&kg_mutex);
	return len;
}

static ssize_t functions_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	int len = 0, i;

	for (i = 0; i < kg_nsites && len < PAGE_SIZE - 2 * KSYM_NAME_LEN; i++)
		len += sysfs_emit_at(buf, len, "%s:%s\n", kg_sites[i].object ? kg_sites[i].object : "vmlinux",
				     kg_sites[i].name);
	return len;
}

static ssize_t force_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf, size_t count);

static struct kobj_attribute kg_attr_enabled = __ATTR_RW(enabled);
static struct kobj_attribute kg_attr_force = __ATTR_WO(force);
static struct kobj_attribute kg_attr_functions = __ATTR_RO(functions);
static struct kobj_attribute kg_attr_transition = __ATTR_RO(transition);
/* The stacks of other users' tasks are root's to read (as /proc/PID/stack is): 0400. */
static struct kobj_attribute kg_attr_stragglers = __ATTR(stragglers, 0400, stragglers_show, NULL);
static struct attribute *kg_attrs[] = {
	&kg_attr_enabled.attr,
	&kg_attr_transition.attr,
	&kg_attr_stragglers.attr,
	&kg_attr_functions.attr,
	&kg_attr_force.attr,
	NULL,
};
static const struct attribute_group kg_group = { .attrs = kg_attrs };

/*
 * /sys/kernel/kgraft: a kset made by the first patch of the kgraft engine and found by the next
 * ones by its name. It stays when they are gone, as /sys/kernel/livepatch does: one reference to
 * it is never dropped, and its release is the kernel's own, not a module's.
 */
static struct kset *kg_root(void)
{
	struct kernfs_node *kn;
	struct kset *root;
	int tries;

	for (tries = 0; tries < 3; tries++) {
		kn = kernfs_find_and_get(kernel_kobj->sd, "kgraft");
		if (kn) {
			/* A kobject's directory keeps its kobject as the node's private data. */
			root = to_kset(kobject_get(kn->priv));
			kernfs_put(kn);
			return root;
		}
		root = kset_create_and_add("kgraft", NULL, kernel_kobj);
		if (root) {
			kset_get(root); /* the reference that keeps it */
			return root;
		}
		/* Another patch made it meanwhile: look again. */
	}
	return NULL;
}

static void kg_entry_release(struct kobject *kobj)
{
	kfree(container_of(kobj, struct kg_entry, kobj));
}

static struct kobj_type kg_entry_ktype = {
	.release = kg_entry_release,
	.sysfs_ops = &kobj_sysfs_ops,
};

/* The patch's own directory, /sys/kernel/kgraft/<patch>, which also lists it for its peers. */
static struct kobject *kg_patch_dir(void)
{
	struct kg_entry *e;
	int ret;

	kg_registry = kg_root();
	if (!kg_registry)
		return NULL;
	e = kzalloc(sizeof(*e), GFP_KERNEL);
	if (!e)
		goto fail;
	e->abi = KG_PEER_ABI;
	e->peer = &kg_self;
	e->kobj.kset = kg_registry;
	ret = kobject_init_and_add(&e->kobj, &kg_entry_ktype, NULL, "%s", kg_patch_name);
	if (ret) {
		kobject_put(&e->kobj);
		goto fail;
	}
	return &e->kobj;
fail:
	kset_put(kg_registry);
	kg_registry = NULL;
	return NULL;
}

/* The other patches of the engine, each with its module held; put them with kg_peers_put. */
static int kg_peers_get(struct kg_peer **out)
{
	struct kobject *kobj;
	int n = 0;

	if (!kg_registry)
		return 0;
	spin_lock(&kg_registry->list_lock);
	list_for_each_entry(kobj, &kg_registry->list, entry) {
		struct kg_entry *e = container_of(kobj, struct kg_entry, kobj);

		if (n == KG_MAX_PEERS || e->abi != KG_PEER_ABI || e->peer == &kg_self)
			continue;
		if (try_module_get(e->peer->owner))
			out[n++] = e->peer;
	}
	spin_unlock(&kg_registry->list_lock);
	return n;
}

static void kg_peers_put(struct kg_peer **peers, int n)
{
	while (n-- > 0)
		module_put(peers[n]->owner);
}

/* Finds the kgraft patch that holds the site's function; keeps its module held. */
static int kg_find_below(struct kg_site *s)
{
	struct kg_peer *peers[KG_MAX_PEERS];
	int n = kg_peers_get(peers), i, ret = 0;

	for (i = 0; i < n; i++) {
		unsigned long addr, size;
		int r = peers[i]->site_owned(s->ip, &addr, &size);

		if (r == -EBUSY) {
			pr_err("kgraft: %s: %s: patch %s, which changes it, is in a transition\n", kg_patch_name, s->name,
			       peers[i]->name);
			ret = -EBUSY;
		} else if (!r && !s->below) {
			s->below = peers[i];
			s->below_addr = addr;
			s->below_size = size;
			__module_get(peers[i]->owner); /* held as long as this patch lives */
		}
	}
	kg_peers_put(peers, n);
	return ret;
}

/* Every site another kgraft patch holds: that patch yields its direct call to our check. */
static int kg_take_over(void)
{
	int i, ret;

	for (i = 0; i < kg_nsites; i++) {
		struct kg_site *s = &kg_sites[i];

		if (!s->below || !s->live)
			continue;
		ret = s->below->yield(s->ip);
		if (ret) {
			pr_err("kgraft: %s: %s: patch %s would not yield it (error %d)\n", kg_patch_name, s->name,
			       s->below->name, ret);
			while (i-- > 0)
				if (kg_sites[i].below && kg_sites[i].live)
					kg_sites[i].below->take_back(kg_sites[i].ip);
			return ret;
		}
	}
	return 0;
}

/* Whether a kgraft patch is stacked on this one: then this one cannot be taken off first. */
static const char *kg_stacked_above(void)
{
	struct kg_peer *peers[KG_MAX_PEERS];
	const char *above = NULL;
	int n = kg_peers_get(peers), i;

	for (i = 0; i < n && !above; i++)
		if (peers[i]->stacked_on(&kg_self))
			above = peers[i]->name;
	kg_peers_put(peers, n);
	return above;
}

static struct kg_site *kg_site_at(unsigned long ip)
{
	int i;

	for (i = 0; i < kg_nsites; i++)
		if (kg_sites[i].live && kg_sites[i].ip == ip)
			return &kg_sites[i];
	return NULL;
}

static int kg_peer_site_owned(unsigned long ip, unsigned long *new_addr, unsigned long *new_size)
{
	struct kg_site *s;
	int ret = -ENOENT;

	mutex_lock(&kg_mutex);
	s = kg_site_at(ip);
	if (s && READ_ONCE(kg_busy))
		ret = -EBUSY;
	else if (s && s->direct_on && !s->yielded) {
		*new_addr = s->new_addr;
		*new_size = s->new_size;
		ret = 0;
	}
	mutex_unlock(&kg_mutex);
	return ret;
}

static int kg_peer_yield(unsigned long ip)
{
	struct kg_site *s;
	int ret = -ENOENT;

	mutex_lock(&kg_mutex);
	s = kg_site_at(ip);
	if (s && s->direct_on) {
		kg_direct_off(s);
		s->yielded = true;
		ret = 0;
	}
	mutex_unlock(&kg_mutex);
	return ret;
}

static int kg_peer_take_back(unsigned long ip)
{
	struct kg_site *s;
	int ret = -ENOENT;

	mutex_lock(&kg_mutex);
	s = kg_site_at(ip);
	if (s && s->yielded) {
		/* The patch above still has its check on the site, for the moment of the handover. */
		WRITE_ONCE(kg_sharing, true);
		ret = kg_direct_on(s);
		WRITE_ONCE(kg_sharing, false);
		if (!ret)
			s->yielded = false;
	}
	mutex_unlock(&kg_mutex);
	return ret;
}

static bool kg_peer_stacked_on(const struct kg_peer *below)
{
	int i;

	for (i = 0; i < kg_nsites; i++)
		if (READ_ONCE(kg_sites[i].below) == below && (READ_ONCE(kg_enabled) || READ_ONCE(kg_busy)))
			return true;
	return false;
}

static int kg_peer_sites(unsigned long *ips, int max)
{
	int i, n = 0;

	mutex_lock(&kg_mutex);
	for (i = 0; i < kg_nsites && n < max; i++)
		if (kg_sites[i].live && kg_sites[i].direct_on && !kg_sites[i].yielded)
			ips[n++] = kg_sites[i].ip;
	mutex_unlock(&kg_mutex);
	return n;
}

/* Taken over whole by a replace_all patch: off, without a transition or callbacks of its own. */
static void kg_peer_replaced(const char *by)
{
	int i;

	mutex_lock(&kg_mutex);
	for (i = 0; i < kg_nsites; i++) {
		kg_sites[i].yielded = false;
		kg_sites[i].live = false;
	}
	if (kg_enabled) {
		kg_enabled = false;
		kgraft_engine_replaced();
		pr_info("kgraft: %s: replaced by %s\n", kg_patch_name, by);
		/* The module may go now. */
		module_put(THIS_MODULE);
	}
	mutex_unlock(&kg_mutex);
}

static void kg_peer_share(bool on)
{
	WRITE_ONCE(kg_sharing, on);
}

/* ---- system states ----------------------------------------------------------------------- */

/* The patch's own states (kgraft-rt's array, which lives as long as the module). */
static struct kg_state *kg_states;
static int kg_nstates;

static struct kg_state *kg_peer_states(int *n)
{
	if (!READ_ONCE(kg_enabled) && !READ_ONCE(kg_busy))
		return NULL;
	*n = kg_nstates;
	return kg_states;
}

static struct kg_state *kg_state_in(struct kg_state *states, int n, unsigned long id)
{
	int i;

	for (i = 0; states && i < n; i++)
		if (states[i].id == id)
			return &states[i];
	return NULL;
}

/*
 * Whether this patch may go on beside the kgraft patches that are on, by the livepatch core's
 * rules for system states: no state may go down in version, and a replace_all patch must
 * carry every state of the patches it replaces. A refusal names the state and the patch.
 */
static int kg_states_compatible(void)
{
	struct kg_peer *peers[KG_MAX_PEERS];
	int n = kg_peers_get(peers), i, j, ret = 0;

	for (i = 0; i < n && !ret; i++) {
		int m = 0;
		struct kg_state *theirs = peers[i]->states(&m);

		for (j = 0; theirs && j < m && !ret; j++) {
			struct kg_state *ours = kg_state_in(kg_states, kg_nstates, theirs[j].id);

			if (!ours && kg_replace_all) {
				pr_err("kgraft: %s: replacing %s, it does not carry system state %lu (version %u)\n",
				       kg_patch_name, peers[i]->name, theirs[j].id, theirs[j].version);
				ret = -EINVAL;
			} else if (ours && ours->version < theirs[j].version) {
				pr_err("kgraft: %s: system state %lu is at version %u in %s, this patch has %u\n",
				       kg_patch_name, theirs[j].id, theirs[j].version, peers[i]->name, ours->version);
				ret = -EINVAL;
			}
		}
	}
	kg_peers_put(peers, n);
	return ret;
}

/* This patch's state `id`, or NULL (kgraft-rt's `state::get`). */
struct kg_state *kg_state_get(unsigned long id)
{
	return kg_state_in(kg_states, kg_nstates, id);
}

/*
 * The state `id` of the last patch that went on before this one and is on still, or NULL
 * (kgraft-rt's `state::prev`, the livepatch core's klp_get_prev_state). The registry lists the
 * patches in the order they loaded.
 */
struct kg_state *kg_state_prev(unsigned long id)
{
	struct kobject *kobj;
	struct kg_state *found = NULL;

	if (!kg_registry)
		return NULL;
	spin_lock(&kg_registry->list_lock);
	list_for_each_entry(kobj, &kg_registry->list, entry) {
		struct kg_entry *e = container_of(kobj, struct kg_entry, kobj);
		struct kg_state *st;
		int n = 0;

		if (e->peer == &kg_self)
			break;
		if (e->abi != KG_PEER_ABI)
			continue;
		st = e->peer->states(&n);
		st = kg_state_in(st, n, id);
		if (st)
			found = st;
	}
	spin_unlock(&kg_registry->list_lock);
	return found;
}

/* ---- shadow data ------------------------------------------------------------------------ */

/*
 * Shadow data: fields attached to kernel objects, with the semantics of the livepatch core's
 * klp_shadow_* functions (kgraft-rt's shadow module calls these under the kg_shadow_* names),
 * kept by the engine itself, so that a patch needs nothing of the livepatch core.
 *
 * One store serves every kgraft patch loaded: the first patch allocates it, each later patch
 * takes a reference from a peer while it joins the registry, and the last one to leave frees
 * it, with whatever data is left (its destructors are unknown by then). A patch finds its
 * peers' store and publishes its own under the registry's list lock, so two patches that load
 * at once share one store.
 */
#define KG_STORE_BITS 10

struct kg_store {
	refcount_t users;
	spinlock_t lock;
	DECLARE_HASHTABLE(table, KG_STORE_BITS);
};

struct kg_shadow {
	struct hlist_node node;
	struct rcu_head rcu_head;
	void *obj;
	unsigned long id;
	char data[];
};

typedef int (*kg_shadow_ctor_t)(void *obj, void *shadow_data, void *ctor_data);
typedef void (*kg_shadow_dtor_t)(void *obj, void *shadow_data);

static struct kg_store *kg_store;

static struct kg_store *kg_peer_store(void)
{
	return READ_ONCE(kg_store);
}

/* Joins the peers' store, or makes the first one; the patch's entry is in the registry. */
static int kg_store_attach(void)
{
	struct kg_store *fresh = kzalloc(sizeof(*fresh), GFP_KERNEL);
	struct kobject *kobj;

	if (!fresh)
		return -ENOMEM;
	refcount_set(&fresh->users, 1);
	spin_lock_init(&fresh->lock);
	hash_init(fresh->table);
	spin_lock(&kg_registry->list_lock);
	list_for_each_entry(kobj, &kg_registry->list, entry) {
		struct kg_entry *e = container_of(kobj, struct kg_entry, kobj);
		struct kg_store *theirs;

		if (e->abi != KG_PEER_ABI || e->peer == &kg_self)
			continue;
		theirs = e->peer->store();
		if (theirs && refcount_inc_not_zero(&theirs->users)) {
			WRITE_ONCE(kg_store, theirs);
			break;
		}
	}
	if (!kg_store)
		WRITE_ONCE(kg_store, fresh);
	spin_unlock(&kg_registry->list_lock);
	if (kg_store != fresh)
		kfree(fresh);
	return 0;
}

/* Leaves the store, after the patch's entry left the registry: the last user frees it. */
static void kg_store_detach(void)
{
	struct kg_store *store = kg_store;
	struct kg_shadow *sh;
	struct hlist_node *tmp;
	int bkt;

	kg_store = NULL;
	if (!store || !refcount_dec_and_test(&store->users))
		return;
	/* No patch is left to reach the data, and none can come back to this store. */
	hash_for_each_safe(store->table, bkt, tmp, sh, node) {
		hash_del(&sh->node);
		kfree(sh);
	}
	kfree(store);
}

static struct kg_shadow *kg_shadow_find(struct kg_store *store, void *obj, unsigned long id)
{
	struct kg_shadow *sh;

	hash_for_each_possible_rcu(store->table, sh, node, (unsigned long)obj)
		if (sh->obj == obj && sh->id == id)
			return sh;
	return NULL;
}

void *kg_shadow_get(void *obj, unsigned long id)
{
	struct kg_store *store = READ_ONCE(kg_store);
	struct kg_shadow *sh;
	void *data = NULL;

	if (!store)
		return NULL;
	rcu_read_lock();
	sh = kg_shadow_find(store, obj, id);
	if (sh)
		data = sh->data;
	rcu_read_unlock();
	return data;
}

static void *kg_shadow_make(void *obj, unsigned long id, size_t size, gfp_t gfp, kg_shadow_ctor_t ctor,
			    void *ctor_data, bool warn_exists)
{
	struct kg_store *store = READ_ONCE(kg_store);
	struct kg_shadow *sh, *fresh;
	unsigned long flags;
	void *data;

	if (!store)
		return NULL;
	data = kg_shadow_get(obj, id);
	if (data)
		goto exists;
	/* Allocated before the lock, which may be taken in any context. */
	fresh = kzalloc(size + sizeof(*fresh), gfp);
	if (!fresh)
		return NULL;
	spin_lock_irqsave(&store->lock, flags);
	sh = kg_shadow_find(store, obj, id);
	if (sh) {
		spin_unlock_irqrestore(&store->lock, flags);
		kfree(fresh);
		data = sh->data;
		goto exists;
	}
	fresh->obj = obj;
	fresh->id = id;
	if (ctor) {
		int err = ctor(obj, fresh->data, ctor_data);

		if (err) {
			spin_unlock_irqrestore(&store->lock, flags);
			pr_err("kgraft: %s: the constructor of shadow data <%p, %lx> failed (error %d)\n", kg_patch_name,
			       obj, id, err);
			kfree(fresh);
			return NULL;
		}
	}
	hash_add_rcu(store->table, &fresh->node, (unsigned long)obj);
	spin_unlock_irqrestore(&store->lock, flags);
	return fresh->data;
exists:
	if (!warn_exists)
		return data;
	WARN(1, "kgraft: %s: shadow data <%p, %lx> exists already\n", kg_patch_name, obj, id);
	return NULL;
}

void *kg_shadow_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp, kg_shadow_ctor_t ctor, void *ctor_data)
{
	return kg_shadow_make(obj, id, size, gfp, ctor, ctor_data, true);
}

void *kg_shadow_get_or_alloc(void *obj, unsigned long id, size_t size, gfp_t gfp, kg_shadow_ctor_t ctor,
			     void *ctor_data)
{
	return kg_shadow_make(obj, id, size, gfp, ctor, ctor_data, false);
}

static void kg_shadow_drop(struct kg_shadow *sh, kg_shadow_dtor_t dtor)
{
	hash_del_rcu(&sh->node);
	if (dtor)
		dtor(sh->obj, sh->data);
	kfree_rcu(sh, rcu_head);
}

void kg_shadow_free(void *obj, unsigned long id, kg_shadow_dtor_t dtor)
{
	struct kg_store *store = READ_ONCE(kg_store);
	struct kg_shadow *sh;
	unsigned long flags;

	if (!store)
		return;
	spin_lock_irqsave(&store->lock, flags);
	sh = kg_shadow_find(store, obj, id);
	if (sh)
		kg_shadow_drop(sh, dtor);
	spin_unlock_irqrestore(&store->lock, flags);
}

void kg_shadow_free_all(unsigned long id, kg_shadow_dtor_t dtor)
{
	struct kg_store *store = READ_ONCE(kg_store);
	struct kg_shadow *sh;
	struct hlist_node *tmp;
	unsigned long flags;
	int bkt;

	if (!store)
		return;
	spin_lock_irqsave(&store->lock, flags);
	hash_for_each_safe(store->table, bkt, tmp, sh, node)
		if (sh->id == id)
			kg_shadow_drop(sh, dtor);
	spin_unlock_irqrestore(&store->lock, flags);
}

static struct kg_peer kg_self = {
	.share = kg_peer_share,
	.sites = kg_peer_sites,
	.replaced = kg_peer_replaced,
	.owner = THIS_MODULE,
	.site_owned = kg_peer_site_owned,
	.yield = kg_peer_yield,
	.take_back = kg_peer_take_back,
	.stacked_on = kg_peer_stacked_on,
	.states = kg_peer_states,
	.store = kg_peer_store,
};

/* ---- forcing --------------------------------------------------------------------------- */

/*
 * /sys/kernel/kgraft/<patch>/force: writing 1 during a transition moves every task and CPU
 * still behind to the goal without the stack check, as the livepatch core's `force` does. The
 * transition then completes at the next pass of the worker, like any other (a patching one puts
 * its direct calls in). It is unsafe: a task forced over may still be inside the code of the
 * universe it left, and may run old and new code mixed. What that code is decides what must
 * stay loaded:
 *
 *  - forcing towards the original code (unpatching, or a patching transition turned around):
 *    the tasks forced may still run this module's code, so the module keeps its reference on
 *    itself for good (kg_release_hold) and stays loaded until the next boot, as the livepatch
 *    core keeps the module of a patch whose removal was forced;
 *  - forcing a replace_all patch: the tasks forced may still run the code of the patches it
 *    replaces, whose modules are then held for good (kg_keep_replaced), as the core keeps the
 *    modules of the patches a forced replace_all patch replaced;
 *  - forcing a patching transition otherwise: the tasks forced may still run the original code
 *    (vmlinux's or a target module's, never this module's) or, stacked, the older kgraft patch's
 *    code, which stays while this patch is on it (it holds that patch's module, and that patch
 *    cannot be taken off first). This module is removable after a normal unpatching.
 *
 * kg_forced lasts until the transition ends or turns around: every pass of kg_migrate forces
 * again, so a task that forked from a task not yet forced follows too.
 */

/* Moves every task and CPU to the goal. Called with kg_mutex held, during a transition. */
static void kg_force_all(void)
{
	unsigned long flags, i;
	int cpu;

	raw_spin_lock_irqsave(&kg_slots_lock, flags);
	/* Tasks the table does not list take the default universe. */
	WRITE_ONCE(kg_default_u, kg_goal);
	if (kg_slots)
		for (i = 0; i < (1UL << kg_slot_bits); i++)
			if (kg_slots[i].task)
				WRITE_ONCE(kg_slots[i].u, kg_goal);
	raw_spin_unlock_irqrestore(&kg_slots_lock, flags);
	for_each_possible_cpu(cpu)
		WRITE_ONCE(per_cpu(kg_cpu_u, cpu), kg_goal);
}

/* A forced replace_all patch completes: the patches it replaced keep their modules for good. */
static void kg_keep_replaced(void)
{
	int i;

	for (i = 0; i < kg_nreplacing; i++) {
		__module_get(kg_replacing[i]->owner);
		pr_warn("kgraft: %s: the transition was forced: the module of %s, which it replaces, stays loaded until the next boot\n",
			kg_patch_name, kg_replacing[i]->name);
	}
}

static ssize_t force_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf, size_t count)
{
	bool on;
	int ret;

	ret = kstrtobool(buf, &on);
	if (ret)
		return ret;
	if (!on)
		return count;
	mutex_lock(&kg_mutex);
	if (!READ_ONCE(kg_moving)) {
		mutex_unlock(&kg_mutex);
		return -EINVAL;
	}
	pr_warn("kgraft: %s: forcing the remaining tasks and CPUs to the %s state, without the stack check\n",
		kg_patch_name, kg_goal ? "patched" : "unpatched");
	kg_forced = true;
	if (!kg_goal)
		kg_keep_self = true;
	kg_force_all();
	/* The worker completes the transition now rather than at its next pass. */
	mod_delayed_work(system_wq, &kg_poll_work, 0);
	mutex_unlock(&kg_mutex);
	return count;
}

/* ---- set-up ---------------------------------------------------------------------------- */

static int kg_find_lookup(void)
{
	struct kprobe kp = { .symbol_name = "kallsyms_lookup_name" };
	int ret = register_kprobe(&kp);

	if (ret < 0)
		return ret;
	kg_lookup_name = (void *)kp.addr;
	unregister_kprobe(&kp);
	return 0;
}

static void kg_find_tracepoint(struct tracepoint *tp, void *priv)
{
	if (!strcmp(tp->name, "sys_enter"))
		kg_tp_enter = tp;
	else if (!strcmp(tp->name, "sys_exit"))
		kg_tp_exit = tp;
	else if (!strcmp(tp->name, "sched_process_fork"))
		kg_tp_fork = tp;
}

#define KG_RESOLVE(var, sym)                                                                        \
	do {                                                                                        \
		var = (void *)kg_lookup_name(sym);                                                  \
		if (!var) {                                                                         \
			pr_err("kgraft: %s: the kernel has no %s\n", kg_patch_name, sym);            \
			return -ENOENT;                                                             \
		}                                                                                   \
	} while (0)

static int kg_kernel_functions(void)
{
	int ret = kg_find_lookup();

	if (ret) {
		pr_err("kgraft: %s: cannot find kallsyms_lookup_name with a kprobe (error %d)\n", kg_patch_name,
		       ret);
		return ret;
	}
	KG_RESOLVE(kg_size_offset, "kallsyms_lookup_size_offset");
	KG_RESOLVE(kg_stack_reliable, "stack_trace_save_tsk_reliable");
	KG_RESOLVE(kg_stack_save, "stack_trace_save_tsk");
	KG_RESOLVE(kg_task_call, "task_call_func");
	KG_RESOLVE(kg_wake_up_state, "wake_up_state");
	KG_RESOLVE(kg_ftrace_location, "ftrace_location");
	KG_RESOLVE(kg_module_kset, "module_kset");
	for_each_kernel_tracepoint(kg_find_tracepoint, NULL);
	if (!kg_tp_enter || !kg_tp_exit || !kg_tp_fork) {
		pr_err("kgraft: %s: the kernel lacks the sys_enter, sys_exit or sched_process_fork tracepoint\n",
		       kg_patch_name);
		return -ENOENT;
	}
	return 0;
}

/* ---- unexported symbols: the patch's own relocations ------------------------------------- */

/*
 * kgraftc moves every relocation against a symbol the kernel does not export out of the module
 * loader's sight into the section .kgraft.relocs (the format is kgraftc's linux/relocs.rs): the
 * head below, then one record per relocation, then the names. The loader fills in each record's
 * place, name and object through ordinary relocations; the engine finds the symbols itself, by
 * name and position in kallsyms as the livepatch core counts them, and writes the places:
 * vmlinux's before anything is hooked, a module's as that module comes (or at once, if it is
 * loaded already), again each time it comes back.
 */
/* kgraftc writes the records after this head. Not const: the count is read at run time. */
extern struct kg_relocs_head kgraft_relocs;
struct kg_relocs_head kgraft_relocs __section(KG_RELOCS_SECTION) __aligned(8) __used = {
	.magic = KG_RELOCS_MAGIC,
	.version = KG_RELOCS_VERSION,
	.record_size = sizeof(struct kg_reloc),
};

#ifdef KG_KALLSYMS_MODULE
static int (*kg_on_each_symbol)(int (*fn)(void *, const char *, struct module *, unsigned long), void *data);
#else
static int (*kg_on_each_symbol)(int (*fn)(void *, const char *, unsigned long), void *data);
#endif
static struct module *(*kg_find_module)(const char *name);
static void *(*kg_text_poke_copy)(void *addr, const void *opcode, size_t len);

static const struct kg_reloc *kg_relocs(void)
{
	const char *p = (const char *)&kgraft_relocs;

	/* The records lie past the head the compiler knows of. */
	OPTIMIZER_HIDE_VAR(p);
	return (const struct kg_reloc *)(p + sizeof(kgraft_relocs));
}

/* One symbol looked for, by name and position. */
struct kg_want {
	const char *name;
	unsigned long sympos; /* 0: the only one of the name; N: the Nth */
	unsigned long count; /* of the name, so far */
	unsigned long addr; /* of the one wanted */
};

struct kg_search {
	struct kg_want *want;
	int n;
};

static void kg_count_symbol(struct kg_search *s, const char *name, unsigned long addr)
{
	int i;

	for (i = 0; i < s->n; i++) {
		struct kg_want *w = &s->want[i];

		if (strcmp(w->name, name))
			continue;
		w->count++;
		if (w->count == (w->sympos ? w->sympos : 1))
			w->addr = addr;
	}
}

#ifdef KG_KALLSYMS_MODULE
static int kg_vmlinux_symbol(void *data, const char *name, struct module *mod, unsigned long addr)
{
	if (!mod)
		kg_count_symbol(data, name, addr);
	return 0;
}
#else
/* The walk covers vmlinux only. */
static int kg_vmlinux_symbol(void *data, const char *name, unsigned long addr)
{
	kg_count_symbol(data, name, addr);
	return 0;
}
#endif

/*
 * Counts the symbols of `w` in `object` (NULL: vmlinux), in kallsyms order: vmlinux's table, or
 * the module's own, as the livepatch core walks them. Returns false if the module is not loaded.
 */
static bool kg_walk(const char *object, struct kg_want *w, int n)
{
	struct kg_search s = { .want = w, .n = n };
	struct mod_kallsyms *ks;
	struct module *mod;
	unsigned int i;

	if (!object) {
		kg_on_each_symbol(kg_vmlinux_symbol, &s);
		return true;
	}
	preempt_disable();
	mod = kg_find_module(object);
	if (mod) {
		ks = rcu_dereference_sched(mod->kallsyms);
		for (i = 0; i < ks->num_symtab; i++) {
			const Elf_Sym *sym = &ks->symtab[i];

			if (sym->st_shndx != SHN_UNDEF)
				kg_count_symbol(&s, ks->strtab + sym->st_name, sym->st_value);
		}
	}
	preempt_enable();
	return mod;
}

/* Whether the walk found the one symbol `w` asks for; says why not in the kernel log. */
static int kg_want_found(const struct kg_want *w, const char *object)
{
	const char *obj = object ? object : "vmlinux";

	if (!w->count) {
		pr_err("kgraft: %s: symbol '%s' not found in %s\n", kg_patch_name, w->name, obj);
		return -ENOENT;
	}
	if (!w->sympos && w->count > 1) {
		pr_err("kgraft: %s: symbol '%s' is ambiguous in %s (%lu of that name) and has no position\n",
		       kg_patch_name, w->name, obj, w->count);
		return -EINVAL;
	}
	if (w->sympos > w->count) {
		pr_err("kgraft: %s: symbol position %lu of '%s' not found in %s (%lu of that name)\n", kg_patch_name,
		       w->sympos, w->name, obj, w->count);
		return -EINVAL;
	}
	return 0;
}

/* The symbol `name` at position `sympos` of `object` (NULL: vmlinux), or 0 (logged). */
static unsigned long kg_find_symbol(const char *object, const char *name, unsigned long sympos)
{
	struct kg_want w = { .name = name, .sympos = sympos };

	if (!kg_walk(object, &w, 1)) {
		pr_err("kgraft: %s: module %s is not loaded\n", kg_patch_name, object);
		return 0;
	}
	return kg_want_found(&w, object) ? 0 : w.addr;
}

/* The value a record's place gets for the symbol at `addr`, and its size; 0 or -ERANGE. */
static int kg_reloc_value(const struct kg_reloc *r, unsigned long addr, u64 *val, size_t *size)
{
	u64 v = addr + r->addend;

	*size = kg_reloc_width(r->type);
	switch (r->type) {
	case R_X86_64_64:
		break;
	case R_X86_64_PC64:
		v -= r->place;
		break;
	case R_X86_64_32:
		if (v != (u32)v)
			goto overflow;
		break;
	case R_X86_64_32S:
		if ((s64)v != (s32)v)
			goto overflow;
		break;
	case R_X86_64_PC32:
	case R_X86_64_PLT32:
		v -= r->place;
		if ((s64)v != (s32)v)
			goto overflow;
		break;
	default:
		return -ENOEXEC; /* kg_relocs_check refused it */
	}
	*val = v;
	return 0;
overflow:
	pr_err("kgraft: %s: relocation type %u against '%s' of %s overflows at %pS\n", kg_patch_name, r->type,
	       r->name, r->object, (void *)r->place);
	return -ERANGE;
}

/* More records than any patch has: a count past it is no table kgraftc wrote. */
#define KG_RELOCS_MAX (1u << 20)

/* Whether [addr, addr + len) lies inside this module's memory. */
static bool kg_in_module(unsigned long addr, unsigned long len)
{
	return len && within_module(addr, THIS_MODULE) && within_module(addr + len - 1, THIS_MODULE);
}

/*
 * Checks the table kgraftc wrote: its version, that its records lie in the module, and each
 * record's type, the bytes its place covers and its two strings.
 */
static int kg_relocs_check(void)
{
	const struct kg_reloc *r = kg_relocs();
	u32 i, n = READ_ONCE(kgraft_relocs.count);

	if (kgraft_relocs.magic != KG_RELOCS_MAGIC || kgraft_relocs.version != KG_RELOCS_VERSION ||
	    kgraft_relocs.record_size != sizeof(*r)) {
		pr_err("kgraft: %s: the relocation table is not of version %d: kgraftc and the engine disagree\n",
		       kg_patch_name, KG_RELOCS_VERSION);
		return -EINVAL;
	}
	if (n > KG_RELOCS_MAX || (n && !kg_in_module((unsigned long)r, n * sizeof(*r)))) {
		pr_err("kgraft: %s: the relocation table's %u records do not lie in the patch module\n", kg_patch_name,
		       n);
		return -EINVAL;
	}
	for (i = 0; i < n; i++) {
		unsigned long width = kg_reloc_width(r[i].type);

		if (!kg_in_module((unsigned long)r[i].name, 1) || !kg_in_module((unsigned long)r[i].object, 1)) {
			pr_err("kgraft: %s: relocation record %u names a string outside the patch module\n",
			       kg_patch_name, i);
			return -EINVAL;
		}
		if (!width) {
			pr_err("kgraft: %s: relocation type %u against '%s' is not one the engine applies\n",
			       kg_patch_name, r[i].type, r[i].name);
			return -ENOEXEC;
		}
		if (!kg_in_module(r[i].place, width)) {
			pr_err("kgraft: %s: a relocation against '%s' lies outside the patch module\n", kg_patch_name,
			       r[i].name);
			return -EINVAL;
		}
	}
	return 0;
}

/*
 * Resolves and writes the records of `object` ("vmlinux" or a module's name); sets `*absent` if
 * that module is not loaded. Every symbol is found and every value checked before anything is
 * written. Returns 0 or a negative errno, logged with the symbol and object.
 */
static int kg_relocs_apply(const char *object, bool *absent)
{
	const struct kg_reloc *r = kg_relocs();
	u32 i, n = READ_ONCE(kgraft_relocs.count);
	bool vmlinux = !strcmp(object, "vmlinux");
	struct kg_want *w = NULL;
	int *which = NULL;
	u64 *vals = NULL;
	int k, m = 0, ret = 0;

	*absent = false;
	for (i = 0; i < n && strcmp(r[i].object, object); i++)
		;
	if (i == n)
		return 0;
	w = kcalloc(n, sizeof(*w), GFP_KERNEL);
	which = kcalloc(n, sizeof(*which), GFP_KERNEL);
	vals = kcalloc(n, sizeof(*vals), GFP_KERNEL);
	if (!w || !which || !vals) {
		ret = -ENOMEM;
		goto out;
	}
	/* One search per name and position, however many places use it. */
	for (i = 0; i < n; i++) {
		which[i] = -1;
		if (strcmp(r[i].object, object))
			continue;
		for (k = 0; k < m; k++)
			if (w[k].sympos == r[i].sympos && !strcmp(w[k].name, r[i].name))
				break;
		if (k == m) {
			w[m].name = r[i].name;
			w[m].sympos = r[i].sympos;
			m++;
		}
		which[i] = k;
	}
	if (!kg_walk(vmlinux ? NULL : object, w, m)) {
		*absent = true;
		goto out;
	}
	for (k = 0; k < m && !ret; k++)
		ret = kg_want_found(&w[k], vmlinux ? NULL : object);
	for (i = 0; i < n && !ret; i++) {
		size_t size;

		if (which[i] >= 0)
			ret = kg_reloc_value(&r[i], w[which[i]].addr, &vals[i], &size);
	}
	for (i = 0; i < n && !ret; i++) {
		size_t size = kg_reloc_width(r[i].type);

		if (which[i] < 0)
			continue;
		/* x86 is little-endian: the low bytes of the value are the 32-bit field. */
		if (r[i].flags & KG_RELOC_WRITABLE)
			memcpy((void *)r[i].place, &vals[i], size);
		else
			kg_text_poke_copy((void *)r[i].place, &vals[i], size);
	}
	if (!ret)
		pr_info("kgraft: %s: symbols of %s resolved (%d)\n", kg_patch_name, object, m);
out:
	kfree(vals);
	kfree(which);
	kfree(w);
	if (ret)
		pr_err("kgraft: %s: cannot resolve the patch's symbols in %s (error %d)\n", kg_patch_name, object, ret);
	return ret;
}

/* The table's kernel functions, its check, and vmlinux's records: before anything is hooked. */
static int kg_relocs_prepare(void)
{
	bool absent;
	int ret;

	KG_RESOLVE(kg_on_each_symbol, "kallsyms_on_each_symbol");
	KG_RESOLVE(kg_find_module, "find_module");
	KG_RESOLVE(kg_text_poke_copy, "text_poke_copy");
	ret = kg_relocs_check();
	if (ret)
		return ret;
	return kg_relocs_apply("vmlinux", &absent);
}

/* The records of the modules loaded already; the module notifier does those that come later. */
static int kg_relocs_loaded_modules(void)
{
	const struct kg_reloc *r = kg_relocs();
	u32 i, j, n = READ_ONCE(kgraft_relocs.count);
	bool absent;
	int ret = 0;

	mutex_lock(&kg_mutex);
	for (i = 0; i < n && !ret; i++) {
		if (!strcmp(r[i].object, "vmlinux"))
			continue;
		for (j = 0; j < i && strcmp(r[j].object, r[i].object); j++)
			;
		if (j == i)
			ret = kg_relocs_apply(r[i].object, &absent);
	}
	mutex_unlock(&kg_mutex);
	return ret;
}

/*
 * Whether the module `name` is loaded (it has its directory under /sys/module); kgraft-rt asks
 * it too, for the callbacks at (un)patch time.
 */
bool kg_object_present(const char *name)
{
	struct kobject *kobj = kset_find_obj(*kg_module_kset, name);

	if (!kobj)
		return false;
	kobject_put(kobj);
	return true;
}

/*
 * Finds a function's code and fentry site; logs the function's name on failure. The name is
 * counted as the livepatch core counts it: without a position it must be unique in its object.
 */
static int kg_locate(struct kg_site *s)
{
	unsigned long off;

	s->old_addr = kg_find_symbol(s->object, s->name, s->sympos);
	if (!s->old_addr)
		return -ENOENT;
	if (!kg_size_offset(s->old_addr, &s->old_size, &off) || off) {
		pr_err("kgraft: %s: %s: no symbol size\n", kg_patch_name, s->name);
		return -EINVAL;
	}
	s->ip = kg_ftrace_location(s->old_addr);
	if (!s->ip) {
		pr_err("kgraft: %s: %s has no fentry site ftrace knows\n", kg_patch_name, s->name);
		return -EINVAL;
	}
	s->live = true;
	return 0;
}

/* Fills a site from its description; locates it unless its module is not loaded yet. */
static int kg_resolve(struct kg_site *s, const struct kg_func *f)
{
	unsigned long off;

	s->name = f->name;
	s->object = f->object;
	s->sympos = f->sympos;
	s->new_addr = f->new_fn;
	if (!kg_size_offset(s->new_addr, &s->new_size, &off))
		s->new_size = 1;
	s->direct_addr = f->direct;
	if (f->object && !kg_object_present(f->object)) {
		pr_info("kgraft: %s: module %s is not loaded: %s is patched when it loads\n", kg_patch_name, f->object,
			f->name);
		return 0;
	}
	return kg_locate(s);
}

/* Takes a module's functions off the engine, as it goes away. */
static void kg_unhook_module(const char *name)
{
	int i;

	for (i = 0; i < kg_nsites; i++) {
		struct kg_site *s = &kg_sites[i];

		if (!s->object || strcmp(s->object, name) || !s->live)
			continue;
		kg_check_off(s);
		kg_direct_off(s);
		s->live = false;
	}
}

/*
 * A module loads or goes while the patch is on: its functions are patched as it comes (a direct
 * call at once, or the reality check during a transition), unhooked as it goes, with the
 * callbacks of that object, as the livepatch core does it.
 */
static int kg_module_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct module *mod = data;
	int i, ret = 0;

	if (action != MODULE_STATE_COMING && action != MODULE_STATE_GOING)
		return NOTIFY_DONE;
	mutex_lock(&kg_mutex);
	if (action == MODULE_STATE_GOING && !strcmp(kg_unresolved, mod->name))
		kg_unresolved[0] = '\0';
	if (action == MODULE_STATE_COMING) {
		/*
		 * Before any of its functions is hooked; a failure refuses the module, unless the
		 * patch is off with no transition (forced off, say): then nothing of it can run for
		 * the module, which is let in, and the patch stays off while the module is here.
		 */
		bool absent;

		ret = kg_relocs_apply(mod->name, &absent);
		if (ret && !kg_enabled && !kg_moving) {
			pr_warn("kgraft: %s: the symbols it takes from %s cannot be resolved (error %d); the patch is off, so the module loads, and the patch cannot be enabled while it is loaded\n",
				kg_patch_name, mod->name, ret);
			strscpy(kg_unresolved, mod->name, sizeof(kg_unresolved));
			ret = 0;
		} else if (!ret && !strcmp(kg_unresolved, mod->name)) {
			kg_unresolved[0] = '\0';
		}
		if (ret)
			goto out;
	}
	if (!kg_enabled || !kgraft_engine_has_object(mod->name))
		goto out;
	if (action == MODULE_STATE_GOING) {
		if (!kg_moving)
			kgraft_engine_object_event(mod->name, KG_PRE_UNPATCH, MODULE_STATE_GOING);
		kg_unhook_module(mod->name);
		kgraft_engine_object_event(mod->name, KG_POST_UNPATCH, MODULE_STATE_GOING);
		goto out;
	}
	ret = kgraft_engine_object_event(mod->name, KG_PRE_PATCH, MODULE_STATE_COMING);
	if (ret)
		goto out;
	for (i = 0; i < kg_nsites && !ret; i++) {
		struct kg_site *s = &kg_sites[i];

		if (!s->object || strcmp(s->object, mod->name) || s->live)
			continue;
		ret = kg_locate(s);
		if (!ret)
			/* None of the module's code has run: in a transition it decides like the rest. */
			ret = kg_moving ? kg_check_on(s) : kg_direct_on(s);
		if (ret) {
			s->live = false;
			pr_err("kgraft: %s: cannot patch %s in module %s as it loads (error %d)\n", kg_patch_name,
			       s->name, mod->name, ret);
		}
	}
	if (ret) {
		kg_unhook_module(mod->name);
		kgraft_engine_object_event(mod->name, KG_POST_UNPATCH, MODULE_STATE_COMING);
	} else if (!kg_moving) {
		kgraft_engine_object_event(mod->name, KG_POST_PATCH, MODULE_STATE_COMING);
	}
out:
	mutex_unlock(&kg_mutex);
	return notifier_from_errno(ret);
}

/* The module loader enables a coming module's ftrace records before it calls the notifiers. */
static struct notifier_block kg_module_nb = {
	.notifier_call = kg_module_notify,
};

/* Lets go of the patches this one is stacked on, and of those it was to replace. */
static void kg_put_belows(void)
{
	int i;

	for (i = 0; i < kg_nsites; i++) {
		if (kg_sites[i].below)
			module_put(kg_sites[i].below->owner);
		kg_sites[i].below = NULL;
		kg_sites[i].below_addr = 0;
		kg_sites[i].below_size = 0;
	}
	kg_peers_put(kg_replacing, kg_nreplacing);
	kg_nreplacing = 0;
}

static void kg_free_nop_names(void)
{
	int i;

	for (i = 0; i < kg_nsites; i++) {
		kfree(kg_sites[i].nop_name);
		kg_sites[i].nop_name = NULL;
	}
}

/*
 * replace_all: a site for every function an older patch sends to its code and this one does not
 * change; the transition restores the original there. The older patches are held until they are
 * replaced.
 */
static int kg_add_nops(void)
{
	/* Not on the stack: kernel stacks are small. */
	unsigned long *ips = kmalloc_array(KG_MAX_NOPS, sizeof(*ips), GFP_KERNEL);
	int p, k, m, ret = 0;

	if (!ips)
		return -ENOMEM;
	kg_nreplacing = kg_peers_get(kg_replacing);
	for (p = 0; p < kg_nreplacing && !ret; p++) {
		m = kg_replacing[p]->sites(ips, KG_MAX_NOPS);
		for (k = 0; k < m && !ret; k++) {
			struct kg_site *s;
			unsigned long size, off;

			if (kg_site_at(ips[k]))
				continue;
			if (kg_nsites == kg_capacity || !kg_size_offset(ips[k], &size, &off)) {
				ret = -ENOSPC;
				break;
			}
			s = &kg_sites[kg_nsites];
			s->nop_name = kasprintf(GFP_KERNEL, "%ps", (void *)(ips[k] - off));
			if (!s->nop_name) {
				ret = -ENOMEM;
				break;
			}
			kg_nsites++;
			s->name = s->nop_name;
			s->nop = true;
			s->ip = ips[k];
			s->old_addr = ips[k] - off;
			s->old_size = size;
			s->live = true;
			ret = kg_find_below(s);
		}
	}
	kfree(ips);
	if (ret)
		pr_err("kgraft: %s: cannot take over the functions of the patches it replaces (error %d)\n",
		       kg_patch_name, ret);
	return ret;
}

/* replace_all, complete: the older patches are off, and this one stands on nothing. */
static void kg_finish_replacing(void)
{
	int i;

	if (!kg_replace_all)
		return;
	if (kg_forced)
		kg_keep_replaced();
	for (i = 0; i < kg_nreplacing; i++)
		kg_replacing[i]->replaced(kg_patch_name);
	for (i = 0; i < kg_nsites; i++)
		if (kg_sites[i].nop)
			kg_sites[i].live = false;
	kg_put_belows();
}

/*
 * Gets the engine ready for `funcs`: the kernel's functions, each target, the sysfs directory.
 * Nothing changes in the kernel yet. Returns 0 or a negative errno (and then holds nothing).
 */
int kg_prepare(const char *patch, const struct kg_func *funcs, int n, bool replace_all, struct kg_state *states,
	       int nstates)
{
	int i, ret, cpu;

	kg_patch_name = patch;
	INIT_DELAYED_WORK(&kg_poll_work, kg_poll_fn);
	for_each_possible_cpu(cpu)
		INIT_WORK(per_cpu_ptr(&kg_cpu_work, cpu), kg_cpu_work_fn);
	ret = kg_kernel_functions();
	if (ret)
		return ret;
	ret = kg_relocs_prepare();
	if (ret)
		return ret;
	kg_capacity = n + (replace_all ? KG_MAX_NOPS : 0);
	kg_sites = kcalloc(kg_capacity ? kg_capacity : 1, sizeof(*kg_sites), GFP_KERNEL);
	if (!kg_sites)
		return -ENOMEM;
	kg_nsites = n;
	kg_replace_all = replace_all;
	kg_states = states;
	kg_nstates = nstates;
	for (i = 0; i < n; i++) {
		ret = kg_resolve(&kg_sites[i], &funcs[i]);
		if (ret)
			goto fail;
	}
	ret = register_module_notifier(&kg_module_nb);
	if (ret)
		goto fail;
	/* After the notifier is on: a module that comes now is the notifier's. */
	ret = kg_relocs_loaded_modules();
	if (ret)
		goto fail_notifier;
	kg_self.name = kg_patch_name;
	kg_kobj = kg_patch_dir();
	if (!kg_kobj) {
		ret = -ENOMEM;
		goto fail_notifier;
	}
	ret = sysfs_create_group(kg_kobj, &kg_group);
	if (ret)
		goto fail_kobj;
	ret = kg_states_compatible();
	if (!ret)
		ret = kg_store_attach();
	if (ret)
		goto fail_kobj;
	for (i = 0; i < n && !ret; i++)
		if (kg_sites[i].live)
			ret = kg_find_below(&kg_sites[i]);
	if (!ret && replace_all)
		ret = kg_add_nops();
	if (ret)
		goto fail_kobj;
	return 0;
fail_kobj:
	kg_put_belows();
	/* The directory goes first: removing it waits for its readers (functions_show reads the names). */
	kobject_put(kg_kobj);
	kg_kobj = NULL;
	kg_free_nop_names();
	kg_store_detach();
	kset_put(kg_registry);
	kg_registry = NULL;
fail_notifier:
	unregister_module_notifier(&kg_module_nb);
fail:
	kfree(kg_sites);
	kg_sites = NULL;
	kg_nsites = 0;
	kg_states = NULL;
	kg_nstates = 0;
	return ret;
}

/* Undoes kg_prepare; every transition has ended and no site is changed. */
void kg_unprepare(void)
{
	kg_put_belows();
	/*
	 * The directory goes before the names and sites its files show: removing it waits for
	 * the readers in functions_show, and no new one starts.
	 */
	if (kg_kobj) {
		kobject_put(kg_kobj);
		kg_kobj = NULL;
		kset_put(kg_registry);
		kg_registry = NULL;
	}
	kg_free_nop_names();
	kg_store_detach();
	unregister_module_notifier(&kg_module_nb);
	cancel_delayed_work_sync(&kg_poll_work);
	kfree(kg_sites);
	kg_sites = NULL;
	kg_nsites = 0;
	kg_states = NULL;
	kg_nstates = 0;
}

/* The engine's lock, which the poll and the sysfs writes take too. */
void kg_lock(void)
{
	mutex_lock(&kg_mutex);
}

void kg_unlock(void)
{
	mutex_unlock(&kg_mutex);
}
