//! Configuration errors that point at the mistake: file, line, column, the dotted key
//! (`packet_forwarder.gateway_euis[1]`) and why, with the offending line quoted.
//!
//! TOML errors carry a byte span; this module turns a span into a line and column and
//! finds the key at that position by walking the document's spanned tree
//! (`toml::de::DeTable`).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("{0}")]
    Invalid(Box<InvalidConfig>),
}

/// One mistake in a configuration file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidConfig {
    /// The file (or `<string>` when parsed from memory).
    pub origin: String,
    /// 1-based line of the mistake, when known.
    pub line: Option<usize>,
    /// 1-based column (in characters) of the mistake, when known.
    pub column: Option<usize>,
    /// The dotted key at the mistake, when it can be named (`storage.database`).
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// The text of the offending line, to quote.
    pub source_line: Option<String>,
}

impl InvalidConfig {
    /// A mistake at byte span `span` of `source` (or unlocated if `None`).
    pub(crate) fn at(
        origin: &str,
        source: &str,
        span: Option<Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let message = message.into();
        let Some(span) = span else {
            return InvalidConfig {
                origin: origin.to_string(),
                line: None,
                column: None,
                key: None,
                message,
                source_line: None,
            };
        };
        let (line, column, source_line) = line_and_column(source, span.start);
        InvalidConfig {
            origin: origin.to_string(),
            line: Some(line),
            column: Some(column),
            key: key_path_at(source, span.start),
            message,
            source_line: Some(source_line),
        }
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if let (Some(line), Some(column), Some(text)) = (self.line, self.column, &self.source_line)
        {
            let gutter = line.to_string().len();
            write!(
                f,
                "\n {line} | {text}\n {:gutter$} | {:>column$}",
                "",
                "^",
                gutter = gutter,
                column = column
            )?;
        }
        Ok(())
    }
}

impl From<InvalidConfig> for ConfigError {
    fn from(invalid: InvalidConfig) -> Self {
        ConfigError::Invalid(Box::new(invalid))
    }
}

/// 1-based line and character column of byte `offset`, and the text of that line.
fn line_and_column(source: &str, offset: usize) -> (usize, usize, String) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let line_start = source[..offset].rfind('\n').map_or(0, |index| index + 1);
    let line_end = source[offset..]
        .find('\n')
        .map_or(source.len(), |index| offset + index);
    let line = source[..line_start].matches('\n').count() + 1;
    let column = source[line_start..offset].chars().count() + 1;
    let text = source[line_start..line_end]
        .trim_end_matches('\r')
        .to_string();
    (line, column, text)
}

/// The dotted path of the key or value at byte `offset`, or `None` if the document does
/// not parse or nothing is there.
fn key_path_at(source: &str, offset: usize) -> Option<String> {
    let document = DeTable::parse(source).ok()?;
    let mut path = Vec::new();
    find_in_table(document.get_ref(), offset, &mut path).then(|| join_path(&path))
}

enum PathSegment {
    Key(String),
    Index(usize),
}

fn join_path(path: &[PathSegment]) -> String {
    let mut joined = String::new();
    for segment in path {
        match segment {
            PathSegment::Key(key) => {
                if !joined.is_empty() {
                    joined.push('.');
                }
                joined.push_str(key);
            }
            PathSegment::Index(index) => joined.push_str(&format!("[{index}]")),
        }
    }
    joined
}

fn contains(span: &Range<usize>, offset: usize) -> bool {
    span.start <= offset && offset < span.end.max(span.start + 1)
}

/// Searches children first, so that a section whose span is only its `[header]` still
/// finds the keys below it.
fn find_in_table(table: &DeTable<'_>, offset: usize, path: &mut Vec<PathSegment>) -> bool {
    for (key, value) in table.iter() {
        path.push(PathSegment::Key(key.get_ref().to_string()));
        if contains(&key.span(), offset) || find_in_value(value, offset, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_value(value: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<PathSegment>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) if find_in_table(table, offset, path) => return true,
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                path.push(PathSegment::Index(index));
                if find_in_value(item, offset, path) {
                    return true;
                }
                path.pop();
            }
        }
        _ => {}
    }
    contains(&value.span(), offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_columns_are_one_based_and_count_characters() {
        let source = "a = 1\nbé = \"x\"\n";
        let offset = source.find("\"x\"").unwrap();
        assert_eq!(line_and_column(source, offset), (2, 6, "bé = \"x\"".into()));
        assert_eq!(line_and_column(source, 0), (1, 1, "a = 1".into()));
    }

    #[test]
    fn key_paths_name_sections_keys_and_array_elements() {
        let source = "[packet_forwarder]\nbind = \"x\"\ngateway_euis = [\"a\", \"b\"]\n";
        let at = |needle: &str| key_path_at(source, source.find(needle).unwrap());
        assert_eq!(at("\"x\"").as_deref(), Some("packet_forwarder.bind"));
        assert_eq!(at("bind").as_deref(), Some("packet_forwarder.bind"));
        assert_eq!(
            at("\"b\"").as_deref(),
            Some("packet_forwarder.gateway_euis[1]")
        );
    }
}
