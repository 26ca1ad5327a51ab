/*
 * The user-mode host's kernel interface, for C bodies of patches and for host.c itself.
 *
 * kgraftc compiles the C bodies of a patch built for the host with this directory on the
 * include path. The host models a small part of the kernel: the declarations here have the
 * kernel's names and signatures, and the headers under linux/ include this one, so a C body
 * that includes <linux/seq_file.h> builds for the host and for a real kernel alike.
 */
#ifndef KGRAFT_HOST_H
#define KGRAFT_HOST_H

#include <stddef.h>
#include <stdint.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;

/* A small seq_file: the text a "read" syscall returns. */
struct seq_file {
	char *buf;
	size_t size;
	size_t count;
};

void seq_puts(struct seq_file *m, const char *s);
void seq_printf(struct seq_file *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The log; the level prefixes are the kernel's. */
int _printk(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
#define KERN_SOH "\001"
#define KERN_ERR KERN_SOH "3"
#define KERN_WARNING KERN_SOH "4"
#define KERN_INFO KERN_SOH "6"
#define printk(fmt, ...) _printk(fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...) _printk(KERN_INFO fmt, ##__VA_ARGS__)

/* The command line the host "booted" with. */
extern char *saved_command_line;
int cmdline_proc_show(struct seq_file *m, void *v);

/* The built-in module kgraft_testmod. */
struct kgt_dev {
	u64 id;
	char name[32];
};

extern struct kgt_dev kgt_the_dev;
void kgt_describe(struct kgt_dev *dev, struct seq_file *m);
u64 kgt_encode(u64 x);
u64 kgt_decode(u64 y);

#endif
