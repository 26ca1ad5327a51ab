// SPDX-License-Identifier: GPL-2.0-only
/*
 * The second `kgt_twin` of kgraft_testmod: a static function of the same name as one in
 * kgt_main.c, linked after it, so that kallsyms lists it second (symbol position 2) in the
 * module. /proc/kgraft_twins calls both.
 */
#include <linux/compiler.h>
#include <linux/types.h>

u64 kgt_twin_second(u64 x);

static noinline __attribute__((noipa, used)) u64 kgt_twin(u64 x)
{
	return x + 2;
}

noinline u64 kgt_twin_second(u64 x)
{
	return kgt_twin(x);
}
