// SPDX-License-Identifier: GPL-2.0-only
/*
 * kgt: the user-space helper of the kernel test run (built static, runs in the initramfs).
 *
 *   kgt now                 prints CLOCK_MONOTONIC in nanoseconds
 *   kgt wait NAME T0        waits until NAME's `transition` file reads 0 and prints
 *                           "KGRAFT-TIME NAME <ms since T0>"; exit 1 after 120 s
 *   kgt gone NAME           waits until the patch NAME is off: its livepatch directory gone,
 *                           or (kgraft engine) `enabled` and `transition` read 0; exit 1
 *                           after 60 s
 *
 * A patch's files are in /sys/kernel/livepatch/NAME (the livepatch core) or
 * /sys/kernel/kgraft/NAME (kgraft's own engine).
 *   kgt hammer FILE STOP    reads FILE (one open/read/close per call) until the file STOP
 *                           exists, then prints "calls=N mismatches=M" (a read starting '0')
 *   kgt settz MINUTES       sets the kernel's time zone (settimeofday without a time) to
 *                           MINUTES west of UTC; prints "ok" or the error's name
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void nap(void)
{
	struct timespec ts = { 0, 1000000 };

	nanosleep(&ts, NULL);
}

/* Whether NAME is applied by kgraft's own engine. */
static int kgraft_engine(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "/sys/kernel/kgraft/%s", name);
	return access(path, F_OK) == 0;
}

/* The first byte of a sysfs file, or 0 when it cannot be read. */
static char first_byte(const char *path)
{
	char buf[8];
	int fd = open(path, O_RDONLY);
	ssize_t n;

	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	return n > 0 ? buf[0] : 0;
}

static int wait_transition(const char *name, long long t0)
{
	char path[256], buf[8];
	long long deadline = now_ns() + 120LL * 1000000000LL;

	if (kgraft_engine(name))
		snprintf(path, sizeof(path), "/sys/kernel/kgraft/%s/transition", name);
	else
		snprintf(path, sizeof(path), "/sys/kernel/livepatch/%s/transition", name);
	while (now_ns() < deadline) {
		int fd = open(path, O_RDONLY);

		if (fd >= 0) {
			ssize_t n = read(fd, buf, sizeof(buf) - 1);

			close(fd);
			if (n > 0 && buf[0] == '0') {
				printf("KGRAFT-TIME %s %.1f\n", name, (now_ns() - t0) / 1e6);
				return 0;
			}
		}
		nap();
	}
	printf("kgt: %s: transition did not end within 120 s\n", name);
	return 1;
}

static int wait_gone(const char *name)
{
	char path[256];
	long long deadline = now_ns() + 60LL * 1000000000LL;

	if (kgraft_engine(name)) {
		char enabled[256], transition[256];

		snprintf(enabled, sizeof(enabled), "/sys/kernel/kgraft/%s/enabled", name);
		snprintf(transition, sizeof(transition), "/sys/kernel/kgraft/%s/transition", name);
		while (now_ns() < deadline) {
			if (first_byte(enabled) != '1' && first_byte(transition) != '1')
				return 0;
			nap();
		}
		printf("kgt: %s: still enabled after 60 s\n", name);
		return 1;
	}
	snprintf(path, sizeof(path), "/sys/kernel/livepatch/%s", name);
	while (now_ns() < deadline) {
		if (access(path, F_OK) != 0)
			return 0;
		nap();
	}
	printf("kgt: %s: still registered after 60 s\n", name);
	return 1;
}

static int hammer(const char *file, const char *stop)
{
	unsigned long calls = 0, mismatches = 0, failures = 0;
	char buf[16];

	for (;;) {
		int fd = open(file, O_RDONLY);

		if (fd < 0 || read(fd, buf, sizeof(buf)) <= 0)
			failures++;
		else if (buf[0] == '0')
			mismatches++;
		if (fd >= 0)
			close(fd);
		calls++;
		if ((calls & 255) == 0 && access(stop, F_OK) == 0)
			break;
	}
	printf("calls=%lu mismatches=%lu failures=%lu\n", calls, mismatches, failures);
	return failures != 0;
}

static int settz(int minutes_west)
{
	struct timezone tz = { .tz_minuteswest = minutes_west, .tz_dsttime = 0 };

	if (settimeofday(NULL, &tz) == 0) {
		printf("ok\n");
		return 0;
	}
	printf("%s\n", errno == EINVAL ? "EINVAL" : strerror(errno));
	return 1;
}

int main(int argc, char **argv)
{
	if (argc == 2 && !strcmp(argv[1], "now")) {
		printf("%lld\n", now_ns());
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "wait"))
		return wait_transition(argv[2], atoll(argv[3]));
	if (argc == 3 && !strcmp(argv[1], "gone"))
		return wait_gone(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "hammer"))
		return hammer(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "settz"))
		return settz(atoi(argv[2]));
	fprintf(stderr, "usage: kgt now | wait NAME T0 | gone NAME | hammer FILE STOP | settz MINUTES\n");
	return 2;
}
