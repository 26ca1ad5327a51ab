/* The host's stand-in for <linux/moduleparam.h>: the host loads a patch without parameters, so
 * each parameter keeps its default (see the language reference). */
#ifndef KGRAFT_HOST_LINUX_MODULEPARAM_H
#define KGRAFT_HOST_LINUX_MODULEPARAM_H
#define module_param(name, type, perm) _Static_assert(1, #name)
#define MODULE_PARM_DESC(name, desc) _Static_assert(1, desc)
#endif
