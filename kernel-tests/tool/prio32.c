// SPDX-License-Identifier: GPL-2.0-only
// A 32-bit program without a C library: calls getpriority through the ia32 entry (int $0x80)
// as getpriority(PRIO_PROCESS, 3) and getpriority(PRIO_PROCESS, -1), and prints the two raw
// results, so the test sees how the entry unpacked `who` (a signed int) from ecx.

static long sys3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
	return ret;
}

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
	p = decimal(p, sys3(96, 0, -1, 0)); /* __NR_getpriority on i386 */
	*--p = ' ';
	p = decimal(p, sys3(96, 0, 3, 0));
	sys3(4, 1, (long)p, end - p); /* write(1, p, n) */
	sys3(1, 0, 0, 0); /* exit(0) */
	for (;;)
		;
}
