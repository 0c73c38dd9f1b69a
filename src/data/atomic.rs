//! A streaming reader for RecBole atomic files (`.inter`, `.item`, ...), spec §5.1.
//!
//! The first line is the header: cells `name:type`, separated by the field separator (a tab
//! by default), with type one of `token`, `token_seq`, `float`, `float_seq`. Every further
//! non-blank line is a row with exactly as many cells. The reader holds one line at a time, so
//! memory stays flat whatever the file size; rows borrow the reader's line buffer.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::data::error::{quote, DataError};

/// The type of one column, from the header cell `name:type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    /// One categorical token (remapped to a dense id).
    Token,
    /// A list of tokens inside one cell, split on the sequence separator.
    TokenSeq,
    /// One number.
    Float,
    /// A list of numbers inside one cell, split on the sequence separator.
    FloatSeq,
}

impl FieldType {
    /// Parses the type part of a header cell.
    pub fn parse(s: &str) -> Option<FieldType> {
        match s {
            "token" => Some(FieldType::Token),
            "token_seq" => Some(FieldType::TokenSeq),
            "float" => Some(FieldType::Float),
            "float_seq" => Some(FieldType::FloatSeq),
            _ => None,
        }
    }

    /// The spelling used in headers.
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Token => "token",
            FieldType::TokenSeq => "token_seq",
            FieldType::Float => "float",
            FieldType::FloatSeq => "float_seq",
        }
    }

    /// Token-like types are remapped to dense ids.
    pub fn is_token(self) -> bool {
        matches!(self, FieldType::Token | FieldType::TokenSeq)
    }

    /// Sequence types hold a list in one cell.
    pub fn is_seq(self) -> bool {
        matches!(self, FieldType::TokenSeq | FieldType::FloatSeq)
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One header cell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub kind: FieldType,
}

/// The parsed header line of an atomic file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub fields: Vec<Field>,
}

impl Header {
    /// Parses a header line (without its line terminator). `path` and `line` are only used
    /// in error messages.
    pub fn parse(
        text: &str,
        separator: char,
        path: &Path,
        line: usize,
    ) -> Result<Header, DataError> {
        let err = |message: String| DataError::Header {
            path: path.to_path_buf(),
            line,
            message,
        };
        if text.trim().is_empty() {
            return Err(err(
                "the header line is empty; expected cells `name:type`".into()
            ));
        }
        let mut fields: Vec<Field> = Vec::new();
        for (i, cell) in text.split(separator).enumerate() {
            let column = i + 1;
            let Some((name, kind)) = cell.rsplit_once(':') else {
                return Err(err(format!(
                    "column {column}: expected `name:type`, found `{}`",
                    quote(cell)
                )));
            };
            if name.is_empty() {
                return Err(err(format!(
                    "column {column}: expected a field name before `:{kind}`"
                )));
            }
            let Some(kind) = FieldType::parse(kind) else {
                return Err(err(format!(
                    "column {column}: field `{}`: expected type token, token_seq, float or float_seq, found `{}`",
                    quote(name),
                    quote(kind)
                )));
            };
            if fields.iter().any(|f| f.name == name) {
                return Err(err(format!(
                    "column {column}: field `{}` appears twice",
                    quote(name)
                )));
            }
            fields.push(Field {
                name: name.to_string(),
                kind,
            });
        }
        Ok(Header { fields })
    }

    /// Column index of `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// `name:type, name:type, ...` for error messages.
    pub fn describe(&self) -> String {
        self.fields
            .iter()
            .map(|f| format!("{}:{}", f.name, f.kind))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Column index of the field `name`, which must have one of the types in `allowed`.
    pub fn require(
        &self,
        name: &str,
        allowed: &[FieldType],
        path: &Path,
    ) -> Result<usize, DataError> {
        let expected = allowed
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        let missing = |expected: String| DataError::MissingField {
            path: path.to_path_buf(),
            line: 1,
            field: name.to_string(),
            expected,
            available: self.describe(),
        };
        match self.position(name) {
            None => Err(missing(format!("a column `{name}:{expected}`"))),
            Some(i) if !allowed.contains(&self.fields[i].kind) => Err(missing(format!(
                "type {expected}, found {}",
                self.fields[i].kind
            ))),
            Some(i) => Ok(i),
        }
    }
}

/// A streaming reader over the rows of one atomic file.
pub struct AtomicReader<R> {
    path: PathBuf,
    reader: R,
    separator: char,
    header: Header,
    line_no: usize,
    buf: Vec<u8>,
    spans: Vec<(usize, usize)>,
}

impl AtomicReader<BufReader<File>> {
    /// Opens `path` and reads its header. `separator` is the field separator (`'\t'` in RecBole).
    pub fn open(path: &Path, separator: char) -> Result<Self, DataError> {
        let file = File::open(path).map_err(|source| DataError::Io {
            path: path.to_path_buf(),
            action: "cannot open",
            source,
        })?;
        Self::new(BufReader::with_capacity(1 << 16, file), path, separator)
    }
}

impl<R: BufRead> AtomicReader<R> {
    /// Wraps any buffered reader; `path` names it in error messages.
    pub fn new(reader: R, path: &Path, separator: char) -> Result<Self, DataError> {
        let mut this = AtomicReader {
            path: path.to_path_buf(),
            reader,
            separator,
            header: Header { fields: Vec::new() },
            line_no: 0,
            buf: Vec::with_capacity(256),
            spans: Vec::new(),
        };
        if !this.read_line()? {
            return Err(DataError::Header {
                path: this.path.clone(),
                line: 1,
                message: "the file is empty; expected a header line of `name:type` cells".into(),
            });
        }
        let text = this.line_text()?;
        // A UTF-8 byte-order mark is not part of the first field name.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        this.header = Header::parse(text, separator, path, 1)?;
        Ok(this)
    }

    /// The parsed header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file name used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next line into `buf` without its terminator; false at end of file.
    fn read_line(&mut self) -> Result<bool, DataError> {
        self.buf.clear();
        let n = self
            .reader
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| DataError::Io {
                path: self.path.clone(),
                action: "cannot read",
                source,
            })?;
        if n == 0 {
            return Ok(false);
        }
        self.line_no += 1;
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        if self.buf.last() == Some(&b'\r') {
            self.buf.pop();
        }
        Ok(true)
    }

    fn line_text(&self) -> Result<&str, DataError> {
        std::str::from_utf8(&self.buf).map_err(|e| DataError::Malformed {
            path: self.path.clone(),
            line: self.line_no,
            message: format!(
                "expected UTF-8 text, found an invalid byte at column {}",
                e.valid_up_to() + 1
            ),
        })
    }

    /// The next row, or `None` at end of file. Blank lines are skipped (as pandas does).
    #[allow(clippy::should_implement_trait)]
    pub fn next_row(&mut self) -> Result<Option<Row<'_>>, DataError> {
        loop {
            if !self.read_line()? {
                return Ok(None);
            }
            if !self.buf.is_empty() {
                break;
            }
        }
        // Validate UTF-8 once, then keep byte spans of the cells.
        let text = std::str::from_utf8(&self.buf).map_err(|e| DataError::Malformed {
            path: self.path.clone(),
            line: self.line_no,
            message: format!(
                "expected UTF-8 text, found an invalid byte at column {}",
                e.valid_up_to() + 1
            ),
        })?;
        self.spans.clear();
        let mut start = 0;
        if self.separator.is_ascii() {
            // Byte search: an ASCII byte never occurs inside a multi-byte UTF-8 character.
            let sep = self.separator as u8;
            for (i, &b) in text.as_bytes().iter().enumerate() {
                if b == sep {
                    self.spans.push((start, i));
                    start = i + 1;
                }
            }
        } else {
            for (i, m) in text.match_indices(self.separator) {
                self.spans.push((start, i));
                start = i + m.len();
            }
        }
        self.spans.push((start, text.len()));
        let expected = self.header.fields.len();
        if self.spans.len() != expected {
            return Err(DataError::CellCount {
                path: self.path.clone(),
                line: self.line_no,
                expected,
                found: self.spans.len(),
            });
        }
        Ok(Some(Row {
            text,
            spans: &self.spans,
            header: &self.header,
            path: &self.path,
            line: self.line_no,
        }))
    }
}

/// One row of an atomic file, borrowed from the reader.
pub struct Row<'a> {
    text: &'a str,
    spans: &'a [(usize, usize)],
    header: &'a Header,
    path: &'a Path,
    line: usize,
}

impl<'a> Row<'a> {
    /// 1-based line number in the file (the header is line 1).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The raw text of cell `i` (panics if `i` is not a column of the header).
    pub fn cell(&self, i: usize) -> &'a str {
        let (a, b) = self.spans[i];
        &self.text[a..b]
    }

    fn field_name(&self, i: usize) -> &str {
        &self.header.fields[i].name
    }

    /// Cell `i` as one token. With `required`, an empty cell is an error.
    pub fn token(&self, i: usize, required: bool) -> Result<&'a str, DataError> {
        let cell = self.cell(i);
        if required && cell.is_empty() {
            return Err(self.parse_error(i, "a non-empty token", cell));
        }
        Ok(cell)
    }

    /// Cell `i` as a finite number (surrounding spaces allowed).
    pub fn float(&self, i: usize) -> Result<f64, DataError> {
        let cell = self.cell(i);
        match cell.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => Err(self.parse_error(i, "a finite number", cell)),
        }
    }

    /// Cell `i` as a list of tokens split on `sep`; empty pieces are dropped (as in RecBole).
    pub fn tokens<'s>(&self, i: usize, sep: &'s str) -> impl Iterator<Item = &'a str> + 's
    where
        'a: 's,
    {
        let cell = self.cell(i);
        cell.split(sep).filter(|t| !t.is_empty())
    }

    /// Cell `i` as a list of finite numbers split on `sep`, appended to `out`.
    pub fn floats(&self, i: usize, sep: &str, out: &mut Vec<f64>) -> Result<(), DataError> {
        for piece in self.cell(i).split(sep) {
            let piece = piece.trim();
            if piece.is_empty() {
                continue;
            }
            match piece.parse::<f64>() {
                Ok(v) if v.is_finite() => out.push(v),
                _ => return Err(self.parse_error(i, "a list of finite numbers", piece)),
            }
        }
        Ok(())
    }

    /// An error naming this row's file, line and field `i`.
    pub fn parse_error(&self, i: usize, expected: &'static str, value: &str) -> DataError {
        DataError::Parse {
            path: self.path.to_path_buf(),
            line: self.line,
            field: self.field_name(i).to_string(),
            expected,
            value: quote(value),
        }
    }

    /// A free-form error about this row.
    pub fn error(&self, message: String) -> DataError {
        DataError::Malformed {
            path: self.path.to_path_buf(),
            line: self.line,
            message,
        }
    }
}
