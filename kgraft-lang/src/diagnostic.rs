//! Diagnostics: what went wrong, where, and what to do about it.
//!
//! The library only builds these values; rendering them (codespan-reporting for people, JSON for
//! tools) happens at the edge, in `kgraftc`.

use serde::Serialize;

/// A half-open byte range `start..end` in a `.kgp` source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Span {
    /// The first byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// Makes a span from its two ends.
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end: end.max(start) }
    }
}

/// How serious a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The patch cannot be built.
    Error,
    /// The patch builds, but something is probably wrong.
    Warning,
}

/// A span with a short message, shown under the source line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where.
    pub span: Span,
    /// What is wrong there, in plain words (may be empty).
    pub message: String,
    /// Whether this is the main place of the mistake (the others give context).
    pub primary: bool,
}

/// One mistake in a patch source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// The stable code (`E0001`...), or `rustc` codes for errors that rustc found in a body.
    pub code: String,
    /// Error or warning.
    pub severity: Severity,
    /// One line saying what is wrong.
    pub message: String,
    /// The places in the source, the primary one first.
    pub labels: Vec<Label>,
    /// The rules behind the message.
    pub notes: Vec<String>,
    /// What to do about it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// Starts an error with the given code and message.
    pub fn error(code: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            code: code.to_owned(),
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    /// Starts a warning with the given code and message.
    pub fn warning(code: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(code, message) }
    }

    /// Adds the primary label.
    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into(), primary: true });
        self
    }

    /// Adds a secondary label.
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label { span, message: message.into(), primary: false });
        self
    }

    /// Adds a note.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    /// Sets the help line.
    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    /// Returns the primary span, if the diagnostic has one.
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }
}

/// The diagnostics of one run over one source, in source order.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics {
    /// Every diagnostic found.
    pub list: Vec<Diagnostic>,
}

impl Diagnostics {
    pub(crate) fn push(&mut self, diagnostic: Diagnostic) {
        self.list.push(diagnostic);
    }

    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.list.iter().any(|d| d.severity == Severity::Error)
    }

    /// Sorts the diagnostics by position, keeping the order of those at the same place.
    pub(crate) fn sort(&mut self) {
        self.list.sort_by_key(|d| d.primary_span().map(|s| s.start).unwrap_or(0));
    }
}

/// A source file: its name, its text and where its lines start.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// The name shown in diagnostics (usually the path given on the command line).
    pub name: String,
    /// The whole text.
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Wraps a name and a text.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        let text = text.into();
        let line_starts = line_starts(&text);
        SourceFile { name: name.into(), text, line_starts }
    }

    /// Returns the 1-based line and the 1-based column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let column = self.text.get(start..offset).map(|t| t.chars().count()).unwrap_or(offset - start);
        (line + 1, column + 1)
    }

    /// Returns the byte offset of a 1-based line and 1-based column (in characters), clamped to
    /// the text.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        offset_of(&self.text, &self.line_starts, line, column)
    }
}

/// Returns the byte offsets where the lines of `text` start.
pub(crate) fn line_starts(text: &str) -> Vec<usize> {
    std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect()
}

/// Returns the byte offset of a 1-based line and 1-based column, clamped to the text.
pub(crate) fn offset_of(text: &str, starts: &[usize], line: usize, column: usize) -> usize {
    let Some(&start) = starts.get(line.saturating_sub(1)) else {
        return text.len();
    };
    let end = starts.get(line).copied().unwrap_or(text.len());
    let line_text = &text[start..end];
    let within = line_text.char_indices().nth(column.saturating_sub(1)).map(|(i, _)| i).unwrap_or(line_text.len());
    start + within
}
