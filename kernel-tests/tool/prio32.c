// SPDX-License-Identifier: GPL-2.0-only
// A program without a C library: calls getpriority(PRIO_PROCESS, 3) and
// getpriority(PRIO_PROCESS, -1) and prints the two raw results, so the test sees how the entry
// unpacked `who` (a signed int). Built with -m32 it enters through the ia32 entry (int $0x80),
// built for x86-64 through the 64-bit one (syscall).

#ifdef __x86_64__
#define NR_GETPRIORITY 140
#define NR_WRITE 1
#define NR_EXIT 60
static long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return ret;
}
#else
#define NR_GETPRIORITY 96
#define NR_WRITE 4
#define NR_EXIT 1
static long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}
#endif

static char *decimal(char *end, long v)
{
	unsigned long u = v < 0 ? -(unsigned long)v : (unsigned long)v;

	do {
		*--end = '0' + u % 10;
		u /= 10;
	} while (u);
	if (v < 0)
		*--end = '-';
	return end;
}

void _start(void)
{
	char buf[64];
	char *end = buf + sizeof(buf), *p = end;

	*--p = '\n';
	p = decimal(p, sys3(NR_GETPRIORITY, 0, -1, 0));
	*--p = ' ';
	p = decimal(p, sys3(NR_GETPRIORITY, 0, 3, 0));
	sys3(NR_WRITE, 1, (long)p, end - p);
	sys3(NR_EXIT, 0, 0, 0);
	for (;;)
		;
}
