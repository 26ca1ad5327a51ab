//! Kernel symbols that share a name, told apart by position.
//!
//! A static function or variable of one file often has the name of another file's (`lock`,
//! `show`, `firsttime.0`); the livepatch core and the kgraft engine then need the symbol's
//! position among those of its name, in kallsyms order (`sympos`, counted from 1; 0 means the
//! only one). A patch's C says it with `KGRAFT_SYMPOS("name", N);` or, for every target,
//! `KGRAFT_SYMPOS_NEAR("name", "anchor");` (see [`kgraft_lang::sympos`]), which put a record in
//! the object's section [`SECTION`], dropped when the module is linked; the build reads them
//! from each C object and binds each to the target's kallsyms.
//!
//! `kgraftc from-diff` finds the occurrence itself: kallsyms is sorted by address, and the
//! linker keeps each object file's text, data and bss together, so the occurrence surrounded by
//! the other symbols of the fixed file's own object is that file's. It then names it by its
//! nearest unique neighbour ([`anchor`]), which holds on every kernel built from that file.

use std::collections::{BTreeMap, BTreeSet};

use kgraft_lang::sympos::{Position, nearest};

/// The section of a C object that holds its `KGRAFT_SYMPOS` records (defined with the macro,
/// in the language's C prelude).
pub(crate) const SECTION: &str = kgraft_lang::SYMPOS_SECTION;

/// How far on each side of an occurrence its neighbours are looked for.
const WINDOW: usize = 24;

/// Where `name` is among the symbols of its name in `order` (an object's kallsyms): 0 when it
/// is the only one (or not there: the load says so), else the position of the occurrence with
/// the most names of the first `evidence` set that tells one apart (the names the file's own
/// object defines, then those its directory's other files define, linked beside it) around
/// it. An error says why no occurrence can be chosen.
pub(crate) fn position(order: &[String], name: &str, evidence: &[&BTreeSet<String>]) -> Result<u32, String> {
    let at: Vec<usize> = order.iter().enumerate().filter(|(_, n)| *n == name).map(|(i, _)| i).collect();
    if at.len() < 2 {
        return Ok(0);
    }
    let mut tried = Vec::new();
    for names in evidence {
        let scores: Vec<usize> = at
            .iter()
            .map(|&i| {
                let around = &order[i.saturating_sub(WINDOW)..order.len().min(i + WINDOW + 1)];
                around.iter().filter(|n| *n != name && names.contains(*n)).collect::<BTreeSet<_>>().len()
            })
            .collect();
        let best = scores.iter().copied().max().unwrap_or(0);
        let winners: Vec<usize> = (0..at.len()).filter(|&k| scores[k] == best).collect();
        if let [k] = winners[..]
            && best > 0
        {
            return Ok(u32::try_from(k + 1).unwrap_or(u32::MAX));
        }
        tried.push(scores.iter().map(usize::to_string).collect::<Vec<_>>().join(", "));
    }
    Err(format!(
        "`{name}` is in kallsyms {} times, and neither the file's other symbols nor its directory's tell which is \
         the file's (neighbours matched: {})",
        at.len(),
        tried.join("; ")
    ))
}

/// Names the occurrence of `name` that [`position`] finds by its nearest neighbour: the symbol
/// of the evidence sets, unique in `order`, that is nearest to it and of which it is the nearest
/// occurrence. Returns the position (0: `name` is unique) and the neighbour (`None` then).
pub(crate) fn anchor(
    order: &[String],
    name: &str,
    evidence: &[&BTreeSet<String>],
) -> Result<(u32, Option<String>), String> {
    let pos = position(order, name, evidence)?;
    if pos == 0 {
        return Ok((0, None));
    }
    let Some(at) = order.iter().enumerate().filter(|(_, n)| *n == name).map(|(i, _)| i).nth(pos as usize - 1) else {
        return Err(format!("`{name}` has no occurrence {pos}"));
    };
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for n in order {
        *seen.entry(n).or_default() += 1;
    }
    let mut candidates: Vec<(usize, &str)> = order
        .iter()
        .enumerate()
        .filter(|(_, n)| *n != name && seen.get(n.as_str()) == Some(&1) && evidence.iter().any(|e| e.contains(*n)))
        .map(|(i, n)| (i.abs_diff(at), n.as_str()))
        .collect();
    candidates.sort();
    candidates
        .into_iter()
        .take(WINDOW * 4)
        .find(|(_, c)| nearest(order, name, c) == Ok(pos))
        .map(|(_, c)| (pos, Some(c.to_owned())))
        .ok_or_else(|| format!("no symbol with a unique name is nearer to the file's `{name}` than to the others"))
}

/// The `KGRAFT_SYMPOS` and `KGRAFT_SYMPOS_NEAR` records of a C object's section.
pub(crate) fn read_records(section: &[u8]) -> Result<BTreeMap<String, Position>, String> {
    let mut out = BTreeMap::new();
    for record in section.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let text = String::from_utf8_lossy(record);
        // The position as `#[sympos(...)]` spells it, exactly as the macro writes it.
        let parsed =
            text.split_once(',').and_then(|(n, p)| Some((n, kgraft_lang::sympos::parse(p).filter(|_| p.trim() == p)?)));
        let Some((name, pos)) = parsed.filter(|(n, _)| !n.is_empty()) else {
            return Err(format!(
                "KGRAFT_SYMPOS(\"{text}\") is not a name and a position counted from 1, nor a name and a neighbour"
            ));
        };
        if out.insert(name.to_owned(), pos.clone()).is_some_and(|old| old != pos) {
            return Err(format!("KGRAFT_SYMPOS gives `{name}` two positions"));
        }
    }
    Ok(out)
}

/// The position `pos` means in `order` (an object's kallsyms): a number stands, a neighbour is
/// looked up.
pub(crate) fn bind(order: &[String], name: &str, pos: &Position) -> Result<u32, String> {
    match pos {
        Position::Index(n) => Ok(*n),
        Position::Near(anchor) => nearest(order, name, anchor),
    }
}

/// How many times `name` is in `order`.
pub(crate) fn count(order: &[String], name: &str) -> usize {
    order.iter().filter(|n| *n == name).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names of `s`; each `...` stands for more unrelated names than the window spans.
    fn names(s: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, word) in s.split_whitespace().enumerate() {
            if word == "..." {
                out.extend((0..=WINDOW).map(|k| format!("other_{i}_{k}")));
            } else {
                out.push(word.to_owned());
            }
        }
        out
    }

    #[test]
    fn the_occurrence_among_the_files_own_symbols_is_chosen() {
        let order = names("a_show lock a_open ... b_read b_write lock b_count ... c_x lock c_y");
        let unit: BTreeSet<String> = names("b_read b_count b_write").into_iter().collect();
        assert_eq!(position(&order, "lock", &[&unit]), Ok(2));
        let unit: BTreeSet<String> = names("c_y").into_iter().collect();
        assert_eq!(position(&order, "lock", &[&unit]), Ok(3));
        assert_eq!(position(&order, "a_show", &[&unit]), Ok(0), "the only one");
        assert_eq!(position(&order, "absent", &[&unit]), Ok(0));
    }

    #[test]
    fn no_evidence_or_a_tie_is_an_error() {
        let order = names("x lock y lock z");
        assert!(order.len() < WINDOW, "both occurrences are in each other's window");
        let e = position(&order, "lock", &[&BTreeSet::new()]).unwrap_err();
        assert!(e.contains("`lock` is in kallsyms 2 times") && e.contains("0, 0"), "{e}");
        let both: BTreeSet<String> = names("y").into_iter().collect();
        assert!(position(&order, "lock", &[&both]).is_err(), "y is beside both");
    }

    #[test]
    fn the_directorys_files_decide_when_the_files_own_symbols_cannot() {
        // A file whose only datum is `lock`: its neighbours are its directory's other files'.
        let order = names("m_probe m_list lock m_key ... k_image lock k_notes");
        let own: BTreeSet<String> = names("lock sig_check").into_iter().collect();
        let directory: BTreeSet<String> = names("m_probe m_list m_key").into_iter().collect();
        assert!(position(&order, "lock", &[&own]).is_err());
        assert_eq!(position(&order, "lock", &[&own, &directory]), Ok(1));
    }

    #[test]
    fn records_read_back_as_the_macro_writes_them() {
        // Two records, the second after padding, as gcc may align the arrays.
        let section = b"lock,2\0\0\0\0firsttime.0,3\0mode_show,near = \"reboot_mode_store\"\0";
        let r = read_records(section).unwrap();
        assert_eq!(
            r,
            BTreeMap::from([
                ("lock".to_string(), Position::Index(2)),
                ("firsttime.0".to_string(), Position::Index(3)),
                ("mode_show".to_string(), Position::Near("reboot_mode_store".into())),
            ])
        );
        assert!(read_records(b"lock,near = \"\"\0").is_err());
        assert!(read_records(b"lock,near=reboot_mode_store\0").is_err());
        assert!(read_records(b"lock, 1\0").is_err());
        assert!(read_records(b"lock,0\0").is_err());
        assert!(read_records(b"lock,1+1\0").is_err());
        assert!(read_records(b"lock,1\0lock,2\0").is_err());
        assert_eq!(read_records(b"lock,1\0lock,1\0").unwrap().len(), 1);
    }

    #[test]
    fn the_anchor_names_the_chosen_occurrence_and_finds_it_again() {
        let order = names("a_show lock a_open ... b_read b_write lock b_count ... c_x lock c_y");
        let unit: BTreeSet<String> = names("b_read b_count b_write").into_iter().collect();
        let (pos, anchor) = anchor(&order, "lock", &[&unit]).unwrap();
        assert_eq!(pos, 2);
        let anchor = anchor.expect("a neighbour");
        assert!(["b_write", "b_count"].contains(&anchor.as_str()), "{anchor}");
        assert_eq!(bind(&order, "lock", &Position::Near(anchor.clone())), Ok(2));
        // A kernel with one more `lock` first: the number moves, the neighbour still finds it.
        let mut other = names("z_lock_user lock");
        other.extend(order.iter().cloned());
        assert_eq!(bind(&other, "lock", &Position::Near(anchor)), Ok(3));
        assert_eq!(anchor_of_unique(&order), (0, None));
    }

    fn anchor_of_unique(order: &[String]) -> (u32, Option<String>) {
        anchor(order, "a_show", &[&BTreeSet::new()]).unwrap()
    }
}
