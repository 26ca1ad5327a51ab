//! Unified diffs: reading a kernel fix and applying it to the original sources in memory.
//!
//! `kgraftc from-diff` starts from a fix given as a unified diff. [`parse`] reads it in any of the forms a fix
//! usually comes in: `git diff` output, a `git format-patch` mail (whose subject it keeps), `git show` output, or
//! `diff -Nupr old/ new/` output. Text between the file diffs (the commit message, the diffstat, the `diff`,
//! `index`, `new file mode` and `deleted file mode` lines) is skipped; a `--- ` line is a file header only when a
//! `+++ ` line follows it.
//!
//! [`FilePatch::apply`] applies one file's hunks to the original text the way GNU `patch` does without fuzz: the
//! context and removed lines must match exactly, but a hunk may be found at an offset from its stated line (the
//! nearest one, later positions first on a tie, each hunk starting from the offset the previous one was found at).
//! Line endings are kept as found: a carriage return before a diff line's newline belongs to the line's text, so a
//! diff of CR LF files applies to CR LF files. A diff whose every line ends in CR LF (a diff that was itself
//! converted, which shows in its `+++ ` line) has one carriage return removed from each of its lines.
//!
//! What a live patch cannot be built from is refused while parsing: binary diffs, renames and copies, and file mode
//! changes. Nothing here touches the file system; [`strip_level`] asks its caller which paths exist.

use std::fmt;

/// A parsed diff: the subject of the fix, when the diff carries one, and the changes to each file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Patch {
    /// The subject of a `git format-patch` mail (or the title of a `git show` commit), without its `[PATCH ...]`
    /// tag and with its folded lines joined; `None` for a bare diff.
    pub(crate) subject: Option<String>,
    /// The changed files in the order of the diff.
    ///
    /// A series of patches in one mail box may change the same file more than once; the changes then apply in order.
    pub(crate) files: Vec<FilePatch>,
}

/// The changes a diff makes to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FilePatch {
    /// The old path as written in the `---` line (after removing a trailing tab and time stamp as `diff -Nupr`
    /// writes it); `None` for `/dev/null`.
    pub(crate) old_path: Option<String>,
    /// The new path as written in the `+++` line (after removing a trailing tab and time stamp); `None` for
    /// `/dev/null`.
    pub(crate) new_path: Option<String>,
    /// The hunks in the order of the diff; none for an empty file that is created or deleted.
    pub(crate) hunks: Vec<Hunk>,
    /// Whether the diff creates the file (`/dev/null`, `new file mode`, or the epoch time stamp of `diff -N`).
    new_file: bool,
    /// Whether the diff deletes the file.
    deleted_file: bool,
}

/// One hunk of a file's changes: a range of the old file and what replaces it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hunk {
    /// The first old line the hunk covers (1-based), or the line after which it inserts when `old_len` is 0.
    pub(crate) old_start: usize,
    /// How many old lines (context and removed) the hunk covers.
    pub(crate) old_len: usize,
    /// The first new line the hunk covers (1-based), or the line after which it removes when `new_len` is 0.
    pub(crate) new_start: usize,
    /// How many new lines (context and added) the hunk covers.
    pub(crate) new_len: usize,
    /// The hunk's lines in order.
    pub(crate) lines: Vec<Line>,
    /// The `@@` header line as written, for messages.
    header: String,
    /// The header's line number in the diff (1-based).
    diff_line: usize,
    /// Whether the hunk's last old line has no newline (a `\ No newline at end of file` marker).
    old_no_newline: bool,
    /// Whether the hunk's last new line has no newline.
    new_no_newline: bool,
}

/// One line of a hunk: its text without the leading marker and without the newline.
///
/// A carriage return before the newline is part of the text, so that CR LF lines match CR LF lines only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// A line both files have (marker ` `).
    Context(String),
    /// A line only the old file has (marker `-`).
    Removed(String),
    /// A line only the new file has (marker `+`).
    Added(String),
}

/// Why a diff cannot be read or applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatchError {
    /// The input holds no file diff at all.
    NoChanges,
    /// A file's diff is binary (`GIT binary patch` or `Binary files A and B differ`).
    Binary {
        /// The file as the diff names it.
        file: String,
        /// The line of the diff that shows it (1-based).
        line: usize,
    },
    /// A file is renamed (a git `rename from`/`rename to`, or a similarity index between different paths).
    Rename {
        /// The old path.
        from: String,
        /// The new path.
        to: String,
        /// The line of the file's `diff --git` header (1-based).
        line: usize,
    },
    /// A file is copied (a git `copy from`/`copy to`).
    Copy {
        /// The path copied from.
        from: String,
        /// The path copied to.
        to: String,
        /// The line of the file's `diff --git` header (1-based).
        line: usize,
    },
    /// A file's mode changes (git `old mode`/`new mode`).
    ModeChange {
        /// The file as the diff names it.
        file: String,
        /// The line of the file's `diff --git` header (1-based).
        line: usize,
    },
    /// The diff is not well formed.
    Malformed {
        /// The offending line of the diff (1-based).
        line: usize,
        /// What is wrong, as a sentence fragment.
        reason: String,
    },
    /// A hunk's context and removed lines are not in the original file.
    HunkFailed {
        /// The file as the diff names it.
        file: String,
        /// The hunk's `@@` header as written.
        header: String,
        /// The header's line in the diff (1-based).
        line: usize,
    },
    /// The diff creates a file the source already has.
    FileExists {
        /// The file as the diff names it.
        file: String,
    },
    /// The diff deletes a file, but the source has lines the diff does not remove.
    NotWhollyDeleted {
        /// The file as the diff names it.
        file: String,
    },
}

impl fmt::Display for PatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const OTHER_VERSION: &str = "the source may be of another version than the one the fix was made for";
        match self {
            PatchError::NoChanges => write!(f, "the diff changes no file"),
            PatchError::Binary { file, line } => {
                write!(
                    f,
                    "line {line} of the diff: binary diff of {file}: a live patch is built from source changes only"
                )
            }
            PatchError::Rename { from, to, line } => write!(
                f,
                "line {line} of the diff: the diff renames {from} to {to}: a live patch changes files in place only"
            ),
            PatchError::Copy { from, to, line } => write!(
                f,
                "line {line} of the diff: the diff copies {from} to {to}: a live patch changes files in place only"
            ),
            PatchError::ModeChange { file, line } => {
                write!(
                    f,
                    "line {line} of the diff: the diff changes the mode of {file}: a live patch cannot change file modes"
                )
            }
            PatchError::Malformed { line, reason } => write!(f, "line {line} of the diff: {reason}"),
            PatchError::HunkFailed { file, header, line } => write!(
                f,
                "{file}: hunk `{header}` (line {line} of the diff) does not apply: its context and removed lines are not \
                 in the source; {OTHER_VERSION}"
            ),
            PatchError::FileExists { file } => {
                write!(f, "{file}: the diff creates this file, but the source already has it; {OTHER_VERSION}")
            }
            PatchError::NotWhollyDeleted { file } => write!(
                f,
                "{file}: the diff deletes this file, but the source has lines the diff does not remove; {OTHER_VERSION}"
            ),
        }
    }
}

impl std::error::Error for PatchError {}

/// Reads a diff in any of the forms the module documentation lists.
pub(crate) fn parse(text: &str) -> Result<Patch, PatchError> {
    let lines: Vec<&str> = text.split_inclusive('\n').map(|line| line.strip_suffix('\n').unwrap_or(line)).collect();
    let mut parser = Parser { lines: &lines, pos: 0, files: Vec::new(), section: None };
    parser.run()?;
    if parser.files.is_empty() {
        return Err(PatchError::NoChanges);
    }
    Ok(Patch { subject: subject(&lines), files: parser.files })
}

/// The `-p` level (0 to 3) under which every file of the patch names an existing path, as told by `exists`; `None`
/// if no level works.
///
/// `exists` is called with paths relative to the source tree root: the stripped path of each file the diff changes
/// or deletes, and, for a file the diff creates, the first directory of its stripped path (which must exist unless
/// the stripped path is a bare file name). When no level works that way, new files are left out of the reckoning,
/// as they may lie in a directory the fix creates, provided the patch changes some existing file. The lowest level
/// that works wins.
pub(crate) fn strip_level(patch: &Patch, exists: impl Fn(&str) -> bool) -> Option<usize> {
    let works = |level: usize, place_new_files: bool| {
        patch.files.iter().all(|file| {
            let Some(path) = file.path(level) else { return false };
            if !file.is_new_file() {
                exists(&path)
            } else if place_new_files {
                path.split_once('/').is_none_or(|(top, _)| exists(top))
            } else {
                true
            }
        })
    };
    let changes_existing = patch.files.iter().any(|file| !file.is_new_file());
    (0..=3)
        .find(|&level| works(level, true))
        .or_else(|| if changes_existing { (0..=3).find(|&level| works(level, false)) } else { None })
}

impl FilePatch {
    /// The path with `strip` leading components removed (like `patch -pN`), of the new file, or of the old one if
    /// the diff deletes the file; `None` if the path has no more than `strip` components.
    pub(crate) fn path(&self, strip: usize) -> Option<String> {
        strip_components(self.written_path()?, strip).map(str::to_owned)
    }

    /// Whether the diff creates the file.
    /// The patch that undoes this one: what it adds is removed, and what it removes is added.
    pub(crate) fn reversed(&self) -> FilePatch {
        let flip = |l: &Line| match l {
            Line::Added(t) => Line::Removed(t.clone()),
            Line::Removed(t) => Line::Added(t.clone()),
            Line::Context(t) => Line::Context(t.clone()),
        };
        FilePatch {
            old_path: self.new_path.clone(),
            new_path: self.old_path.clone(),
            new_file: self.deleted_file,
            deleted_file: self.new_file,
            hunks: self
                .hunks
                .iter()
                .map(|h| Hunk {
                    old_start: h.new_start,
                    old_len: h.new_len,
                    new_start: h.old_start,
                    new_len: h.old_len,
                    lines: h.lines.iter().map(flip).collect(),
                    header: h.header.clone(),
                    diff_line: h.diff_line,
                    old_no_newline: h.new_no_newline,
                    new_no_newline: h.old_no_newline,
                })
                .collect(),
        }
    }

    pub(crate) fn is_new_file(&self) -> bool {
        self.new_file
    }

    /// Whether the diff deletes the file.
    pub(crate) fn is_deleted_file(&self) -> bool {
        self.deleted_file
    }

    /// Applies the hunks to `old` (the whole original file text) and returns the new text.
    ///
    /// A file the diff creates must be applied to an empty text. The error names the hunk that does not apply.
    pub(crate) fn apply(&self, old: &str) -> Result<String, PatchError> {
        self.apply_with_lines(old).map(|(new, _)| new)
    }

    /// Applies the hunks as [`FilePatch::apply`] does, and also returns the lines the diff touches in the new text.
    ///
    /// The lines are 1-based line numbers in the new text, sorted and without duplicates: every line the diff adds,
    /// and, for every run of removed lines, the line after the point of removal (one past the last line when the
    /// removal is at the end of the file). They are counted from where the hunks actually applied.
    pub(crate) fn apply_with_lines(&self, old: &str) -> Result<(String, Vec<usize>), PatchError> {
        if self.new_file && !old.is_empty() {
            return Err(PatchError::FileExists { file: self.name().to_owned() });
        }
        let old_lines: Vec<&str> = old.split_inclusive('\n').collect();
        let mut new = String::with_capacity(old.len());
        let mut touched = Vec::new();
        // The next old line to copy, the number of new lines written, and the offset the last hunk was found at.
        let (mut next_old, mut written, mut offset) = (0, 0, 0);
        for hunk in &self.hunks {
            let Some(pos) = hunk.locate(&old_lines, next_old, offset) else {
                return Err(PatchError::HunkFailed {
                    file: self.name().to_owned(),
                    header: hunk.header.clone(),
                    line: hunk.diff_line,
                });
            };
            offset = signed(pos).saturating_sub(signed(hunk.stated_index()));
            for line in old_lines.get(next_old..pos).unwrap_or_default() {
                new.push_str(line);
                written += 1;
            }
            let last_new = hunk.lines.iter().rposition(|line| !matches!(line, Line::Removed(_)));
            let mut removing = false;
            for (index, line) in hunk.lines.iter().enumerate() {
                match line {
                    Line::Removed(_) => {
                        if !removing {
                            touched.push(written + 1);
                            removing = true;
                        }
                    }
                    Line::Context(text) | Line::Added(text) => {
                        removing = false;
                        written += 1;
                        if let Line::Added(_) = line {
                            touched.push(written);
                        }
                        new.push_str(text);
                        if !(hunk.new_no_newline && last_new == Some(index)) {
                            new.push('\n');
                        }
                    }
                }
            }
            next_old = pos + hunk.old_side().count();
        }
        for line in old_lines.get(next_old..).unwrap_or_default() {
            new.push_str(line);
        }
        if self.deleted_file && !new.is_empty() {
            return Err(PatchError::NotWhollyDeleted { file: self.name().to_owned() });
        }
        touched.sort_unstable();
        touched.dedup();
        Ok((new, touched))
    }

    /// The path as written of the new file, or of the old one if the diff deletes the file.
    fn written_path(&self) -> Option<&str> {
        let (first, second) =
            if self.deleted_file { (&self.old_path, &self.new_path) } else { (&self.new_path, &self.old_path) };
        first.as_deref().or(second.as_deref())
    }

    /// The file's name for messages: its path as written.
    fn name(&self) -> &str {
        self.written_path().unwrap_or("(unnamed file)")
    }
}

impl Hunk {
    /// The texts of the old file's lines the hunk covers (context and removed), in order.
    fn old_side(&self) -> impl Iterator<Item = &str> {
        self.lines.iter().filter_map(|line| match line {
            Line::Context(text) | Line::Removed(text) => Some(text.as_str()),
            Line::Added(_) => None,
        })
    }

    /// The 0-based index of the first old line the hunk covers, as its header states it.
    fn stated_index(&self) -> usize {
        if self.old_len == 0 { self.old_start } else { self.old_start.saturating_sub(1) }
    }

    /// Where in `old` (lines with their terminators) the hunk applies: the index of the first old line it covers.
    ///
    /// The hunk is looked for at its stated line moved by `offset` (where the previous hunk was found relative to its
    /// own stated line), then ever farther away, the later position first on a tie, never before `min` (the end of the
    /// previous hunk). A hunk with less leading than trailing context that states line 1 must apply at the start,
    /// and a hunk that ends without a newline must apply at the end.
    fn locate(&self, old: &[&str], min: usize, offset: isize) -> Option<usize> {
        let pattern: Vec<&str> = self.old_side().collect();
        let max = old.len().checked_sub(pattern.len())?;
        if max < min {
            return None;
        }
        let stated = self.stated_index();
        let expected = usize::try_from(signed(stated).saturating_add(offset)).unwrap_or(0);
        let prefix = self.lines.iter().take_while(|line| matches!(line, Line::Context(_))).count();
        let suffix = self.lines.iter().rev().take_while(|line| matches!(line, Line::Context(_))).count();
        let at_start = stated == 0 && prefix < suffix;
        let at_end = self.old_no_newline || self.new_no_newline;
        let fits = |pos: usize| {
            (min..=max).contains(&pos)
                && (!at_start || pos == 0)
                && (!at_end || pos == max)
                && old.get(pos..).is_some_and(|rest| {
                    pattern.iter().zip(rest).all(|(want, have)| have.strip_suffix('\n').unwrap_or(have) == *want)
                })
        };
        if pattern.is_empty() {
            // Without context, a pure insertion fits anywhere: it goes exactly where it says.
            return fits(expected).then_some(expected);
        }
        // The distance from the expected position to the nearest possible one.
        let nearest = min.saturating_sub(expected).max(expected.saturating_sub(max));
        let farthest = expected.abs_diff(min).max(expected.abs_diff(max));
        (nearest..=farthest).find_map(|distance| {
            let later = expected.checked_add(distance).filter(|&pos| fits(pos));
            later.or_else(|| expected.checked_sub(distance).filter(|&pos| distance > 0 && fits(pos)))
        })
    }

    /// Records a `\ No newline at end of file` marker at `line` of the diff, which applies to the hunk's last line.
    fn mark_no_newline(&mut self, line: usize) -> Result<(), PatchError> {
        match self.lines.last() {
            Some(Line::Context(_)) => {
                self.old_no_newline = true;
                self.new_no_newline = true;
            }
            Some(Line::Removed(_)) => self.old_no_newline = true,
            Some(Line::Added(_)) => self.new_no_newline = true,
            None => {
                return Err(PatchError::Malformed {
                    line,
                    reason: format!("`\\ No newline at end of file` before any line of hunk `{}`", self.header),
                });
            }
        }
        Ok(())
    }
}

/// `n` as a signed number, saturating (line numbers never come near the limit).
fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// A header line of the diff without the carriage return of a CR LF ending.
fn bare(line: &str) -> &str {
    line.strip_suffix('\r').unwrap_or(line)
}

/// The diff parser's state: the lines (without their newlines), the position, the files read so far, and the git
/// section (`diff --git` and its extended header lines) being read.
struct Parser<'a> {
    /// The diff's lines without their newlines.
    lines: &'a [&'a str],
    /// The index of the next line to read.
    pos: usize,
    /// The files read so far.
    files: Vec<FilePatch>,
    /// The current `diff --git` section, if any.
    section: Option<GitSection>,
}

/// What the extended header lines of one `diff --git` section say.
#[derive(Default)]
struct GitSection {
    /// The line of `diff --git` (1-based).
    line: usize,
    /// The old path of the `diff --git` line, as written (with its `a/` prefix).
    old: String,
    /// The new path of the `diff --git` line, as written (with its `b/` prefix).
    new: String,
    /// The path of `rename from`, without prefix.
    rename_from: Option<String>,
    /// The path of `rename to`, without prefix.
    rename_to: Option<String>,
    /// The path of `copy from`, without prefix.
    copy_from: Option<String>,
    /// The path of `copy to`, without prefix.
    copy_to: Option<String>,
    /// Whether an `old mode` or `new mode` line was seen.
    mode_change: bool,
    /// Whether a `similarity index` line was seen.
    similarity: bool,
    /// Whether a `new file mode` line was seen.
    new_file: bool,
    /// Whether a `deleted file mode` line was seen.
    deleted_file: bool,
    /// Whether the section's `---`/`+++` file header has been read (which ends its extended header lines).
    has_file_header: bool,
}

impl GitSection {
    /// Records what one extended header line says; other lines (`index`, for one) are of no interest.
    fn extended_header(&mut self, line: &str) {
        let value = |prefixes: &[&str]| prefixes.iter().find_map(|prefix| line.strip_prefix(prefix)).map(path_value);
        if let Some(path) = value(&["rename from ", "rename old "]) {
            self.rename_from = Some(path);
        } else if let Some(path) = value(&["rename to ", "rename new "]) {
            self.rename_to = Some(path);
        } else if let Some(path) = value(&["copy from "]) {
            self.copy_from = Some(path);
        } else if let Some(path) = value(&["copy to "]) {
            self.copy_to = Some(path);
        } else if line.starts_with("old mode ") || line.starts_with("new mode ") {
            self.mode_change = true;
        } else if line.starts_with("new file mode ") {
            self.new_file = true;
        } else if line.starts_with("deleted file mode ") {
            self.deleted_file = true;
        } else if line.starts_with("similarity index ") {
            self.similarity = true;
        }
    }

    /// The file's name for messages: the new path, or the old one if the file is deleted.
    fn name(&self) -> &str {
        if self.deleted_file { &self.old } else { &self.new }
    }

    /// Refuses renames, copies and mode changes.
    fn check(&self) -> Result<(), PatchError> {
        let line = self.line;
        if self.rename_from.is_some() || self.rename_to.is_some() {
            let from = self.rename_from.clone().unwrap_or_else(|| self.old.clone());
            let to = self.rename_to.clone().unwrap_or_else(|| self.new.clone());
            return Err(PatchError::Rename { from, to, line });
        }
        if self.copy_from.is_some() || self.copy_to.is_some() {
            let from = self.copy_from.clone().unwrap_or_else(|| self.old.clone());
            let to = self.copy_to.clone().unwrap_or_else(|| self.new.clone());
            return Err(PatchError::Copy { from, to, line });
        }
        if self.similarity && strip_components(&self.old, 1) != strip_components(&self.new, 1) {
            return Err(PatchError::Rename { from: self.old.clone(), to: self.new.clone(), line });
        }
        if self.mode_change {
            return Err(PatchError::ModeChange { file: self.name().to_owned(), line });
        }
        Ok(())
    }
}

impl<'a> Parser<'a> {
    /// Reads the whole diff into `files`.
    fn run(&mut self) -> Result<(), PatchError> {
        while let Some(&raw) = self.lines.get(self.pos) {
            let line = bare(raw);
            let number = self.pos + 1;
            if let Some(names) = line.strip_prefix("diff --git ") {
                self.end_section()?;
                let (old, new) = git_names(names);
                self.section = Some(GitSection { line: number, old, new, ..GitSection::default() });
            } else if let Some((old, new)) = self.file_header() {
                self.file(old, new)?;
                continue;
            } else if line == "GIT binary patch" || binary_files(line).is_some() {
                let file = binary_files(line)
                    .or_else(|| self.section.as_ref().map(|section| section.name().to_owned()))
                    .unwrap_or_else(|| "(unnamed file)".to_owned());
                return Err(PatchError::Binary { file, line: number });
            } else if let Some(section) = self.section.as_mut().filter(|section| !section.has_file_header) {
                section.extended_header(line);
            }
            self.pos += 1;
        }
        self.end_section()
    }

    /// The names in a `---`/`+++` file header at the current line, if there is one.
    fn file_header(&self) -> Option<(&'a str, &'a str)> {
        let old = self.lines.get(self.pos)?.strip_prefix("--- ")?;
        let new = self.lines.get(self.pos + 1)?.strip_prefix("+++ ")?;
        Some((bare(old), bare(new)))
    }

    /// Ends the current git section: refuses what it may not do, and adds the empty file it creates or deletes when
    /// it has no file header.
    fn end_section(&mut self) -> Result<(), PatchError> {
        let Some(section) = self.section.take() else { return Ok(()) };
        if section.has_file_header {
            return Ok(());
        }
        section.check()?;
        if section.new_file || section.deleted_file {
            self.files.push(FilePatch {
                old_path: (!section.new_file).then(|| section.old.clone()),
                new_path: (!section.deleted_file).then(|| section.new.clone()),
                hunks: Vec::new(),
                new_file: section.new_file,
                deleted_file: section.deleted_file,
            });
        }
        Ok(())
    }

    /// Reads one file's diff: the file header at the current line, with `old` and `new` its two names, and the hunks
    /// after it.
    fn file(&mut self, old: &str, new: &str) -> Result<(), PatchError> {
        let header_line = self.pos + 1;
        // A diff converted to CR LF as a whole shows it in its `+++` line, which git and diff end in a bare newline.
        let converted = self.lines.get(self.pos + 1).is_some_and(|line| line.ends_with('\r'));
        let (old_path, old_stamp) = file_name(old);
        let (new_path, new_stamp) = file_name(new);
        self.pos += 2;
        let git = match self.section.as_mut().filter(|section| !section.has_file_header) {
            Some(section) => {
                section.check()?;
                section.has_file_header = true;
                Some((section.new_file, section.deleted_file))
            }
            None => None,
        };
        let name = new_path.as_deref().or(old_path.as_deref()).unwrap_or("/dev/null").to_owned();

        let mut hunks = Vec::new();
        while self.lines.get(self.pos).is_some_and(|line| line.starts_with("@@ ")) {
            hunks.push(self.hunk(converted)?);
        }
        let Some(last) = hunks.last() else {
            return Err(PatchError::Malformed {
                line: header_line + 2,
                reason: format!("the file header of {name} is not followed by a hunk header (`@@ -a,b +c,d @@`)"),
            });
        };
        if let Some(&next) = self.lines.get(self.pos) {
            let signature = matches!(bare(next), "-- " | "--");
            if !signature && self.file_header().is_none() && next.starts_with(['+', '-', ' ']) {
                return Err(PatchError::Malformed {
                    line: self.pos + 1,
                    reason: format!(
                        "this line follows hunk `{}` of {name}, whose line counts do not cover it (they are too small)",
                        last.header
                    ),
                });
            }
        }
        if let Some(early) = hunks.iter().rev().skip(1).find(|hunk| hunk.old_no_newline || hunk.new_no_newline) {
            return Err(PatchError::Malformed {
                line: early.diff_line,
                reason: format!(
                    "hunk `{}` of {name} ends the file (`\\ No newline at end of file`) but is not its last hunk",
                    early.header
                ),
            });
        }

        let (new_file, deleted_file) = match git {
            Some((new_file, deleted_file)) => (new_file || old_path.is_none(), deleted_file || new_path.is_none()),
            None => (
                old_path.is_none() || (is_epoch(old_stamp) && hunks.iter().all(|hunk| hunk.old_len == 0)),
                new_path.is_none() || (is_epoch(new_stamp) && hunks.iter().all(|hunk| hunk.new_len == 0)),
            ),
        };
        if new_file && deleted_file {
            return Err(PatchError::Malformed {
                line: header_line,
                reason: "the file header names no file on either side".to_owned(),
            });
        }
        self.files.push(FilePatch { old_path, new_path, hunks, new_file, deleted_file });
        Ok(())
    }

    /// Reads the hunk whose header is at the current line; `converted` tells whether to drop one carriage return
    /// from each of its lines.
    fn hunk(&mut self, converted: bool) -> Result<Hunk, PatchError> {
        let diff_line = self.pos + 1;
        let header = self.lines.get(self.pos).map_or("", |line| bare(line)).to_owned();
        let malformed = |line: usize, reason: String| PatchError::Malformed { line, reason };
        let Some((old_start, old_len, new_start, new_len)) = hunk_ranges(&header) else {
            return Err(malformed(diff_line, format!("`{header}` is not a hunk header of the form `@@ -a,b +c,d @@`")));
        };
        if old_len == 0 && new_len == 0 {
            return Err(malformed(diff_line, format!("hunk `{header}` covers no line")));
        }
        if (old_len > 0 && old_start == 0) || (new_len > 0 && new_start == 0) {
            return Err(malformed(diff_line, format!("hunk `{header}` starts at line 0")));
        }
        self.pos += 1;
        let mut hunk = Hunk {
            old_start,
            old_len,
            new_start,
            new_len,
            lines: Vec::new(),
            header,
            diff_line,
            old_no_newline: false,
            new_no_newline: false,
        };
        let (mut old_left, mut new_left) = (old_len, new_len);
        while old_left > 0 || new_left > 0 {
            let number = self.pos + 1;
            let Some(&raw) = self.lines.get(self.pos) else {
                return Err(malformed(
                    self.lines.len(),
                    format!(
                        "the diff ends inside hunk `{}`, which still expects {old_left} old and {new_left} new lines",
                        hunk.header
                    ),
                ));
            };
            let raw = if converted { raw.strip_suffix('\r').unwrap_or(raw) } else { raw };
            let line = if raw.is_empty() {
                // An empty context line whose space was lost to trailing white space removal.
                Line::Context(String::new())
            } else if let Some(text) = raw.strip_prefix(' ') {
                Line::Context(text.to_owned())
            } else if let Some(text) = raw.strip_prefix('-') {
                Line::Removed(text.to_owned())
            } else if let Some(text) = raw.strip_prefix('+') {
                Line::Added(text.to_owned())
            } else if raw.starts_with('\\') {
                hunk.mark_no_newline(number)?;
                self.pos += 1;
                continue;
            } else {
                return Err(malformed(
                    number,
                    format!(
                        "hunk `{}` still expects {old_left} old and {new_left} new lines, but this line does not start \
                         with ' ', '-', '+' or '\\' (the hunk's line counts may be too large)",
                        hunk.header
                    ),
                ));
            };
            let (takes_old, takes_new) = match line {
                Line::Context(_) => (true, true),
                Line::Removed(_) => (true, false),
                Line::Added(_) => (false, true),
            };
            if (takes_old && old_left == 0) || (takes_new && new_left == 0) {
                let side = if takes_old && old_left == 0 { "old" } else { "new" };
                return Err(malformed(
                    number,
                    format!("hunk `{}` has more {side} lines than its header counts", hunk.header),
                ));
            }
            if (takes_old && hunk.old_no_newline) || (takes_new && hunk.new_no_newline) {
                return Err(malformed(
                    number,
                    format!("hunk `{}` goes on after `\\ No newline at end of file`", hunk.header),
                ));
            }
            if takes_old {
                old_left -= 1;
            }
            if takes_new {
                new_left -= 1;
            }
            hunk.lines.push(line);
            self.pos += 1;
        }
        if self.lines.get(self.pos).is_some_and(|line| line.starts_with('\\')) {
            hunk.mark_no_newline(self.pos + 1)?;
            self.pos += 1;
        }
        Ok(hunk)
    }
}

/// The four numbers of a hunk header `@@ -a,b +c,d @@ ...` (a missing length is 1); `None` if it is not one.
fn hunk_ranges(header: &str) -> Option<(usize, usize, usize, usize)> {
    let (ranges, _) = header.strip_prefix("@@ -")?.split_once(" @@")?;
    let (old, new) = ranges.split_once(" +")?;
    let range = |text: &str| match text.split_once(',') {
        Some((start, len)) => Some((number(start)?, number(len)?)),
        None => Some((number(text)?, 1)),
    };
    let ((old_start, old_len), (new_start, new_len)) = (range(old)?, range(new)?);
    Some((old_start, old_len, new_start, new_len))
}

/// A decimal number of digits only.
fn number(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The path and the time stamp of a `---`/`+++` header's name field: the path (unquoted if git quoted it) up to a
/// tab, `None` for `/dev/null`, and whatever follows it.
fn file_name(field: &str) -> (Option<String>, &str) {
    let (path, stamp) = match unquote(field) {
        Some((path, rest)) => (path, rest.trim_start()),
        None => {
            let (path, stamp) = field.split_once('\t').unwrap_or((field, ""));
            (path.trim_end().to_owned(), stamp)
        }
    };
    ((path != "/dev/null").then_some(path), stamp)
}

/// Whether a time stamp of `diff` is the epoch, which `diff -N` gives a file that does not exist (in any time zone).
fn is_epoch(stamp: &str) -> bool {
    stamp.starts_with("1970-01-01 ") || stamp.starts_with("1969-12-31 ")
}

/// The value of a `rename from`-like line: a path, unquoted if git quoted it.
fn path_value(text: &str) -> String {
    unquote(text).map_or_else(|| text.to_owned(), |(path, _)| path)
}

/// The old and new paths of a `diff --git` line's names, as written (quoted names unquoted).
///
/// Unquoted names may hold spaces, so the split is at the space after which the same path follows under another
/// prefix; renames name their paths again in lines of their own.
fn git_names(names: &str) -> (String, String) {
    if let Some((old, rest)) = unquote(names) {
        return (old, path_value(rest.trim_start()));
    }
    let same_path = |at: usize| {
        let (old, new) = (names.get(..at), names.get(at + 1..));
        old == new || old.and_then(|old| strip_components(old, 1)) == new.and_then(|new| strip_components(new, 1))
    };
    let spaces = || names.match_indices(' ').map(|(at, _)| at);
    let split = spaces().find(|&at| same_path(at)).or_else(|| names.find(" \"")).or_else(|| spaces().next());
    match split.and_then(|at| Some((names.get(..at)?, names.get(at + 1..)?))) {
        Some((old, new)) => (old.to_owned(), path_value(new)),
        None => (names.to_owned(), names.to_owned()),
    }
}

/// The file named by a `Binary files A and B differ` line (B, or A if B is `/dev/null`); `None` for other lines.
fn binary_files(line: &str) -> Option<String> {
    let names = line.strip_prefix("Binary files ")?.strip_suffix(" differ")?;
    let (old, new) = names.split_once(" and ")?;
    Some(if new == "/dev/null" { old } else { new }.to_owned())
}

/// A C-style quoted string at the start of `text`, as git quotes unusual paths, and the text after it; `None` if
/// `text` does not start with a complete quoted string.
fn unquote(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let bytes = body.as_bytes();
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            b'"' => return Some((String::from_utf8_lossy(&out).into_owned(), body.get(at + 1..)?)),
            b'\\' => {
                let escaped = *bytes.get(at + 1)?;
                at += 2;
                out.push(match escaped {
                    b'0'..=b'7' => {
                        let digits = bytes.get(at - 1..at + 2)?;
                        at += 2;
                        let value = digits.iter().try_fold(0u32, |value, &digit| {
                            (b'0'..=b'7').contains(&digit).then(|| value * 8 + u32::from(digit - b'0'))
                        })?;
                        u8::try_from(value).ok()?
                    }
                    b'a' => 7,
                    b'b' => 8,
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'v' => 11,
                    b'f' => 12,
                    b'r' => b'\r',
                    other => other,
                });
            }
            _ => {
                out.push(byte);
                at += 1;
            }
        }
    }
    None
}

/// `path` with `strip` leading components removed as `patch -pN` does (runs of slashes count as one); `None` if
/// nothing is left.
fn strip_components(path: &str, strip: usize) -> Option<&str> {
    let mut rest = path;
    for _ in 0..strip {
        rest = rest.split_once('/')?.1.trim_start_matches('/');
    }
    (!rest.is_empty()).then_some(rest)
}

/// The subject of the fix: the `Subject:` of a mail header at the start of the text, or the title of a `git show`
/// commit; `None` when the text starts with neither.
fn subject(lines: &[&str]) -> Option<String> {
    let start = lines.iter().position(|line| !bare(line).is_empty())?;
    let lines = lines.get(start..)?;
    let mut header = lines.iter().map(|line| bare(line)).take_while(|line| !line.is_empty());
    let first = header.next()?;
    if first.strip_prefix("commit ").is_some_and(|rest| {
        let id = rest.split(' ').next().unwrap_or_default();
        id.len() >= 7 && id.bytes().all(|byte| byte.is_ascii_hexdigit())
    }) {
        return commit_title(lines);
    }
    // A mail header: an mbox `From ` line, then `Name: value` fields, each perhaps folded onto indented lines.
    let mut subject: Option<Vec<&str>> = None;
    let mut in_subject = false;
    for (index, line) in std::iter::once(first).chain(header).enumerate() {
        if index > 0 && line.starts_with([' ', '\t']) {
            if let Some(pieces) = subject.as_mut().filter(|_| in_subject) {
                pieces.push(line.trim());
            }
            continue;
        }
        in_subject = false;
        if index == 0 && line.starts_with("From ") {
            continue;
        }
        let (name, value) = line.split_once(':')?;
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
            return None;
        }
        if name.eq_ignore_ascii_case("Subject") && subject.is_none() {
            subject = Some(vec![value.trim()]);
            in_subject = true;
        }
    }
    let joined = subject?.into_iter().filter(|piece| !piece.is_empty()).collect::<Vec<_>>().join(" ");
    Some(without_patch_tags(&joined)).filter(|subject| !subject.is_empty())
}

/// The title of a `git show` commit: its message's first paragraph, lines joined with a space.
fn commit_title(lines: &[&str]) -> Option<String> {
    let message = lines.iter().map(|line| bare(line)).skip_while(|line| !line.is_empty());
    let title: Vec<&str> = message
        .skip_while(|line| line.trim().is_empty())
        .take_while(|line| line.starts_with("    ") && !line.trim().is_empty())
        .map(str::trim)
        .collect();
    Some(without_patch_tags(&title.join(" "))).filter(|title| !title.is_empty())
}

/// A subject without its leading `[PATCH ...]` tags (any bracketed tag that mentions PATCH, such as `[RFC PATCH v2
/// 1/3]`).
fn without_patch_tags(subject: &str) -> String {
    let mut rest = subject.trim();
    while let Some((tag, after)) = rest.strip_prefix('[').and_then(|tagged| tagged.split_once(']')) {
        if !tag.to_ascii_uppercase().contains("PATCH") {
            break;
        }
        rest = after.trim_start();
    }
    rest.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbered lines `line1` to `lineN`, each ending in a newline.
    fn numbered(count: usize) -> String {
        (1..=count).map(|n| format!("line{n}\n")).collect()
    }

    /// The single file of a diff.
    fn only_file(text: &str) -> FilePatch {
        let mut patch = parse(text).expect("the diff parses");
        assert_eq!(patch.files.len(), 1, "{patch:?}");
        patch.files.remove(0)
    }

    /// The error of a diff that does not parse.
    fn parse_error(text: &str) -> PatchError {
        parse(text).expect_err("the diff is refused")
    }

    const GIT_DIFF: &str = "diff --git a/kernel/time/time.c b/kernel/time/time.c
index 1b2c3d4..5e6f7a8 100644
--- a/kernel/time/time.c
+++ b/kernel/time/time.c
@@ -3,7 +3,7 @@ int do_sys_settimeofday64(void)
 line3
 line4
 line5
-line6
+line6 fixed
 line7
 line8
 line9
";

    const FORMAT_PATCH: &str = "From 0123456789abcdef0123456789abcdef01234567 Mon Sep 17 00:00:00 2001
From: Jane Doe <jane@example.org>
Date: Mon, 1 Jan 2024 10:00:00 +0000
Subject: [PATCH 1/2] time: Fix off-by-one in settimeofday() usec
 validation

The check let 1000000 microseconds through.
--- this prose line starts with three dashes, but no `+++ ` line follows it,
so it is prose,
+++ and so is this one, which follows no `--- ` line.

Signed-off-by: Jane Doe <jane@example.org>
---
 kernel/time/time.c | 2 +-
 1 file changed, 1 insertion(+), 1 deletion(-)

diff --git a/kernel/time/time.c b/kernel/time/time.c
index 1b2c3d4..5e6f7a8 100644
--- a/kernel/time/time.c
+++ b/kernel/time/time.c
@@ -10,3 +10,3 @@ static int check(void)
 line10
-line11
+line11 fixed
 line12
-- 
2.39.2

";

    const DIFF_NUPR: &str = "diff -Nupr a/fs/x.c b/fs/x.c
--- a/fs/x.c\t2024-01-01 10:00:00.000000000 +0000
+++ b/fs/x.c\t2024-01-02 11:00:00.000000000 +0000
@@ -2,3 +2,4 @@ static int foo(void)
 line2
+inserted
 line3
 line4
diff -Nupr a/fs/new.c b/fs/new.c
--- a/fs/new.c\t1970-01-01 00:00:00.000000000 +0000
+++ b/fs/new.c\t2024-01-02 11:00:00.000000000 +0000
@@ -0,0 +1,2 @@
+int new;
+int other;
diff -Nupr a/fs/gone.c b/fs/gone.c
--- a/fs/gone.c\t2024-01-01 10:00:00.000000000 +0000
+++ b/fs/gone.c\t1970-01-01 01:00:00.000000000 +0100
@@ -1 +0,0 @@
-int gone;
";

    #[test]
    fn git_diff() {
        let patch = parse(GIT_DIFF).unwrap();
        assert_eq!(patch.subject, None);
        let [file] = patch.files.as_slice() else { panic!("one file: {patch:?}") };
        assert_eq!(file.old_path.as_deref(), Some("a/kernel/time/time.c"));
        assert_eq!(file.new_path.as_deref(), Some("b/kernel/time/time.c"));
        assert!(!file.is_new_file() && !file.is_deleted_file());
        let [hunk] = file.hunks.as_slice() else { panic!("one hunk") };
        assert_eq!((hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len), (3, 7, 3, 7));
        assert_eq!(hunk.header, "@@ -3,7 +3,7 @@ int do_sys_settimeofday64(void)");
        assert_eq!(hunk.lines[0], Line::Context("line3".to_owned()));
        assert_eq!(hunk.lines[3], Line::Removed("line6".to_owned()));
        assert_eq!(hunk.lines[4], Line::Added("line6 fixed".to_owned()));
        assert_eq!(hunk.lines.len(), 8);
        let (new, touched) = file.apply_with_lines(&numbered(12)).unwrap();
        assert_eq!(new, numbered(12).replace("line6\n", "line6 fixed\n"));
        assert_eq!(touched, [6]);
    }

    #[test]
    fn format_patch() {
        let patch = parse(FORMAT_PATCH).unwrap();
        assert_eq!(patch.subject.as_deref(), Some("time: Fix off-by-one in settimeofday() usec validation"));
        let [file] = patch.files.as_slice() else { panic!("one file: {patch:?}") };
        assert_eq!(file.path(1).as_deref(), Some("kernel/time/time.c"));
        assert_eq!(file.hunks.len(), 1);
        assert_eq!(file.hunks[0].lines.len(), 4);
        assert_eq!(file.apply(&numbered(13)).unwrap(), numbered(13).replace("line11\n", "line11 fixed\n"));
    }

    #[test]
    fn a_dashes_and_pluses_pair_in_prose_is_a_file_header() {
        // Only a `--- ` line followed by a `+++ ` line is a file header, and a hunk must follow it.
        let text = format!("Subject: [PATCH] x\n\nbody\n--- a\nprose\n--- b\n+++ c\nprose\n---\n{GIT_DIFF}");
        assert!(matches!(parse_error(&text), PatchError::Malformed { line: 8, .. }));
        let text = format!("Subject: [PATCH] x\n\nbody\n--- a\nprose\n+++ c\n---\n{GIT_DIFF}");
        let patch = parse(&text).unwrap();
        assert_eq!(patch.subject.as_deref(), Some("x"));
        assert_eq!(patch.files.len(), 1);
    }

    #[test]
    fn diff_nupr() {
        let patch = parse(DIFF_NUPR).unwrap();
        assert_eq!(patch.subject, None);
        let [changed, created, deleted] = patch.files.as_slice() else { panic!("three files: {patch:?}") };

        assert_eq!(changed.old_path.as_deref(), Some("a/fs/x.c"));
        assert_eq!(changed.new_path.as_deref(), Some("b/fs/x.c"));
        assert!(!changed.is_new_file() && !changed.is_deleted_file());
        assert_eq!(changed.hunks[0].header, "@@ -2,3 +2,4 @@ static int foo(void)");
        let (new, touched) = changed.apply_with_lines(&numbered(5)).unwrap();
        assert_eq!(new, "line1\nline2\ninserted\nline3\nline4\nline5\n");
        assert_eq!(touched, [3]);

        assert_eq!(created.old_path.as_deref(), Some("a/fs/new.c"));
        assert!(created.is_new_file() && !created.is_deleted_file());
        assert_eq!(created.path(1).as_deref(), Some("fs/new.c"));
        assert_eq!(created.apply("").unwrap(), "int new;\nint other;\n");

        assert!(deleted.is_deleted_file() && !deleted.is_new_file());
        assert_eq!(deleted.hunks[0].old_len, 1);
        assert_eq!(deleted.path(1).as_deref(), Some("fs/gone.c"));
        assert_eq!(deleted.apply("int gone;\n").unwrap(), "");
    }

    #[test]
    fn omitted_lengths() {
        let file = only_file("--- a/f.c\n+++ b/f.c\n@@ -5 +5 @@\n-line5\n+LINE5\n");
        let hunk = &file.hunks[0];
        assert_eq!((hunk.old_start, hunk.old_len, hunk.new_start, hunk.new_len), (5, 1, 5, 1));
        assert_eq!(file.apply(&numbered(7)).unwrap(), numbered(7).replace("line5", "LINE5"));
    }

    #[test]
    fn pure_insertion_without_context() {
        let file = only_file("--- a/f.c\n+++ b/f.c\n@@ -2,0 +3,2 @@\n+new1\n+new2\n");
        let (new, touched) = file.apply_with_lines(&numbered(3)).unwrap();
        assert_eq!(new, "line1\nline2\nnew1\nnew2\nline3\n");
        assert_eq!(touched, [3, 4]);
    }

    #[test]
    fn removal_lines() {
        let diff = "--- a/f.c\n+++ b/f.c\n@@ -1,6 +1,3 @@\n line1\n-line2\n-line3\n line4\n-line5\n line6\n";
        let (new, touched) = only_file(diff).apply_with_lines(&numbered(6)).unwrap();
        assert_eq!(new, "line1\nline4\nline6\n");
        // line2 and line3 were removed before new line 2 (line4), line5 before new line 3 (line6).
        assert_eq!(touched, [2, 3]);

        let at_end = "--- a/f.c\n+++ b/f.c\n@@ -2,2 +2 @@\n line2\n-line3\n";
        let (new, touched) = only_file(at_end).apply_with_lines(&numbered(3)).unwrap();
        assert_eq!(new, "line1\nline2\n");
        assert_eq!(touched, [3]);
    }

    #[test]
    fn apply_at_an_offset() {
        let file = only_file(GIT_DIFF);
        let old = "extra\n".repeat(5) + &numbered(12);
        let (new, touched) = file.apply_with_lines(&old).unwrap();
        assert_eq!(new, old.replace("line6\n", "line6 fixed\n"));
        assert_eq!(touched, [11]);

        // Lines missing before the hunk move it up.
        let old = numbered(12).replacen("line1\nline2\n", "", 1);
        let (new, touched) = file.apply_with_lines(&old).unwrap();
        assert_eq!(new, old.replace("line6\n", "line6 fixed\n"));
        assert_eq!(touched, [4]);
    }

    #[test]
    fn apply_picks_the_nearest_place_later_first_on_a_tie() {
        let file = only_file("--- a/f\n+++ b/f\n@@ -10,3 +10,3 @@\n a\n-b\n+B\n c\n");
        let lines = |places: &[usize]| {
            let mut lines = vec!["x"; 20];
            for &at in places {
                lines[at..at + 3].copy_from_slice(&["a", "b", "c"]);
            }
            lines.iter().map(|line| format!("{line}\n")).collect::<String>()
        };
        let nearest = |text: &str| text.lines().position(|line| line == "B");
        // Offsets -5 and +3: +3 wins.
        assert_eq!(nearest(&file.apply(&lines(&[4, 12])).unwrap()), Some(13));
        // Offsets -2 and +2: the later one wins, as in GNU patch.
        assert_eq!(nearest(&file.apply(&lines(&[7, 11])).unwrap()), Some(12));
    }

    #[test]
    fn later_hunks_start_from_the_earlier_offset() {
        let diff = "--- a/f\n+++ b/f\n@@ -2,3 +2,3 @@\n line2\n-line3\n+LINE3\n line4\n\
                    @@ -20,3 +20,3 @@\n p\n-q\n+Q\n r\n";
        let file = only_file(diff);
        let mut lines: Vec<String> = (1..=40).map(|n| format!("line{n}")).collect();
        // `p q r` at the second hunk's stated place (0-based 19 of the source) and 5 lines later; with 5 extra lines
        // on top the first hunk is found at +5, so the second is looked for at +5 first.
        for at in [14, 19] {
            lines.splice(at..at + 3, ["p", "q", "r"].map(str::to_owned));
        }
        let old = "extra\n".repeat(5) + &lines.iter().map(|line| format!("{line}\n")).collect::<String>();
        let (new, touched) = file.apply_with_lines(&old).unwrap();
        let new: Vec<&str> = new.lines().collect();
        assert_eq!(new[7], "LINE3");
        assert_eq!(new.iter().position(|&line| line == "Q"), Some(25));
        assert_eq!(new.iter().filter(|&&line| line == "q").count(), 1);
        assert_eq!(touched, [8, 26]);
    }

    #[test]
    fn hunk_at_line_one_with_short_leading_context_must_apply_at_the_start() {
        let file = only_file("--- a/f\n+++ b/f\n@@ -1,3 +1,4 @@\n+first\n line1\n line2\n line3\n");
        assert_eq!(file.apply(&numbered(3)).unwrap(), "first\nline1\nline2\nline3\n");
        let err = file.apply(&("extra\n".to_owned() + &numbered(3))).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    }

    #[test]
    fn apply_failure_names_the_file_and_hunk() {
        let file = only_file(GIT_DIFF);
        let err = file.apply(&numbered(12).replace("line5\n", "line5 changed\n")).unwrap_err();
        assert_eq!(
            err,
            PatchError::HunkFailed {
                file: "b/kernel/time/time.c".to_owned(),
                header: "@@ -3,7 +3,7 @@ int do_sys_settimeofday64(void)".to_owned(),
                line: 5,
            }
        );
        let message = err.to_string();
        assert!(message.contains("b/kernel/time/time.c"), "{message}");
        assert!(message.contains("`@@ -3,7 +3,7 @@ int do_sys_settimeofday64(void)`"), "{message}");
        assert!(message.contains("another version"), "{message}");
        // Too short a file fails too, rather than panicking.
        assert!(matches!(file.apply("line3\n"), Err(PatchError::HunkFailed { .. })));
        assert!(matches!(file.apply(""), Err(PatchError::HunkFailed { .. })));
    }

    #[test]
    fn overlapping_hunks_do_not_apply_twice_to_the_same_lines() {
        let diff = "--- a/f\n+++ b/f\n@@ -2,1 +2,1 @@\n-line2\n+two\n@@ -2,1 +2,1 @@\n-line2\n+deux\n";
        let err = only_file(diff).apply(&numbered(3)).unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { line: 6, .. }), "{err}");
    }

    #[test]
    fn no_newline_at_end() {
        let drop_newline = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+b\n\\ No newline at end of file\n";
        assert_eq!(only_file(drop_newline).apply("a\nb\n").unwrap(), "a\nb");

        let add_newline = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n\\ No newline at end of file\n+b\n";
        assert_eq!(only_file(add_newline).apply("a\nb").unwrap(), "a\nb\n");

        let neither = "--- a/f\n+++ b/f\n@@ -1,2 +1,3 @@\n+z\n a\n b\n\\ No newline at end of file\n";
        let (new, touched) = only_file(neither).apply_with_lines("a\nb").unwrap();
        assert_eq!(new, "z\na\nb");
        assert_eq!(touched, [1]);

        let both_changed = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-old\n\\ No newline at end of file\n+new\n\
                            \\ No newline at end of file\n";
        assert_eq!(only_file(both_changed).apply("old").unwrap(), "new");

        // A hunk that ends the file must apply at its end.
        let err = only_file(drop_newline).apply("a\nb\nc\n").unwrap_err();
        assert!(matches!(err, PatchError::HunkFailed { .. }), "{err}");
    }

    #[test]
    fn no_newline_marker_only_in_the_last_hunk() {
        let diff = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n+A\n\\ No newline at end of file\n@@ -3 +3 @@\n-c\n+C\n";
        assert!(matches!(parse_error(diff), PatchError::Malformed { line: 3, .. }));
        let first = "--- a/f\n+++ b/f\n@@ -1 +1 @@\n\\ No newline at end of file\n-a\n+A\n";
        assert!(matches!(parse_error(first), PatchError::Malformed { line: 4, .. }));
        let goes_on = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n-a\n\\ No newline at end of file\n b\n+A\n";
        assert!(matches!(parse_error(goes_on), PatchError::Malformed { line: 6, .. }));
    }

    #[test]
    fn new_file_git() {
        let diff = "diff --git a/fs/new.c b/fs/new.c
new file mode 100644
index 0000000..1111111
--- /dev/null
+++ b/fs/new.c
@@ -0,0 +1,2 @@
+int a;
+int b;
";
        let file = only_file(diff);
        assert!(file.is_new_file() && !file.is_deleted_file());
        assert_eq!(file.old_path, None);
        assert_eq!(file.path(1).as_deref(), Some("fs/new.c"));
        let (new, touched) = file.apply_with_lines("").unwrap();
        assert_eq!(new, "int a;\nint b;\n");
        assert_eq!(touched, [1, 2]);
        assert_eq!(file.apply("int x;\n").unwrap_err(), PatchError::FileExists { file: "b/fs/new.c".to_owned() });

        let no_newline = only_file("--- /dev/null\n+++ b/x\n@@ -0,0 +1 @@\n+x\n\\ No newline at end of file\n");
        assert_eq!(no_newline.apply("").unwrap(), "x");
    }

    #[test]
    fn empty_new_and_deleted_files_git() {
        let diff = "diff --git a/fs/empty.h b/fs/empty.h
new file mode 100644
index 0000000..e69de29
diff --git a/fs/void.h b/fs/void.h
deleted file mode 100644
index e69de29..0000000
";
        let patch = parse(diff).unwrap();
        let [created, deleted] = patch.files.as_slice() else { panic!("two files: {patch:?}") };
        assert!(created.is_new_file() && created.hunks.is_empty());
        assert_eq!((created.old_path.as_deref(), created.new_path.as_deref()), (None, Some("b/fs/empty.h")));
        assert_eq!(created.apply("").unwrap(), "");
        assert!(deleted.is_deleted_file());
        assert_eq!(deleted.path(1).as_deref(), Some("fs/void.h"));
        assert_eq!(deleted.apply("").unwrap(), "");
    }

    #[test]
    fn deleted_file_git() {
        let diff = "diff --git a/fs/old.c b/fs/old.c
deleted file mode 100644
index 1111111..0000000
--- a/fs/old.c
+++ /dev/null
@@ -1,2 +0,0 @@
-int a;
-int b;
";
        let file = only_file(diff);
        assert!(file.is_deleted_file() && !file.is_new_file());
        assert_eq!(file.new_path, None);
        assert_eq!(file.path(1).as_deref(), Some("fs/old.c"));
        let (new, touched) = file.apply_with_lines("int a;\nint b;\n").unwrap();
        assert_eq!(new, "");
        assert_eq!(touched, [1]);
        let err = file.apply("int a;\nint b;\nint c;\n").unwrap_err();
        assert_eq!(err, PatchError::NotWhollyDeleted { file: "a/fs/old.c".to_owned() });
    }

    #[test]
    fn crlf_lines_apply_to_crlf_files() {
        let diff = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\r\n-b\r\n+B\r\n c\r\n";
        let file = only_file(diff);
        assert_eq!(file.hunks[0].lines[1], Line::Removed("b\r".to_owned()));
        assert_eq!(file.apply("a\r\nb\r\nc\r\n").unwrap(), "a\r\nB\r\nc\r\n");
        // The same lines with bare newlines are other lines.
        assert!(matches!(file.apply("a\nb\nc\n"), Err(PatchError::HunkFailed { .. })));
        assert!(only_file(&diff.replace('\r', "")).apply("a\r\nb\r\nc\r\n").is_err());
    }

    #[test]
    fn a_diff_converted_to_crlf_applies_to_lf_files() {
        let diff = GIT_DIFF.replace('\n', "\r\n");
        let file = only_file(&diff);
        assert_eq!(file.new_path.as_deref(), Some("b/kernel/time/time.c"));
        assert_eq!(file.hunks[0].header, "@@ -3,7 +3,7 @@ int do_sys_settimeofday64(void)");
        assert_eq!(file.apply(&numbered(12)).unwrap(), numbered(12).replace("line6\n", "line6 fixed\n"));
        let mail = FORMAT_PATCH.replace('\n', "\r\n");
        let patch = parse(&mail).unwrap();
        assert_eq!(patch.subject.as_deref(), Some("time: Fix off-by-one in settimeofday() usec validation"));
    }

    #[test]
    fn empty_context_line() {
        // A context line whose single space was stripped as trailing white space.
        let file = only_file("--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n\n-b\n+B\n");
        assert_eq!(file.hunks[0].lines[1], Line::Context(String::new()));
        assert_eq!(file.apply("a\n\nb\n").unwrap(), "a\n\nB\n");
    }

    #[test]
    fn paths_and_strip() {
        let file = only_file(GIT_DIFF);
        assert_eq!(file.path(0).as_deref(), Some("b/kernel/time/time.c"));
        assert_eq!(file.path(1).as_deref(), Some("kernel/time/time.c"));
        assert_eq!(file.path(3).as_deref(), Some("time.c"));
        assert_eq!(file.path(4), None);
        assert_eq!(strip_components("a//b/c", 1), Some("b/c"));
        assert_eq!(strip_components("/usr/x", 1), Some("usr/x"));
        assert_eq!(strip_components("a/", 1), None);
    }

    #[test]
    fn quoted_paths() {
        let diff = "diff --git \"a/dir/sp ace.c\" \"b/dir/sp ace.c\"
index 1..2 100644
--- \"a/dir/sp ace.c\"
+++ \"b/dir/caf\\303\\251 \\\"q\\\".c\"
@@ -1 +1 @@
-x
+y
";
        let file = only_file(diff);
        assert_eq!(file.old_path.as_deref(), Some("a/dir/sp ace.c"));
        assert_eq!(file.path(1).as_deref(), Some("dir/café \"q\".c"));
        assert_eq!(
            git_names("a/dir/sp ace.c b/dir/sp ace.c"),
            ("a/dir/sp ace.c".to_owned(), "b/dir/sp ace.c".to_owned())
        );
        assert_eq!(unquote("\"a\\tb\" rest"), Some(("a\tb".to_owned(), " rest")));
        assert_eq!(unquote("\"unterminated"), None);
        assert_eq!(unquote("\"bad\\9\""), Some(("bad9".to_owned(), "")));
        assert_eq!(unquote("\"short\\30\""), None);
    }

    #[test]
    fn strip_level_detection() {
        let existing = ["kernel/time/time.c", "fs/x.c", "fs/gone.c", "fs"];
        let exists = |path: &str| existing.contains(&path);
        assert_eq!(strip_level(&parse(GIT_DIFF).unwrap(), exists), Some(1));
        assert_eq!(strip_level(&parse(DIFF_NUPR).unwrap(), exists), Some(1));
        let p0 = GIT_DIFF.replace("a/kernel", "kernel").replace("b/kernel", "kernel");
        assert_eq!(strip_level(&parse(&p0).unwrap(), exists), Some(0));
        let p2 = GIT_DIFF.replace("a/kernel", "x/y/kernel").replace("b/kernel", "x/y/kernel");
        assert_eq!(strip_level(&parse(&p2).unwrap(), exists), Some(2));
        assert_eq!(strip_level(&parse(GIT_DIFF).unwrap(), |_| false), None);

        // New files only: their top directory must exist.
        let created = "--- /dev/null\n+++ b/fs/new.c\n@@ -0,0 +1 @@\n+x\n";
        assert_eq!(strip_level(&parse(created).unwrap(), exists), Some(1));
        // A new file in a new top directory alongside a changed file: placed by the changed file.
        let mixed = format!("{GIT_DIFF}--- /dev/null\n+++ b/newdir/new.c\n@@ -0,0 +1 @@\n+x\n");
        assert_eq!(strip_level(&parse(&mixed).unwrap(), exists), Some(1));
    }

    #[test]
    fn subjects() {
        let mail = |subject: &str| {
            format!("From 0123 Mon Sep 17 00:00:00 2001\nFrom: A <a@b>\n{subject}\n\nBody\n---\n{GIT_DIFF}")
        };
        let subject_of = |subject: &str| parse(&mail(subject)).unwrap().subject;
        assert_eq!(subject_of("Subject: [PATCH] time: Fix it"), Some("time: Fix it".to_owned()));
        assert_eq!(subject_of("Subject: [PATCH v2 1/2] mm:\n  fix\n\tthe thing"), Some("mm: fix the thing".to_owned()));
        assert_eq!(subject_of("Subject: [RFC PATCH 3/7] [PATCH] net: x"), Some("net: x".to_owned()));
        assert_eq!(subject_of("Subject: [media] foo: bar"), Some("[media] foo: bar".to_owned()));
        assert_eq!(subject_of("Subject: x: y\nX-Folded: a\n b"), Some("x: y".to_owned()));
        assert_eq!(subject_of("Subject:\n [PATCH] folded right away"), Some("folded right away".to_owned()));
        assert_eq!(subject_of("X-Mailer: none"), None);
        assert_eq!(parse(&format!("\n\n{}", mail("Subject: [PATCH] late"))).unwrap().subject.as_deref(), Some("late"));

        let show = format!(
            "commit 0123456789abcdef0123456789abcdef01234567\nAuthor: A <a@b>\nDate:   Mon Jan 1 2024\n\n    \
             time: Fix the\n    usec check\n\n    Body.\n\n{GIT_DIFF}"
        );
        assert_eq!(parse(&show).unwrap().subject.as_deref(), Some("time: Fix the usec check"));
    }

    #[test]
    fn no_changes() {
        assert_eq!(parse_error(""), PatchError::NoChanges);
        assert_eq!(parse_error("just some text\n--- a\nno header\n"), PatchError::NoChanges);
        let without_diff = FORMAT_PATCH.split("diff --git").next().unwrap();
        assert_eq!(parse_error(without_diff), PatchError::NoChanges);
        assert_eq!(PatchError::NoChanges.to_string(), "the diff changes no file");
    }

    #[test]
    fn binary_diffs_are_refused() {
        let git = "diff --git a/fw/blob.bin b/fw/blob.bin\nindex 1..2 100644\nGIT binary patch\nliteral 5\nzcmV\n";
        let err = parse_error(git);
        assert_eq!(err, PatchError::Binary { file: "b/fw/blob.bin".to_owned(), line: 3 });
        assert_eq!(
            err.to_string(),
            "line 3 of the diff: binary diff of b/fw/blob.bin: a live patch is built from source changes only"
        );
        let plain = format!("{GIT_DIFF}Binary files a/fw/x.bin and /dev/null differ\n");
        assert_eq!(parse_error(&plain), PatchError::Binary { file: "a/fw/x.bin".to_owned(), line: 14 });
    }

    #[test]
    fn renames_and_copies_are_refused() {
        let rename =
            "diff --git a/fs/old.c b/fs/new.c\nsimilarity index 100%\nrename from fs/old.c\nrename to fs/new.c\n";
        let err = parse_error(rename);
        assert_eq!(err, PatchError::Rename { from: "fs/old.c".to_owned(), to: "fs/new.c".to_owned(), line: 1 });
        assert!(err.to_string().contains("fs/old.c to fs/new.c"), "{err}");

        let with_hunk = "diff --git a/fs/old.c b/fs/new.c\nsimilarity index 90%\nrename from fs/old.c\n\
                         rename to fs/new.c\nindex 1..2 100644\n--- a/fs/old.c\n+++ b/fs/new.c\n@@ -1 +1 @@\n-a\n+b\n";
        assert!(matches!(parse_error(with_hunk), PatchError::Rename { .. }));

        let copy = format!("{GIT_DIFF}diff --git a/x.c b/y.c\nsimilarity index 100%\ncopy from x.c\ncopy to y.c\n");
        assert_eq!(parse_error(&copy), PatchError::Copy { from: "x.c".to_owned(), to: "y.c".to_owned(), line: 14 });

        let similar = "diff --git a/p.c b/q.c\nsimilarity index 95%\n--- a/p.c\n+++ b/q.c\n@@ -1 +1 @@\n-a\n+b\n";
        let err = parse_error(similar);
        assert_eq!(err, PatchError::Rename { from: "a/p.c".to_owned(), to: "b/q.c".to_owned(), line: 1 });
    }

    #[test]
    fn mode_changes_are_refused() {
        let only_mode = "diff --git a/scripts/x.sh b/scripts/x.sh\nold mode 100644\nnew mode 100755\n";
        let err = parse_error(only_mode);
        assert_eq!(err, PatchError::ModeChange { file: "b/scripts/x.sh".to_owned(), line: 1 });
        assert!(err.to_string().contains("mode of b/scripts/x.sh"), "{err}");
        let with_change = format!(
            "diff --git a/k.c b/k.c\nold mode 100644\nnew mode 100755\n{}",
            GIT_DIFF.split_once('\n').unwrap().1
        );
        assert!(matches!(parse_error(&with_change), PatchError::ModeChange { .. }));
    }

    #[test]
    fn malformed_hunks_are_refused() {
        let too_few_lines = "--- a/f\n+++ b/f\n@@ -1,3 +1,3 @@\n a\n-b\n+B\ndiff --git a/g b/g\n";
        let err = parse_error(too_few_lines);
        assert!(matches!(err, PatchError::Malformed { line: 7, .. }), "{err}");
        assert!(err.to_string().starts_with("line 7 of the diff: hunk `@@ -1,3 +1,3 @@` still expects"), "{err}");

        let too_many_lines = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n-b\n+B\n c\n";
        assert!(matches!(parse_error(too_many_lines), PatchError::Malformed { line: 7, .. }));
        let too_many_added = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n+A\n+B\n-b\n";
        assert!(matches!(parse_error(too_many_added), PatchError::Malformed { line: 6, .. }));

        let unknown_marker = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n*b\n";
        assert!(matches!(parse_error(unknown_marker), PatchError::Malformed { line: 5, .. }));

        let ends_early = "--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n";
        assert!(matches!(parse_error(ends_early), PatchError::Malformed { line: 4, .. }));

        let no_hunk = "--- a/f\n+++ b/f\nsomething else\n";
        assert!(matches!(parse_error(no_hunk), PatchError::Malformed { line: 3, .. }));

        for header in ["@@ -x +1 @@", "@@ -1,2 +1,2", "@@ -0,1 +1 @@", "@@ -1,0 +1,0 @@", "@@ -+1 +1 @@"] {
            let text = format!("--- a/f\n+++ b/f\n{header}\n a\n");
            assert!(matches!(parse_error(&text), PatchError::Malformed { line: 3, .. }), "{header}");
        }
        let huge = "--- a/f\n+++ b/f\n@@ -99999999999999999999 +1 @@\n-a\n+b\n";
        assert!(matches!(parse_error(huge), PatchError::Malformed { line: 3, .. }));
        let far = only_file("--- a/f\n+++ b/f\n@@ -9999999999999,1 +9999999999999,1 @@\n-a\n+b\n");
        assert_eq!(far.apply("x\na\n").unwrap(), "x\nb\n");
    }

    #[test]
    fn messages_are_one_line() {
        let errors = [
            parse_error("--- a/f\n+++ b/f\n@@ -1,2 +1,2 @@\n a\n"),
            parse_error("diff --git a/x b/x\nold mode 100644\nnew mode 100755\n"),
            only_file(GIT_DIFF).apply("").unwrap_err(),
            PatchError::FileExists { file: "f".to_owned() },
            PatchError::NotWhollyDeleted { file: "f".to_owned() },
        ];
        for error in errors {
            let message = error.to_string();
            assert!(!message.contains('\n') && !message.is_empty(), "{message}");
        }
    }

    #[test]
    fn series_keeps_files_in_order() {
        let second = FORMAT_PATCH.replace("[PATCH 1/2] time", "[PATCH 2/2] other").replace("line11 fixed", "again");
        let patch = parse(&format!("{FORMAT_PATCH}{second}")).unwrap();
        assert_eq!(patch.subject.as_deref(), Some("time: Fix off-by-one in settimeofday() usec validation"));
        assert_eq!(patch.files.len(), 2);
        assert_eq!(patch.files[1].hunks[0].lines[2], Line::Added("again".to_owned()));
    }

    #[test]
    fn no_input_panics() {
        let samples = [GIT_DIFF, FORMAT_PATCH, DIFF_NUPR, "--- a/f\n+++ b/f\n@@ -1 +1 @@\n-a\n\\ x\n+b\n\\ y\n"];
        let sources = [String::new(), numbered(20), "a\nb".to_owned(), "é\r\n".repeat(3)];
        for sample in samples {
            let lines: Vec<&str> = sample.split_inclusive('\n').collect();
            let mut variants: Vec<String> = (0..=sample.len())
                .filter(|&end| sample.is_char_boundary(end))
                .map(|end| sample[..end].to_owned())
                .collect();
            for skip in 0..lines.len() {
                let mut without = lines.clone();
                without.remove(skip);
                variants.push(without.concat());
                let mut doubled = lines.clone();
                doubled.insert(skip, lines[skip]);
                variants.push(doubled.concat());
            }
            for variant in variants {
                if let Ok(patch) = parse(&variant) {
                    let _ = strip_level(&patch, |_| true);
                    for file in &patch.files {
                        let _ = file.path(2);
                        for source in &sources {
                            if let Err(error) = file.apply_with_lines(source) {
                                assert!(!error.to_string().is_empty());
                            }
                        }
                    }
                }
            }
        }
    }
}
