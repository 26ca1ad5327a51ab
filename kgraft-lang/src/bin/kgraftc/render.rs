//! Rendering diagnostics: codespan-reporting for people, one JSON object per line for tools.

use std::io::Write;

use codespan_reporting::diagnostic::{Diagnostic as Report, Label as ReportLabel, Severity as ReportSeverity};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, termcolor};
use kgraft_lang::{Diagnostic, Severity, SourceFile, Span};

/// How diagnostics are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum MessageFormat {
    /// Rendered with the source lines, like rustc.
    Human,
    /// One JSON object per diagnostic, one per line.
    Json,
}

/// Whether to colour human output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Color {
    /// Colour when standard error is a terminal.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Where diagnostics and progress go, and in what form.
pub(crate) struct Ui {
    pub(crate) format: MessageFormat,
    pub(crate) color: Color,
}

/// The most diagnostics printed for people; JSON output has them all.
const MAX_SHOWN: usize = 200;

/// Moves a span inside the text and onto character boundaries.
fn clamp(text: &str, span: Span) -> std::ops::Range<usize> {
    let fix = |mut o: usize| {
        o = o.min(text.len());
        while !text.is_char_boundary(o) {
            o -= 1;
        }
        o
    };
    let start = fix(span.start);
    start..fix(span.end).max(start)
}

impl Ui {
    /// Prints one line of progress for a slow step (human format only).
    pub(crate) fn progress(&self, what: &str) {
        if self.format == MessageFormat::Human {
            eprintln!("{:>12} {what}", "kgraftc");
        }
    }

    /// Prints the diagnostics of one source: to standard error for people, standard output for
    /// JSON.
    pub(crate) fn emit(&self, source: &SourceFile, diagnostics: &[Diagnostic]) {
        match self.format {
            MessageFormat::Json => {
                let text: String = diagnostics.iter().map(|d| format!("{}\n", json(source, d))).collect();
                if let Err(crate::Failure::Fatal(message)) = crate::output::stdout(&text) {
                    eprintln!("error: {message}");
                }
            }
            MessageFormat::Human => {
                let choice = match self.color {
                    Color::Always => termcolor::ColorChoice::Always,
                    Color::Never => termcolor::ColorChoice::Never,
                    Color::Auto if std::io::IsTerminal::is_terminal(&std::io::stderr()) => termcolor::ColorChoice::Auto,
                    Color::Auto => termcolor::ColorChoice::Never,
                };
                let writer = termcolor::StandardStream::stderr(choice);
                let mut lock = writer.lock();
                let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
                let config = term::Config::default();
                for d in diagnostics.iter().take(MAX_SHOWN) {
                    let _ = term::emit(&mut lock, &config, &file, &report(source, d));
                }
                if diagnostics.len() > MAX_SHOWN {
                    let more = diagnostics.len() - MAX_SHOWN;
                    let _ = writeln!(
                        lock,
                        "note: {more} more diagnostics not shown (all of them are in `--message-format json`)"
                    );
                }
                let errors = diagnostics.iter().filter(|d| d.severity == Severity::Error).count();
                if errors > 0 {
                    let plural = if errors == 1 { "" } else { "s" };
                    let _ = writeln!(lock, "error: aborting due to {errors} previous error{plural}");
                }
            }
        }
    }
}

fn report(source: &SourceFile, d: &Diagnostic) -> Report<()> {
    let severity = match d.severity {
        Severity::Error => ReportSeverity::Error,
        Severity::Warning => ReportSeverity::Warning,
    };
    let labels = d
        .labels
        .iter()
        .map(|l| {
            let range = clamp(&source.text, l.span);
            let label = if l.primary { ReportLabel::primary((), range) } else { ReportLabel::secondary((), range) };
            label.with_message(&l.message)
        })
        .collect();
    let mut notes: Vec<String> = d.notes.iter().map(|n| format!("note: {n}")).collect();
    if let Some(help) = &d.help {
        notes.push(format!("help: {help}"));
    }
    Report::new(severity).with_code(&d.code).with_message(&d.message).with_labels(labels).with_notes(notes)
}

fn position(source: &SourceFile, span: Span) -> serde_json::Value {
    let range = clamp(&source.text, span);
    let (line, column) = source.line_col(range.start);
    let (end_line, end_column) = source.line_col(range.end);
    serde_json::json!({
        "start": range.start, "end": range.end,
        "line": line, "column": column, "end_line": end_line, "end_column": end_column,
    })
}

fn json(source: &SourceFile, d: &Diagnostic) -> serde_json::Value {
    let primary = d.primary_span().unwrap_or_default();
    let labels: Vec<serde_json::Value> = d
        .labels
        .iter()
        .map(|l| {
            let mut v = position(source, l.span);
            v["message"] = l.message.clone().into();
            v["primary"] = l.primary.into();
            v
        })
        .collect();
    let mut v = position(source, primary);
    v["file"] = source.name.clone().into();
    v["code"] = d.code.clone().into();
    v["severity"] = serde_json::to_value(d.severity).unwrap_or_default();
    v["message"] = d.message.clone().into();
    v["labels"] = labels.into();
    v["notes"] = d.notes.clone().into();
    v["help"] = d.help.clone().into();
    v
}
