//! Mutation and random-input property test: `check` never panics, every rejected input gets at
//! least one diagnostic with a code and a span inside the source, and every accepted input
//! lowers.
//!
//! The run is deterministic (a fixed seed per case). It tries a few thousand inputs by default;
//! set `KGRAFT_FUZZ_CASES=100000` for the long run.

use std::path::Path;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Pieces worth inserting: delimiters, literal openers, keywords and odd characters.
const PIECES: &[&str] = &[
    "{", "}", "(", ")", "[", "]", "<", ">", "\"", "'", "r#\"", "\"#", "/*", "*/", "//", "///", "//!", "...",
    ",", ";", ":", "=", "->", "#[sympos(2)]", "#[", "shadow!(", "dev.reads", "patch x { description: \"d\" }",
    "replace fn f(a: u64) -> u64 { a }", "module \"m\" {", "on pre_patch { 0 }", "extern {", "static ", "fn ",
    "shadow t { a: u64 = 0 }", "\0", "\u{feff}", "é", "\u{10FFFF}", "\n", " ", "\\", "0x", "true", "_",
    "type", "__kgraft", "\r\n", "\t",
];

fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in [root.join("../patches"), root.join("tests/ui")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if p.extension().is_some_and(|e| e == "kgp") {
                out.push(String::from_utf8_lossy(&std::fs::read(&p).expect("readable")).into_owned());
            }
        }
    }
    assert!(out.len() > 10, "seeds found");
    out
}

fn boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn mutate(rng: &mut Rng, src: &str) -> String {
    let mut s = src.to_owned();
    for _ in 0..1 + rng.below(4) {
        let a = boundary(&s, rng.below(s.len() + 1));
        let b = boundary(&s, a + rng.below(64));
        match rng.below(6) {
            0 => s.replace_range(a..b, ""),
            1 => s.insert_str(a, PIECES[rng.below(PIECES.len())]),
            2 => {
                let piece = s[a..b].to_owned();
                let at = boundary(&s, rng.below(s.len() + 1));
                s.insert_str(at, &piece);
            }
            3 => s.truncate(a),
            4 => {
                let c = char::from_u32(rng.below(0x3000) as u32).unwrap_or('?');
                s.insert(a, c);
            }
            _ => {
                let piece = PIECES[rng.below(PIECES.len())];
                s.replace_range(a..b, piece);
            }
        }
    }
    s
}

fn random(rng: &mut Rng) -> String {
    let len = rng.below(200);
    (0..len)
        .map(|_| match rng.below(3) {
            0 => PIECES[rng.below(PIECES.len())].to_owned(),
            1 => char::from_u32(rng.below(128) as u32).unwrap_or(' ').to_string(),
            _ => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x').to_string(),
        })
        .collect()
}

fn property(src: &str) -> Result<bool, String> {
    match kgraft_lang::check("fuzz.kgp", src) {
        Ok(checked) => {
            kgraft_lang::lower(&checked).map_err(|d| format!("accepted but did not lower: {:?}", d.list))?;
            Ok(true)
        }
        Err(diags) => {
            if diags.list.is_empty() {
                return Err("rejected without a diagnostic".to_owned());
            }
            for d in &diags.list {
                let code_ok = d.code.len() == 5 && d.code.starts_with('E') && d.code[1..].bytes().all(|b| b.is_ascii_digit());
                if !code_ok || d.code == "E0000" {
                    return Err(format!("bad code {}", d.code));
                }
                let Some(span) = d.primary_span() else { return Err(format!("{} has no primary span", d.code)) };
                if span.start > span.end || span.end > src.len() {
                    return Err(format!("{} span {span:?} outside the source of {} bytes", d.code, src.len()));
                }
                if kgraft_lang::explain(&d.code).is_none() {
                    return Err(format!("{} is not in the catalogue", d.code));
                }
            }
            Ok(false)
        }
    }
}

#[test]
fn check_never_panics_and_always_explains() {
    let cases: usize = std::env::var("KGRAFT_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    let seeds = seeds();
    let mut accepted = 0;
    for case in 0..cases {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case as u64).wrapping_mul(0x1000_0000_01b3) | 1);
        let input = if case % 10 == 9 { random(&mut rng) } else { mutate(&mut rng, &seeds[case % seeds.len()]) };
        let outcome = std::panic::catch_unwind(|| property(&input));
        match outcome {
            Ok(Ok(ok)) => accepted += usize::from(ok),
            Ok(Err(why)) => panic!("case {case}: {why}\ninput: {input:?}"),
            Err(_) => panic!("case {case}: check panicked\ninput: {input:?}"),
        }
    }
    // The mutations keep a share of valid sources, so lowering is exercised as well.
    assert!(accepted > cases / 50, "only {accepted} of {cases} inputs were accepted");
    eprintln!("{cases} inputs, {accepted} accepted");
}
