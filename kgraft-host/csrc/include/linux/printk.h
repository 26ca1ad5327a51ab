/* The host's stand-in for the kernel's <linux/printk.h>: see kgraft_host.h. */
#include "../kgraft_host.h"
