//! `kgraft_contract.h`, the C side of `kgraft_rt::contract`: written beside the kgraft engine's
//! `engine.c`, which includes it, so that the relocation table, the function record, the
//! callback kinds and the errno values are defined once, in Rust. Each struct member's offset
//! and each struct's size is asserted against the Rust definition, and each kernel constant
//! the Rust side spells as a number (relocation types, errno values) against the kernel's own
//! (module states are the layout file's).

use std::fmt::Write as _;

use kgraft_rt::contract as c;

/// The header's file name.
pub(crate) const FILE: &str = "kgraft_contract.h";

/// The header's text.
pub(crate) fn header() -> String {
    let mut h = String::from(
        "/* Written by kgraftc from kgraft-rt's contract.rs: what engine.c shares with the Rust side. */\n\
         #ifndef KGRAFT_CONTRACT_H\n#define KGRAFT_CONTRACT_H\n\n\
         #include <linux/build_bug.h>\n#include <linux/elf.h>\n#include <linux/errno.h>\n\
         #include <linux/module.h>\n#include <linux/stddef.h>\n#include <linux/types.h>\n\n",
    );
    let _ = writeln!(h, "#define KG_RELOCS_SECTION \"{}\"", c::RELOCS_SECTION);
    let _ = writeln!(h, "#define KG_RELOCS_MAGIC {:#x}U", c::RELOCS_MAGIC);
    let _ = writeln!(h, "#define KG_RELOCS_VERSION {}", c::RELOCS_VERSION);
    let _ = writeln!(h, "#define KG_RELOC_WRITABLE {:#x}U\n", c::RELOC_WRITABLE);
    for s in c::C_STRUCTS {
        let _ = writeln!(h, "struct {} {{", s.name);
        for (decl, _) in s.members {
            let _ = writeln!(h, "\t{decl};");
        }
        h.push_str("};\n");
        for (decl, offset) in s.members {
            let member = decl.rsplit([' ', '*']).next().unwrap_or(decl);
            let _ = writeln!(
                h,
                "static_assert(offsetof(struct {0}, {member}) == {offset}, \"{0}.{member}: kgraft-rt's contract.rs\");",
                s.name
            );
        }
        let _ = writeln!(
            h,
            "static_assert(sizeof(struct {0}) == {1}, \"{0}: kgraft-rt's contract.rs\");\n",
            s.name, s.size
        );
    }
    h.push_str("/* The relocation types the engine applies: the bytes a place covers, 0 for any other. */\n");
    h.push_str("static inline unsigned int kg_reloc_width(u32 type)\n{\n\tswitch (type) {\n");
    for (_, name, width) in c::RELOC_TYPES {
        let _ = writeln!(h, "\tcase {name}:\n\t\treturn {width};");
    }
    h.push_str("\tdefault:\n\t\treturn 0;\n\t}\n}\n");
    for (value, name, _) in c::RELOC_TYPES {
        let _ = writeln!(h, "static_assert({name} == {value}, \"{name}: kgraft-rt's contract.rs\");");
    }
    h.push_str("\n/* The callback kinds of kgraft_engine_object_event. */\nenum {\n");
    for kind in c::CallbackKind::ALL {
        let _ = writeln!(h, "\t{} = {},", kind.c_name(), kind as i32);
    }
    h.push_str("};\n");
    for (value, name) in c::errno::ALL {
        let _ = writeln!(h, "static_assert({name} == {value}, \"{name}: kgraft-rt's contract.rs\");");
    }
    h.push_str("\n#endif\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_defines_and_asserts_every_fact_of_the_contract() {
        let h = header();
        assert!(h.contains("#define KG_RELOCS_MAGIC 0x4c52474bU\n"), "{h}");
        assert!(h.contains("struct kg_reloc {\n\tunsigned long place;\n"), "{h}");
        assert!(h.contains("static_assert(offsetof(struct kg_reloc, type) == 32,"), "{h}");
        assert!(h.contains("static_assert(offsetof(struct kg_func, name) == 0,"), "{h}");
        assert!(h.contains("static_assert(sizeof(struct kg_func) == 40,"), "{h}");
        assert!(h.contains("\tcase R_X86_64_PLT32:\n\t\treturn 4;\n"), "{h}");
        assert!(h.contains("\tKG_POST_UNPATCH = 3,\n"), "{h}");
        assert!(h.contains("static_assert(EINVAL == 22,"), "{h}");
        assert_eq!(h.matches("static_assert(").count(), 5 + 1 + 8 + 1 + 5 + 1 + 6 + 3);
    }
}
