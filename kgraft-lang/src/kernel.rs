//! What the compiler knows of the target kernel: its types, its functions and its modules.
//!
//! `kgraftc` fills a [`Kernel`] from the kernel's BTF, its symbol table and its fentry sites
//! (the reading is IO and lives in the command); the library only queries it, to check a patch
//! against the kernel it patches ([`crate::check_against`]) and to give bodies the kernel's types
//! by name ([`crate::lower_for`]).
//!
//! The type graph follows BTF closely: a type is named by its [`TypeId`], `0` is `void`, and
//! qualifiers are kept only as links so that a walk can step over them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

/// The index of a type in [`Kernel::types`]; `0` is `void`.
pub type TypeId = u32;

/// One type of the kernel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Ty {
    /// `void`, and the kinds of BTF entry that are not the type of a value (functions,
    /// variables, sections, tags).
    Void,
    /// An integer, `_Bool` or `char`.
    Int {
        /// The C name (`unsigned int`).
        name: String,
        /// The size in bytes.
        size: u32,
        /// Whether it is signed.
        signed: bool,
        /// Whether it is `_Bool`.
        boolean: bool,
    },
    /// `float`, `double`.
    Float {
        /// The size in bytes.
        size: u32,
    },
    /// A pointer to the type.
    Ptr(TypeId),
    /// An array; `len` 0 is a flexible array member.
    Array {
        /// The element type.
        elem: TypeId,
        /// The number of elements.
        len: u32,
    },
    /// A `struct`.
    Struct(Composite),
    /// A `union`.
    Union(Composite),
    /// An `enum`.
    Enum(EnumTy),
    /// A `struct` or `union` declared but not defined here.
    Fwd {
        /// Its tag.
        name: String,
        /// Whether it is a union.
        union: bool,
    },
    /// A `typedef`.
    Typedef {
        /// The new name.
        name: String,
        /// What it names.
        ty: TypeId,
    },
    /// `const` on a type.
    Const(TypeId),
    /// `volatile`, `restrict` or a type tag on a type: the same type for layout.
    Qualified(TypeId),
    /// A function prototype.
    Proto(Proto),
}

/// The body of a `struct` or `union`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Composite {
    /// The tag, `None` for an anonymous one.
    pub name: Option<String>,
    /// The size in bytes.
    pub size: u32,
    /// The members, in declaration order.
    pub members: Vec<Member>,
}

/// A member of a `struct` or `union`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Member {
    /// The name, `None` for an anonymous `struct` or `union` member.
    pub name: Option<String>,
    /// The type.
    pub ty: TypeId,
    /// The offset from the start of the enclosing type, in bits.
    pub bit_offset: u32,
    /// The width of a bitfield, 0 for an ordinary member.
    pub bitfield_size: u32,
}

/// An `enum`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnumTy {
    /// The tag, `None` for an anonymous one.
    pub name: Option<String>,
    /// The size in bytes.
    pub size: u32,
    /// Whether the values are signed.
    pub signed: bool,
    /// The enumerators and their values.
    pub values: Vec<(String, i64)>,
}

/// A function prototype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proto {
    /// The return type.
    pub ret: TypeId,
    /// The parameters, `...` excluded.
    pub params: Vec<ProtoParam>,
    /// Whether it ends in `...`.
    pub variadic: bool,
}

/// A parameter of a prototype.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProtoParam {
    /// Its name, when the kernel's BTF keeps one.
    pub name: Option<String>,
    /// Its type.
    pub ty: TypeId,
}

/// What a symbol table says of one function name in one object.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Symbol {
    /// How many text symbols have this name (more than one: local functions, told apart by
    /// `#[sympos]`, in the order of `/proc/kallsyms`).
    pub count: u32,
    /// How many of them start with an fentry site.
    pub traceable: u32,
}

/// One object a patch can target: `vmlinux` or a module.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Object {
    /// The functions the BTF describes, with each distinct prototype (a function missing here
    /// does not exist in the object or was inlined everywhere; one present may still lack an
    /// fentry site, which only the symbols tell).
    pub functions: BTreeMap<String, Vec<TypeId>>,
    /// The text symbols, when a symbol table was read (`/proc/kallsyms`, a `vmlinux` with
    /// symbols, a module's `.ko`).
    pub symbols: Option<BTreeMap<String, Symbol>>,
    /// Every named symbol, functions and data, in the order of `/proc/kallsyms` (vmlinux: from
    /// the probe or the running kernel; a module: its symbol table), when it was read: where a
    /// name occurs more than once, its position tells the occurrences apart (`sympos`).
    #[serde(default)]
    pub kallsyms: Vec<String>,
    /// For replaced functions that the compiler inlined somewhere, the functions they were
    /// inlined into (from debug information, when it was given).
    #[serde(default)]
    pub inlined: BTreeMap<String, BTreeSet<String>>,
    /// Whether this object's types and functions were read (a module without BTF has only
    /// its symbols).
    pub has_btf: bool,
    /// Where it was read from, for messages.
    pub origin: String,
    /// The ids of the types its own BTF defines (`start..end` of [`Kernel::types`]); a module's
    /// split BTF refers to vmlinux's types and adds its own.
    #[serde(default)]
    pub type_ids: Option<(TypeId, TypeId)>,
}

/// A type name the patch uses that names different types: each candidate, with the object
/// that defines it and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ambiguity {
    /// `(object, type id, size in bytes)` of each candidate.
    pub candidates: Vec<(String, TypeId, Option<u64>)>,
}

/// The target kernel, as far as a patch needs to know it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Kernel {
    /// The release (`6.1.0-56-amd64`).
    pub release: String,
    /// Every type: vmlinux's, then those of the modules read.
    pub types: Vec<Ty>,
    /// The objects read: `vmlinux` always, and the modules the patch names.
    pub objects: BTreeMap<String, Object>,
    /// Every module this release has (names with `_`, as the kernel spells them), when known.
    pub modules: Option<BTreeSet<String>>,
    #[serde(skip)]
    index: Index,
}

/// Lookups built from the types after loading.
#[derive(Clone, Debug, Default)]
struct Index {
    /// Named structs, unions, enums, typedefs and forward declarations, by name.
    types: HashMap<String, Vec<TypeId>>,
    /// Every enumerator, by name: its enum and its value.
    enumerators: HashMap<String, (TypeId, i64)>,
}

impl Kernel {
    /// Builds the lookups; call it after filling or deserializing `types`.
    pub fn index(&mut self) {
        let mut index = Index::default();
        for (id, ty) in self.types.iter().enumerate() {
            let id = id as TypeId;
            let name = match ty {
                Ty::Struct(c) | Ty::Union(c) => c.name.as_deref(),
                Ty::Enum(e) => {
                    for (value, v) in &e.values {
                        index.enumerators.entry(value.clone()).or_insert((id, *v));
                    }
                    e.name.as_deref()
                }
                Ty::Typedef { name, .. } | Ty::Fwd { name, .. } => Some(name.as_str()),
                _ => None,
            };
            if let Some(name) = name {
                index.types.entry(name.to_owned()).or_default().push(id);
            }
        }
        self.index = index;
    }

    /// Returns the type with this id (`void` for an id out of range).
    pub fn ty(&self, id: TypeId) -> &Ty {
        self.types.get(id as usize).unwrap_or(&Ty::Void)
    }

    /// Finds the type a patch means by a bare name: a defined `struct` or `union` first, then
    /// an `enum`, a `typedef`, and a forward declaration last.
    pub fn type_named(&self, name: &str) -> Option<TypeId> {
        let ids = self.index.types.get(name)?;
        ids.iter().min_by_key(|id| self.rank(**id)).copied()
    }

    /// How well a named type answers a bare name: a defined `struct` or `union` best, then an
    /// `enum`, a `typedef`, and a forward declaration last.
    fn rank(&self, id: TypeId) -> u8 {
        match self.ty(id) {
            Ty::Struct(_) | Ty::Union(_) => 0,
            Ty::Enum(_) => 1,
            Ty::Typedef { .. } => 2,
            _ => 3,
        }
    }

    /// The object whose BTF defines type `id`: the module whose range holds it, else vmlinux.
    pub fn owner_of(&self, id: TypeId) -> &str {
        self.objects
            .iter()
            .filter(|(name, _)| name.as_str() != "vmlinux")
            .find(|(_, o)| o.type_ids.is_some_and(|(start, end)| (start..end).contains(&id)))
            .map_or("vmlinux", |(name, _)| name.as_str())
    }

    /// Finds the type a patch means by a bare name used in the code of `scopes` (`vmlinux`, or
    /// modules the patch replaces functions of): in each scope, that object's own definition
    /// first, else vmlinux's. The best kind of each (as [`Kernel::type_named`] ranks them) must
    /// be one type, or types of the same shape: several (two `struct bictcp` of different sizes)
    /// are an [`Ambiguity`], never a guess.
    pub fn type_in_scopes<'s>(
        &self,
        name: &str,
        scopes: impl IntoIterator<Item = &'s str>,
    ) -> Result<Option<TypeId>, Ambiguity> {
        let Some(ids) = self.index.types.get(name) else { return Ok(None) };
        let rank = |id: &TypeId| self.rank(*id);
        let mut chosen: Vec<TypeId> = Vec::new();
        for scope in scopes {
            let own: Vec<TypeId> = ids.iter().copied().filter(|id| self.owner_of(*id) == scope).collect();
            let from = if own.is_empty() {
                ids.iter().copied().filter(|id| self.owner_of(*id) == "vmlinux").collect()
            } else {
                own
            };
            let Some(best) = from.iter().map(rank).min() else { continue };
            chosen.extend(from.into_iter().filter(|id| rank(id) == best));
        }
        chosen.sort_unstable();
        chosen.dedup();
        let Some(&first) = chosen.first() else {
            // Used nowhere that has one: the first of any object, as before.
            return Ok(self.type_named(name));
        };
        if chosen.iter().all(|id| self.same_shape(first, *id)) {
            return Ok(Some(first));
        }
        Err(Ambiguity {
            candidates: chosen.iter().map(|id| (self.owner_of(*id).to_owned(), *id, self.size_of(*id))).collect(),
        })
    }

    /// Whether two types are laid out alike: the same kind, size and member names and offsets.
    fn same_shape(&self, a: TypeId, b: TypeId) -> bool {
        if a == b {
            return true;
        }
        match (self.ty(a), self.ty(b)) {
            (Ty::Struct(x), Ty::Struct(y)) | (Ty::Union(x), Ty::Union(y)) => {
                x.size == y.size
                    && x.members.len() == y.members.len()
                    && x.members.iter().zip(&y.members).all(|(m, n)| {
                        m.name == n.name && m.bit_offset == n.bit_offset && m.bitfield_size == n.bitfield_size
                    })
            }
            (Ty::Enum(x), Ty::Enum(y)) => x.size == y.size && x.values == y.values,
            (Ty::Typedef { .. }, Ty::Typedef { .. }) => self.size_of(a) == self.size_of(b),
            (Ty::Fwd { union: x, .. }, Ty::Fwd { union: y, .. }) => x == y,
            _ => false,
        }
    }

    /// Finds an enumerator: its enum and its value.
    pub fn enumerator(&self, name: &str) -> Option<(TypeId, i64)> {
        self.index.enumerators.get(name).copied()
    }

    /// Every named type, for suggestions.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.index.types.keys().map(String::as_str)
    }

    /// Steps over typedefs and qualifiers.
    pub fn resolve(&self, mut id: TypeId) -> TypeId {
        for _ in 0..64 {
            match self.ty(id) {
                Ty::Typedef { ty, .. } | Ty::Qualified(ty) | Ty::Const(ty) => id = *ty,
                _ => break,
            }
        }
        id
    }

    /// Steps over qualifiers only.
    pub fn unqualified(&self, mut id: TypeId) -> TypeId {
        for _ in 0..64 {
            match self.ty(id) {
                Ty::Qualified(ty) | Ty::Const(ty) => id = *ty,
                _ => break,
            }
        }
        id
    }

    /// The size of a type in bytes (`None` for `void`, functions and forward declarations, and
    /// for an array that is its own element, which only a broken BTF writes).
    pub fn size_of(&self, id: TypeId) -> Option<u64> {
        self.size_of_depth(id, 0)
    }

    fn size_of_depth(&self, id: TypeId, depth: u32) -> Option<u64> {
        if depth > 64 {
            return None;
        }
        match self.ty(self.resolve(id)) {
            Ty::Int { size, .. } | Ty::Float { size } => Some(u64::from(*size)),
            Ty::Ptr(_) => Some(8),
            Ty::Array { elem, len } => self.size_of_depth(*elem, depth + 1)?.checked_mul(u64::from(*len)),
            Ty::Struct(c) | Ty::Union(c) => Some(u64::from(c.size)),
            Ty::Enum(e) => Some(u64::from(e.size)),
            _ => None,
        }
    }

    /// The name a type has in C, for messages: `struct seq_file *`, `unsigned int`.
    pub fn c_name(&self, id: TypeId) -> String {
        self.c_decl(id, "")
    }

    /// A C declaration of `name` with type `id`: `struct seq_file *m`, `int (*show)(void *)`.
    pub fn c_decl(&self, id: TypeId, name: &str) -> String {
        self.c_decl_depth(id, name, 0)
    }

    fn c_decl_depth(&self, id: TypeId, name: &str, depth: u32) -> String {
        if depth > 16 {
            return format!("... {name}").trim_end().to_owned();
        }
        let join = |base: &str, name: &str| {
            if name.is_empty() {
                base.to_owned()
            } else if base.ends_with('*') {
                format!("{base}{name}")
            } else {
                format!("{base} {name}")
            }
        };
        match self.ty(id) {
            Ty::Void => join("void", name),
            Ty::Int { name: c, .. } => join(c, name),
            Ty::Float { size } => join(if *size == 4 { "float" } else { "double" }, name),
            Ty::Ptr(to) => {
                let inner = match self.ty(self.unqualified(*to)) {
                    Ty::Proto(_) | Ty::Array { .. } => format!("(*{name})"),
                    _ => format!("*{name}"),
                };
                self.c_decl_depth(*to, &inner, depth + 1)
            }
            Ty::Array { elem, len } => {
                let len = if *len == 0 { String::new() } else { len.to_string() };
                self.c_decl_depth(*elem, &format!("{name}[{len}]"), depth + 1)
            }
            Ty::Struct(c) => join(&format!("struct {}", c.name.as_deref().unwrap_or("{...}")), name),
            Ty::Union(c) => join(&format!("union {}", c.name.as_deref().unwrap_or("{...}")), name),
            Ty::Enum(e) => join(&format!("enum {}", e.name.as_deref().unwrap_or("{...}")), name),
            Ty::Fwd { name: tag, union } => join(&format!("{} {tag}", if *union { "union" } else { "struct" }), name),
            Ty::Typedef { name: t, .. } => join(t, name),
            Ty::Qualified(to) => self.c_decl_depth(*to, name, depth + 1),
            Ty::Const(to) => match self.ty(*to) {
                Ty::Ptr(_) => self.c_decl_depth(*to, &format!("const {name}"), depth + 1),
                _ => format!("const {}", self.c_decl_depth(*to, name, depth + 1)),
            },
            Ty::Proto(p) => {
                let mut params: Vec<String> = p
                    .params
                    .iter()
                    .map(|q| self.c_decl_depth(q.ty, q.name.as_deref().unwrap_or(""), depth + 1))
                    .collect();
                if p.variadic {
                    params.push("...".into());
                }
                if params.is_empty() {
                    params.push("void".into());
                }
                self.c_decl_depth(p.ret, &format!("{name}({})", params.join(", ")), depth + 1)
            }
        }
    }

    /// The C prototype of a function: `int cmdline_proc_show(struct seq_file *m, void *v)`.
    pub fn c_prototype(&self, name: &str, proto: TypeId) -> String {
        self.c_decl(proto, name)
    }

    /// The prototype a function has, following a `Proto` id.
    pub fn proto(&self, id: TypeId) -> Option<&Proto> {
        match self.ty(id) {
            Ty::Proto(p) => Some(p),
            _ => None,
        }
    }
}
