//! BTF, as `btf-rs` parses it, turned into the compiler's [`Kernel`] model.

use btf_rs::{Btf, BtfType, Type};
use fallible_iterator::FallibleIterator;
use kgraft_lang::kernel::{Composite, EnumTy, Kernel, Member, Object, Proto, ProtoParam, Ty, TypeId};

/// Appends the types of `btf` (a base or a split section) to `kernel` and returns the object
/// its functions describe.
///
/// Ids of a base section keep their number; the ids of a split section, which continue the
/// base's, are moved to the end of `kernel.types` (`base_len` is the number of ids of the base,
/// `void` included).
pub(crate) fn append(btf: &Btf, kernel: &mut Kernel, base_len: u32, origin: &str) -> Result<Object, String> {
    let split = btf.split().is_some();
    let offset = kernel.types.len() as u32;
    let remap = |id: u32| -> TypeId { if split && id >= base_len { id - base_len + offset } else { id } };
    let name_of = |t: &dyn BtfType| -> Option<String> { btf.resolve_name(t).ok().filter(|n| !n.is_empty()) };
    let mut object = Object { has_btf: true, origin: origin.to_owned(), ..Object::default() };
    // Only this section's own types: a split section's iterator would not walk the base.
    let section = btf.split().unwrap_or_else(|| btf.base());
    let (first, _) = section.type_id_range();
    let mut iter = section.type_iter();
    if !split {
        // Id 0 is `void`, whether or not the section's iterator yields it.
        if first > 1 {
            return Err(format!("{origin}: the BTF's type ids start at {first}"));
        }
        if first == 1 {
            kernel.types.push(Ty::Void);
        }
    }
    while let Some(t) = iter.next().map_err(|e| format!("{origin}: {e}"))? {
        let ty = match &t {
            Type::Void => Ty::Void,
            Type::Int(i) => Ty::Int {
                name: name_of(i).unwrap_or_else(|| "int".into()),
                size: i.size() as u32,
                signed: i.is_signed(),
                boolean: i.is_bool(),
            },
            Type::Float(f) => Ty::Float { size: f.size() as u32 },
            Type::Ptr(p) => Ty::Ptr(remap(p.get_type_id().unwrap_or(0))),
            Type::Array(a) => Ty::Array { elem: remap(a.get_type_id().unwrap_or(0)), len: a.len() as u32 },
            Type::Struct(s) | Type::Union(s) => {
                let members = s
                    .members
                    .iter()
                    .map(|m| Member {
                        name: name_of(m),
                        ty: remap(m.get_type_id().unwrap_or(0)),
                        bit_offset: m.bit_offset(),
                        bitfield_size: m.bitfield_size().unwrap_or(0),
                    })
                    .collect();
                let c = Composite { name: name_of(s), size: s.size() as u32, members };
                if matches!(t, Type::Union(_)) { Ty::Union(c) } else { Ty::Struct(c) }
            }
            Type::Enum(e) => Ty::Enum(EnumTy {
                name: name_of(e),
                size: e.size() as u32,
                signed: e.is_signed(),
                values: e
                    .members
                    .iter()
                    .filter_map(|m| {
                        let v = if e.is_signed() { i64::from(m.val() as i32) } else { i64::from(m.val()) };
                        Some((name_of(m)?, v))
                    })
                    .collect(),
            }),
            Type::Enum64(e) => Ty::Enum(EnumTy {
                name: name_of(e),
                size: e.size() as u32,
                signed: e.is_signed(),
                values: e.members.iter().filter_map(|m| Some((name_of(m)?, m.val() as i64))).collect(),
            }),
            Type::Fwd(f) => Ty::Fwd { name: name_of(f).unwrap_or_default(), union: f.is_union() },
            Type::Typedef(td) => {
                Ty::Typedef { name: name_of(td).unwrap_or_default(), ty: remap(td.get_type_id().unwrap_or(0)) }
            }
            Type::Const(q) => Ty::Const(remap(q.get_type_id().unwrap_or(0))),
            Type::Volatile(q) | Type::Restrict(q) => Ty::Qualified(remap(q.get_type_id().unwrap_or(0))),
            Type::TypeTag(q) => Ty::Qualified(remap(q.get_type_id().unwrap_or(0))),
            Type::FuncProto(p) => {
                let variadic = p.parameters.last().is_some_and(|q| q.is_variadic());
                let params = p
                    .parameters
                    .iter()
                    .filter(|q| !q.is_variadic())
                    .map(|q| ProtoParam { name: name_of(q), ty: remap(q.get_type_id().unwrap_or(0)) })
                    .collect();
                Ty::Proto(Proto { ret: remap(p.return_type_id()), params, variadic })
            }
            Type::Func(f) => {
                if let (Some(name), Some(proto)) = (name_of(f), f.get_type_id()) {
                    let protos = object.functions.entry(name).or_default();
                    let proto = remap(proto);
                    if !protos.contains(&proto) {
                        protos.push(proto);
                    }
                }
                Ty::Void
            }
            _ => Ty::Void,
        };
        kernel.types.push(ty);
    }
    object.type_ids = Some((if split { offset } else { 0 }, kernel.types.len() as TypeId));
    Ok(object)
}
