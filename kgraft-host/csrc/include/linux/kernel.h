/* The host's stand-in for the kernel's <linux/kernel.h>: see kgraft_host.h. */
#include "../kgraft_host.h"
