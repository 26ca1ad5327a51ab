//! The catalogue of diagnostic codes, with the long explanations `kgraftc explain` prints.

/// One entry of the catalogue.
#[derive(Clone, Copy, Debug)]
pub struct CodeInfo {
    /// The stable code, `E0001`...
    pub code: &'static str,
    /// A one-line meaning.
    pub title: &'static str,
    /// The long explanation, with an example where one helps.
    pub explanation: &'static str,
}

macro_rules! catalogue {
    ($($code:ident $title:literal $text:literal)*) => {
        $(pub const $code: &str = stringify!($code);)*
        /// Every code the compiler emits, in order.
        pub const CODES: &[CodeInfo] = &[
            $(CodeInfo { code: stringify!($code), title: $title, explanation: $text },)*
        ];
    };
}

catalogue! {
    E0001 "syntax error"
"The source does not follow the grammar of the patch language at this point. The message says
what the parser expected. A file holds one `patch NAME { ... }` header and any number of
`extern { ... }`, `shadow TYPE { ... }`, `replace fn ...` (with a Rust body, or `in C` and a C
body), `module \"name\" { ... }`, `on CALLBACK { ... }`, `static`, helper `fn` and `c { ... }`
items. After a syntax error the parser skips to the next line that starts
an item, so later errors are still reported."

    E0002 "no `patch` header"
"Every patch source needs exactly one header that names the patch:

    patch cmdline_banner {
        description: \"Print a banner before the kernel command line\",
    }"

    E0003 "more than one `patch` header"
"A source describes one live patch, so it has exactly one `patch NAME { ... }` header. Merge
the headers, or split the source into two patches."

    E0004 "unknown header key"
"The header accepts the keys `description` (a string, required), `kernel` (a release glob such
as \"6.1.0-*-amd64\", optional), `replace_all` (a boolean, or a module parameter's name,
optional) and `engine` (\"klp\" or \"kgraft\", optional)."

    E0005 "header key given twice"
"Each header key may appear once. Remove one of the two entries."

    E0006 "header value of the wrong kind"
"`description` and `kernel` take strings in double quotes; `replace_all` takes `true`,
`false`, or the name of a module parameter that decides it at load (see E0070); `engine` takes
\"klp\" (the kernel's livepatch core, the default) or \"kgraft\" (kgraft's own engine)."

    E0007 "patch name with characters other than `a-z`, `0-9` and `_`"
"The patch name becomes the kernel module's name and the directory name under
/sys/kernel/livepatch, so it may only hold lower-case ASCII letters, digits and underscores."

    E0008 "patch name too long"
"The patch name becomes the kernel module's name, which the kernel limits to 55 bytes
(MODULE_NAME_LEN is 56, with the terminating NUL)."

    E0009 "header without a `description`"
"Every patch carries a one-line description; it is shown to the administrator who loads the
patch and kept in the module's metadata:

    patch foo_fix {
        description: \"Bound the length in foo_write\",
    }"

    E0010 "bad kernel release glob"
"`kernel` is a glob over kernel releases (as printed by `uname -r`): letters, digits, `.`, `-`,
`_`, `+`, `~` and the wildcards `*` and `?`. It may not be empty."

    E0011 "one target replaced twice"
"A kernel function (one object, one name, one symbol position) can be replaced only once by a
patch: two replacements of it would race for the same patch site. Merge the two bodies, or give
each a different `#[sympos(N)]` if the name really occurs several times in the object."

    E0012 "variadic replacement"
"A replacement cannot be variadic (`...`): the replacement must take the arguments the original
was called with, and Rust functions that are not foreign cannot take a C variable argument
list. Replace the variadic function's callers instead, or a non-variadic function it calls."

    E0013 "not a type"
"Parameter types, return types, `static` types and shadow field types are Rust types. The C
types (`c_int`, `c_char`, `c_void`, `c_long`, ...) and the kernel's fixed-width aliases (`u64`,
`s32`, `size_t`, ...) are in scope; any other name is a kernel type, opaque to the patch and
usable behind a pointer (`*mut seq_file`)."

    E0014 "Rust syntax error"
"A body (of a replacement or a callback) or a shadow field's initial value is Rust code, parsed
by a Rust parser from the exact text of the source. The error points at the line and column of
the `.kgp` file where that parser stopped."

    E0015 "shadow field declared twice"
"Each field of a shadow declaration needs its own name: `shadow!(ptr.field)` picks the field
by name."

    E0016 "`shadow!` of a field that is not declared"
"`shadow!(ptr.field)` reaches a field declared in a `shadow TYPE { field: T = init, ... }`
block for the type `ptr` points to. Declare the field there, or fix its name."

    E0017 "`shadow!` of a type without shadow data"
"`shadow!(ptr.field)` needs a `shadow TYPE { ... }` declaration for the type `ptr` points to.
Shadow data is attached per type: add the declaration, or use a pointer of the declared type."

    E0018 "unknown callback"
"The callbacks are `on pre_patch` (runs before the patch is enabled; its body yields a `c_int`,
0 to go on or a negative errno to refuse the patch), `on post_patch`, `on pre_unpatch` and
`on post_unpatch` (their bodies yield `()`)."

    E0019 "callback given twice"
"Each callback kind may appear once per object: once at the top level (vmlinux), and once in
the `module` blocks of each module. Merge the two bodies."

    E0020 "patch does nothing"
"A live patch replaces kernel functions, runs callbacks (for vmlinux, or for a module in its
`module` block), registers modules (an empty `module \"name\" { }`), or, with `replace_all: true`,
takes every earlier patch off. A source that does none of these would build a module that does
nothing. Add a replacement or a callback."

    E0021 "replacement with the name of an `extern`"
"A `replace fn NAME` and an `extern { fn NAME ...; }` would both be called NAME in the generated
crate, and a body calling NAME would call one while its author meant the other. A replacement
that needs the original calls it through the kernel's other functions, not by name."

    E0022 "extern symbol declared twice"
"Each kernel symbol is declared once across all `extern` blocks."

    E0023 "bad module name"
"`module \"name\"` names a loadable kernel module: 1 to 55 bytes of ASCII letters, digits, `_`
and `-`. Functions of vmlinux itself go outside any `module` block."

    E0024 "unknown or malformed attribute"
"A replacement accepts one attribute, `#[sympos(N)]`, with N a positive integer: the position
of the symbol among the local symbols of the same name in the object (see
/proc/kallsyms). Without it the name must be unique in its object."

    E0025 "`...` is not the last parameter"
"A variadic `extern` function lists its named parameters first and `...` last, as in C:

    extern { fn _printk(fmt: *const c_char, ...) -> c_int; }"

    E0026 "source is not UTF-8"
"Patch sources are UTF-8 text. The file holds bytes that are not valid UTF-8 at the place shown;
it may be a binary file, or text in another encoding."

    E0027 "source too large"
"A patch source may be at most 8 MiB. Live patches are small by nature; split the patch."

    E0028 "nesting too deep"
"Brackets in the source nest deeper than 128 levels, or a statement chains more than 4000 tokens
between `;` and `,` (counting those of the brackets around it: thousands of prefix operators,
pointer types or `else if`s). The compiler refuses such input rather than risk running out of
stack; no reviewable patch comes near these limits."

    E0029 "reserved name"
"Names in the source become Rust names in the generated crate, so Rust keywords (`type`,
`match`, ...) cannot be used, and names starting with `__kgraft` are reserved for the generated
code."

    E0030 "two shadow blocks with one id"
"Each `shadow TYPE (...) { ... }` block is one klp shadow variable: its fields are allocated
together under the block's id. Two blocks of one patch cannot share an id, since the store would
hand out one allocation as two different layouts. Give each block its own `id = N`, or merge the
blocks. (A kernel type may have several blocks, each with its own id and fields, such as
livepatch-shadow-fix2's SV_LEAK and SV_COUNTER.)"

    E0031 "malformed `shadow!`"
"`shadow!`, `shadow_get!`, `shadow_alloc!` and `shadow_free!` take a pointer, a dot and a field
name: `shadow!(dev.reads)`, where `dev` is a variable, or `shadow!((expression).reads)` with the
pointer expression in parentheses; `shadow_alloc!` also takes `dev.reads = value`.
`shadow_free_all!` takes a type, a dot and a field name: `shadow_free_all!(kgt_dev.reads)`.
`shadow!` yields `&mut FieldType`; write `*shadow!(dev.reads) += 1`."

    E0032 "bad escape in a string"
"Strings in the header and module names accept the escapes `\\\\`, `\\\"`, `\\n`, `\\t` and
`\\r`. They may not hold a NUL character: they end up in C strings."

    E0033 "a type of a C body's signature has no C spelling"
"A replacement whose body is C (`replace fn f(...) -> T in C { ... }`) keeps its signature in
Rust spelling, and kgraftc writes the C function's prototype from it. It spells Rust's and the
prelude's primitive types as C does (`c_int` is `int`, `u64` is `unsigned long long`, `usize` is
`unsigned long`, `bool` is `_Bool`), a raw pointer to a primitive as a pointer to it
(`*const c_char` is `const char *`, `*mut c_void` is `void *`), and a raw pointer to any other
named type `T` as `struct T *`, or as `T *` when the name ends in `_t`, as the kernel's typedefs
do (`*mut atomic_t` is `atomic_t *`). Other types (references, arrays, tuples, function pointers,
paths with `::` or generics, a kernel type by value) have no such spelling: pass a pointer, or
`*mut c_void` and cast in C."

    E0034 "`static mut` in a patch"
"A patch's `static` data is shared by every CPU that runs the patched code, at the same time
and without any lock the language could see; a `static mut` would be written by several CPUs at
once with nothing to order the writes, and Rust makes every use of one `unsafe` for that reason.
Use an atomic (`static HITS: core::sync::atomic::AtomicU64 =
core::sync::atomic::AtomicU64::new(0);`, which needs no `mut`), or a
kernel lock around the data. `static mut` in an `extern { }` block is allowed: it declares the
kernel's own variable, whose locking the kernel defines."

    E0035 "helper function that cannot be lowered"
"A top-level `fn NAME(params) -> T { ... }` is a helper the Rust bodies, callbacks and other
helpers call. It is lowered to an `unsafe fn` of the generated crate, so it cannot be variadic,
and its name must differ from every `extern` symbol, `static` and Rust replacement of the patch
(a replacement without `#[sympos]` is named after the function it replaces)."

    E0050 "malformed shadow option"
"A shadow block takes options in parentheses after its type:

    shadow dummy (id = 0x1, drop = leak_dtor) { leak: *mut c_int = core::ptr::null_mut() }

- `id = N` (decimal or `0x` hexadecimal, below 2^64) is the klp shadow id the block's data
  lives under. Without it the id is a hash of the type and the fields, so only a patch with
  the very same block shares the data; with it, any patch that declares that id for that
  type reads and writes the same data (the declarations must agree on the layout).
- `keep`: the patch does not free the block's data when it is disabled, because another patch
  owns it (the patch it replaces, or one loaded beside it). Without `keep` the patch frees the
  data of the block on every object (with its destructor) when it is disabled.
- `drop = NAME` names a helper `fn NAME(obj: *mut TYPE, field1: T1, ...)` that runs whenever
  one object's data is freed, with the fields in declaration order, moved out of the data.

Each option may be given once."

    E0051 "shadow destructor that is not a helper"
"`drop = NAME` in a shadow block's options names a helper function of the patch, `fn NAME(...)`,
which takes the object (a pointer to the block's type) and then each field of the block, in
order. Declare the helper, or fix the name; its parameter count must be one more than the
number of fields."

    E0060 "malformed system state"
"A `state NAME (id = N, version = V);` item declares a system state of the livepatch core: `id`
is an integer from 1 up (decimal or `0x` hexadecimal), `version` an integer below 2^32 and 0 when
it is left out. Each option is given once; there are no others."

    E0061 "one state id declared twice"
"A patch declares each system state once. Two `state` items with one id would be two entries
of the patch's `klp_state` array that the livepatch core cannot tell apart."

    E0062 "a state or parameter name already in use"
"States and module parameters become names of the generated crate (a constant and a static),
which they share with helpers, `extern` symbols and statics. Rename one of them."

    E0063 "malformed system call replacement"
"`replace syscall NAME(args) -> c_long { ... }` replaces every x86-64 entry of the system call
`NAME`, which take at most six arguments, each in a register, and return a `long`. It cannot be
variadic and must say its return type."

    E0064 "no such system call in the target"
"With the target known, kgraftc looks for the system call's entries, `__x64_sys_NAME` and
`__ia32_sys_NAME`, among the kernel's functions, and replaces those that exist; here neither
does. The name is the one `SYSCALL_DEFINE` gives (`getpriority`, not `sys_getpriority`). The
user-mode host has no system call entries, so a `replace syscall` patch builds only for Linux."

    E0065 "a module parameter of a type it cannot have"
"A `param NAME: T = default;` becomes a `module_param` of the patch module, whose types are the
kernel's: `bool`, `c_int` (`int`), `c_uint` (`uint`), `c_long` (`long`), `c_ulong` (`ulong`),
`i16` (`short`), `u16` (`ushort`), `u8` (`byte`), with their aliases, and `*const c_char`
(`charp`, a string)."

    E0066 "a module parameter's default that is not a literal"
"The default of a module parameter is compiled into the module as the C variable's initial
value, so it is a literal of the parameter's type: an integer without a suffix (with `-` where
the type is signed) in the type's range, `true` or `false`, or a string literal without NUL."

    E0070 "`replace_all` names something that is not a flag parameter"
"`replace_all: NAME` in the header lets a module parameter decide, when the patch module loads,
whether the patch replaces every patch loaded before it (upstream's test modules do this with
`replace=1`). `NAME` must be a `param` item of the patch whose type is `bool` or an integer:

    param replace: c_int = 0;

    patch fix {
        description: \"...\",
        replace_all: replace,
    }"

    E0040 "no such module in the target kernel"
"A `module \"name\" { ... }` block names a module that the target release does not ship. kgraftc
lists the modules under /lib/modules/RELEASE; module names are spelled as `lsmod` shows them,
with `_` where the file name may have `-`. A module built outside the kernel's tree is named
with `--module FILE.ko`."

    E0041 "no function of this name to patch in the target kernel"
"The function is not in the target kernel's symbol table (read from a vmlinux with symbols, from
/proc/kallsyms, or by booting the release's image under qemu once), or, when no symbol table
could be read, not in its BTF. A function that is missing does not exist in that release, or it
was inlined into every caller: replace the callers instead."

    E0042 "the function has no fentry site"
"The symbol table has this function, but none of its copies starts with the fentry NOP that
kGraft turns into a jump: it is `notrace`, `noinstr` or in an init section. Replace the
functions that call it instead."

    E0043 "ambiguous or out-of-range symbol position"
"Several local functions of the target share this name, so the replacement must say which one
with `#[sympos(N)]` (N counts from 1, in the order of /proc/kallsyms); or the given N is larger
than the number of functions of that name; or `#[sympos(near = \"NAME\")]` names a symbol that
is missing or not unique in the target's kallsyms, or as near to two of them. A `near`
position is found again in each target's kallsyms, so it holds where the numbers differ."

    E0044 "the signature differs from the kernel's prototype"
"A replacement is called with the arguments the kernel's callers pass, and an extern is called
as the kernel defines it, so each must have the kernel's prototype: the same number of
parameters, and for each parameter and the return value the same kind (integer, pointer,
structure, floating point) and size. Where both sides name the type a pointer points to, the
names must agree. The note shows the kernel's C prototype, from its BTF:

    int cmdline_proc_show(struct seq_file *m, void *v)

is written

    replace fn cmdline_proc_show(m: *mut seq_file, v: *mut c_void) -> c_int { ... }"

    E0046 "the replaced function is also inlined elsewhere"
"With `--debuginfo VMLINUX` (a vmlinux with DWARF, such as Debian's
`linux-image-RELEASE-amd64-dbg`), kgraftc looks for the places where the compiler copied a
replaced function's body into its callers. Those callers never jump through the function's
entry, so they keep running the old code after the patch is applied. Replace each of them too,
with the fix applied to its inlined copy; this is how kGraft extends a patch's function list."

    E0047 "a type name that names different types"
"The patch names a kernel type (`bictcp`) that means different types where the patch uses it:
each object's code means its own definition first (a `module \"tcp_bic\"` block, tcp_bic's
`struct bictcp`), then vmlinux's, and the objects the patch uses the name in define it
differently (tcp_bic's is 24 bytes, vmlinux's tcp_cubic one 60); or one object's BTF holds two
different types of that name. kgraftc does not guess: a wrong guess writes the wrong field of a
live kernel. Use the name in one object's code, or patch the objects in separate patches."

    E0048 "a function the patch calls that the target kernel does not have"
"The linked module calls a function that is neither exported nor a function of the target's
vmlinux (or of a module the patch names): the load would fail. A static helper of a kernel
file that the kernel's compiler inlined everywhere has no symbol: copy its definition into the
`c { }` item (`kgraftc from-diff` does this, and `kgraftc check --ksrc` tells which helpers
those are). Otherwise the name is misspelt: the message names the closest function the kernel
has. The label points at the name's first use in the `.kgp`."

    E0045 "a type the target kernel does not have"
"A type named in the patch is not a struct, union, enum or typedef of the target kernel's BTF.
It stays opaque: pointers to it can be passed around, but it has no fields. Check the spelling;
types of a module are known only when the module's `.ko` has BTF."

    E0100 "from-diff: the fix changes no code"
"`kgraftc from-diff` compiled the translation unit before and after the fix, and every function
is the same code: the fix changes comments, moves lines (the `__LINE__` that WARN and BUG record
lives in tables, not in the code) or changes what this kernel's configuration leaves out.
There is nothing to patch, and no `.kgp` is written."

    E0101 "from-diff: the fix changes data the running kernel holds"
"The fix changes the initial value or the layout of data defined in the file: a table, a
structure's size, a variable's initialiser. A live patch replaces code; the kernel's copy of
the data stays as it was booted. New fields belong in `shadow` data attached to the objects that
need them, and a changed value can be set by a `post_patch` callback. Write that part of the
patch by hand."

    E0102 "from-diff: the fix changes `__init` or `__exit` code"
"Init code ran at boot and was freed; exit code runs only when a built-in object goes away. A
live patch cannot run either again. What the init code should have set up can be done in a
`post_patch` callback of a hand-written patch."

    E0103 "from-diff: a changed function the kernel cannot patch, with no patchable caller"
"The changed function has no ftrace site (it is `notrace`, `noinstr`, or a compiler clone such as
`foo.isra.0`), so kGraft cannot redirect it. Such a function is replaced through its callers in
the same translation unit; here there are none, or the function is global and its callers are
in other files. Fix a traceable caller instead."

    E0104 "from-diff: the fix exports a new symbol"
"The fix adds an `EXPORT_SYMBOL`. A live patch module cannot add to the kernel's exported
symbols for other modules to link against. Keep the new function inside the patch."

    E0105 "from-diff: a changed function whose source cannot be copied"
"The function's code changed, but its definition is written through a macro other than
`SYSCALL_DEFINEn` (`COMPAT_SYSCALL_DEFINEn`, `BPF_CALL_n`, ...) or is not in the file at all, so
it cannot become a C body of the patch. Write that replacement by hand (`replace fn` of the
entry the macro makes). A system call's `SYSCALL_DEFINEn` becomes a `replace syscall NAME(...)
in C` of its own."

    E0106 "from-diff: a prototype the patch language cannot spell"
"The replaced function takes or returns a structure by value, or is variadic; C bodies take
kernel types behind pointers. Write that replacement by hand."

    E0107 "from-diff: the generated patch is not the fix"
"After writing the `.kgp`, `kgraftc from-diff` compiles its C file as the patch module's C file
is compiled and compares each replacement with the fixed translation unit's function, references
named by symbol. A difference means the patch would not run the fixed kernel's code (a helper
the compiler treated differently, a macro that depends on the file's name), so the `.kgp` is not
written. The message names the first difference; `KGRAFT_KEEP_WORK=1` keeps the objects."

    E0108 "from-diff: a kernel symbol whose name other files share, and no telling which"
"The patch uses a static of the fixed file that the running kernel has, and other files define
symbols of the same name, so the kernel needs its position among them (`KGRAFT_SYMPOS`). The
position is found from the target's kallsyms: kallsyms is sorted by address and a file's
symbols lie together, so the occurrence among the file's own other symbols is the file's. Here
none, or more than one, occurrence has them around it. Find the address in the running kernel
(`/proc/kallsyms`, beside the file's other statics) and write the patch by hand with
`KGRAFT_SYMPOS(\"NAME\", N);`, N counted from 1 in kallsyms order."
}

/// Looks up a code (case-insensitive; `0001` and `E1` are accepted for `E0001`).
pub fn explain(code: &str) -> Option<&'static CodeInfo> {
    let code = code.trim();
    let digits = code.strip_prefix(['E', 'e']).unwrap_or(code);
    let number: u32 = digits.parse().ok()?;
    let wanted = format!("E{number:04}");
    CODES.iter().find(|c| c.code == wanted)
}
