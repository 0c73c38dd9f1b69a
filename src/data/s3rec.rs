//! Reading the S³-Rec data format and converting it to RecBole atomic files.
//!
//! The S³-Rec paper's repository (Zhou et al., CIKM 2020) publishes its preprocessing of Amazon
//! Beauty, Sports, Toys, Yelp and LastFM as two files per data set, which later
//! side-information papers (DIF-SR, ASIF) evaluate on:
//!
//! - `<name>.txt`: one line per user, `user item item …`, tokens separated by spaces, the items
//!   in time order (there are no timestamps);
//! - `<name>_item2attributes.json`: one JSON object, `{"item": [attribute, …], …}`, with the
//!   attribute ids as integers (or strings).
//!
//! [`S3Rec::read`] reads both and checks them: every line has a user and at least one item, no
//! user has two lines, every item of the JSON occurs in the `.txt` and every item of the `.txt`
//! has an entry in the JSON. [`S3Rec::write_recbole`] writes RecBole atomic files, so everything
//! downstream reads RecBole's format:
//!
//! - `<name>.inter`: `user_id:token  item_id:token  timestamp:float`, one row per interaction,
//!   users in file order, where `timestamp` is the item's position 1, 2, … in its user's line:
//!   an order column standing in for time (any of [`crate::data::TimeOrder`] sorts it into line
//!   order, and so does RecBole);
//! - `<name>.item`: `item_id:token  categories:token_seq`, one row per item in order of first
//!   appearance in the `.txt`, the attribute ids space-separated (an empty cell for an item
//!   without attributes).
//!
//! [`S3Rec::load_config`] is the [`LoadConfig`] that reads them with the `categories` attribute.
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::data::error::{quote, DataError};
use crate::data::load::{DatasetFiles, LoadConfig};

/// The `.item` column holding the attribute tokens.
pub const CATEGORIES_FIELD: &str = "categories";

/// Where a data set's S³-Rec files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3RecFiles {
    /// Data set name (`Beauty`, `Yelp`, …), also the name of the RecBole files written.
    pub name: String,
    /// The sequences, `<name>.txt`.
    pub sequences: PathBuf,
    /// The item attributes, `<name>_item2attributes.json`.
    pub attributes: PathBuf,
}

impl S3RecFiles {
    /// The S³-Rec layout: `<dir>/<name>.txt` and `<dir>/<name>_item2attributes.json`.
    pub fn new(dir: impl AsRef<Path>, name: &str) -> S3RecFiles {
        let dir = dir.as_ref();
        S3RecFiles {
            name: name.to_string(),
            sequences: dir.join(format!("{name}.txt")),
            attributes: dir.join(format!("{name}_item2attributes.json")),
        }
    }
}

/// An S³-Rec data set as read: users in file order, each with its items in time order, and
/// each item's attribute tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Rec {
    name: String,
    users: Vec<String>,
    /// `offsets[u]..offsets[u + 1]` indexes user `u`'s items in `items`.
    offsets: Vec<usize>,
    /// Item indexes into `item_tokens`.
    items: Vec<u32>,
    /// Item tokens in order of first appearance in the `.txt`.
    item_tokens: Vec<String>,
    /// Attribute tokens per item (aligned with `item_tokens`), in the JSON's order.
    attributes: Vec<Vec<String>>,
}

fn io_error(path: &Path, action: &'static str, source: std::io::Error) -> DataError {
    DataError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn malformed(path: &Path, line: usize, message: String) -> DataError {
    DataError::Malformed {
        path: path.to_path_buf(),
        line,
        message,
    }
}

impl S3Rec {
    /// Reads and checks `<name>.txt` and `<name>_item2attributes.json`.
    pub fn read(files: &S3RecFiles) -> Result<S3Rec, DataError> {
        let (mut data, first_lines) = read_sequences(&files.sequences, &files.name)?;
        let entries = read_item_attributes(&files.attributes)?;
        let index: std::collections::HashMap<&str, usize> = data
            .item_tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let mut seen_at: Vec<usize> = vec![0; data.item_tokens.len()];
        let mut attributes: Vec<Vec<String>> = vec![Vec::new(); data.item_tokens.len()];
        for entry in entries {
            let Some(&i) = index.get(entry.item.as_str()) else {
                return Err(malformed(
                    &files.attributes,
                    entry.line,
                    format!(
                        "item `{}` does not occur in {}; expected only items of the sequences",
                        quote(&entry.item),
                        files.sequences.display()
                    ),
                ));
            };
            if seen_at[i] != 0 {
                return Err(malformed(
                    &files.attributes,
                    entry.line,
                    format!(
                        "item `{}` has a second entry (the first is on line {}); expected one per item",
                        quote(&entry.item),
                        seen_at[i]
                    ),
                ));
            }
            seen_at[i] = entry.line;
            attributes[i] = entry.attributes;
        }
        if let Some(i) = seen_at.iter().position(|&l| l == 0) {
            return Err(malformed(
                &files.sequences,
                first_lines[i],
                format!(
                    "item `{}` has no entry in {}; expected one for every item",
                    quote(&data.item_tokens[i]),
                    files.attributes.display()
                ),
            ));
        }
        drop(index);
        data.attributes = attributes;
        Ok(data)
    }

    /// The data set's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of users (lines of the `.txt`).
    pub fn n_users(&self) -> usize {
        self.users.len()
    }
    /// Number of distinct items.
    pub fn n_items(&self) -> usize {
        self.item_tokens.len()
    }
    /// Number of interactions (items over all lines, repeats counted).
    pub fn n_interactions(&self) -> usize {
        self.items.len()
    }
    /// Number of distinct attribute tokens.
    pub fn n_attributes(&self) -> usize {
        let mut all: Vec<&str> = self
            .attributes
            .iter()
            .flatten()
            .map(|s| s.as_str())
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
    /// The user tokens, in file order.
    pub fn users(&self) -> &[String] {
        &self.users
    }
    /// User `u`'s (index into [`S3Rec::users`]) item tokens, in time order.
    pub fn sequence(&self, u: usize) -> impl Iterator<Item = &str> + '_ {
        self.items[self.offsets[u]..self.offsets[u + 1]]
            .iter()
            .map(|&i| self.item_tokens[i as usize].as_str())
    }
    /// The item tokens, in order of first appearance.
    pub fn items(&self) -> &[String] {
        &self.item_tokens
    }
    /// The attribute tokens of item `i` (index into [`S3Rec::items`]).
    pub fn item_attributes(&self, i: usize) -> &[String] {
        &self.attributes[i]
    }

    /// The [`LoadConfig`] for the files [`S3Rec::write_recbole`] writes: RecBole's defaults
    /// (no filter: the S³-Rec data are already 5-core) with the `categories` attribute.
    pub fn load_config() -> LoadConfig {
        LoadConfig::default().with_attributes(&[CATEGORIES_FIELD])
    }

    /// Writes `<dir>/<name>.inter` and `<dir>/<name>.item` (creating `dir`) and returns their
    /// paths, ready for [`crate::data::load`] or [`crate::data::Dataset::load_recbole`].
    pub fn write_recbole(&self, dir: impl AsRef<Path>) -> Result<DatasetFiles, DataError> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "creating the folder", e))?;
        let inter = dir.join(format!("{}.inter", self.name));
        let item = dir.join(format!("{}.item", self.name));
        write_file(&inter, |w| {
            writeln!(w, "user_id:token\titem_id:token\ttimestamp:float")?;
            for (u, user) in self.users.iter().enumerate() {
                for (k, item) in self.sequence(u).enumerate() {
                    writeln!(w, "{user}\t{item}\t{}", k + 1)?;
                }
            }
            Ok(())
        })?;
        write_file(&item, |w| {
            writeln!(w, "item_id:token\t{CATEGORIES_FIELD}:token_seq")?;
            for (token, attributes) in self.item_tokens.iter().zip(&self.attributes) {
                writeln!(w, "{token}\t{}", attributes.join(" "))?;
            }
            Ok(())
        })?;
        Ok(DatasetFiles {
            name: self.name.clone(),
            inter,
            item: Some(item),
        })
    }
}

fn write_file(
    path: &Path,
    body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), DataError> {
    let file = File::create(path).map_err(|e| io_error(path, "creating", e))?;
    let mut w = BufWriter::new(file);
    body(&mut w)
        .and_then(|()| w.flush())
        .map_err(|e| io_error(path, "writing", e))
}

/// Reads `<name>.txt`: users, their items, and the item tokens in first-appearance order,
/// with the line each item first occurs on.
fn read_sequences(path: &Path, name: &str) -> Result<(S3Rec, Vec<usize>), DataError> {
    let file = File::open(path).map_err(|e| io_error(path, "opening", e))?;
    let mut reader = BufReader::new(file);
    let mut users = Vec::new();
    let mut offsets = vec![0usize];
    let mut items = Vec::new();
    let mut item_tokens: Vec<String> = Vec::new();
    let mut first_lines = Vec::new();
    let mut item_index: std::collections::HashMap<String, u32> = Default::default();
    let mut user_line: std::collections::HashMap<String, usize> = Default::default();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|e| io_error(path, "reading", e))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        let mut text = std::str::from_utf8(&buf).map_err(|e| {
            malformed(
                path,
                line_no,
                format!("invalid UTF-8 at byte {}", e.valid_up_to()),
            )
        })?;
        if line_no == 1 {
            text = text.strip_prefix('\u{feff}').unwrap_or(text);
        }
        let mut tokens = text.split_ascii_whitespace();
        let Some(user) = tokens.next() else {
            continue; // a blank line
        };
        if let Some(first) = user_line.insert(user.to_string(), line_no) {
            return Err(malformed(
                path,
                line_no,
                format!(
                    "user `{}` has a second line (the first is line {first}); expected one line per user",
                    quote(user)
                ),
            ));
        }
        let before = items.len();
        for token in tokens {
            let id = match item_index.get(token) {
                Some(&id) => id,
                None => {
                    let id = u32::try_from(item_tokens.len()).map_err(|_| DataError::Empty {
                        path: path.to_path_buf(),
                        stage: "reading",
                        detail: "more than 2^32 items".into(),
                    })?;
                    item_index.insert(token.to_string(), id);
                    item_tokens.push(token.to_string());
                    first_lines.push(line_no);
                    id
                }
            };
            items.push(id);
        }
        if items.len() == before {
            return Err(malformed(
                path,
                line_no,
                format!(
                    "user `{}` has no items; expected `user item item …` (space-separated)",
                    quote(user)
                ),
            ));
        }
        users.push(user.to_string());
        offsets.push(items.len());
    }
    if users.is_empty() {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            stage: "reading",
            detail: "the file has no lines".into(),
        });
    }
    let data = S3Rec {
        name: name.to_string(),
        users,
        offsets,
        items,
        item_tokens,
        attributes: Vec::new(),
    };
    Ok((data, first_lines))
}

/// One `"item": [attribute, …]` entry of the JSON, with the line its key is on.
struct Entry {
    item: String,
    line: usize,
    attributes: Vec<String>,
}

/// Reads `<name>_item2attributes.json`: one object whose values are arrays of integers or
/// strings. A small parser of its own, so every error names the line.
fn read_item_attributes(path: &Path) -> Result<Vec<Entry>, DataError> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(|e| io_error(path, "opening", e))?
        .read_to_end(&mut bytes)
        .map_err(|e| io_error(path, "reading", e))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        malformed(
            path,
            line,
            format!("invalid UTF-8 at byte {}", e.valid_up_to()),
        )
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut p = JsonCursor {
        path,
        bytes: text.as_bytes(),
        text,
        pos: 0,
        line: 1,
    };
    let mut entries = Vec::new();
    p.skip_ws();
    p.expect(b'{', "`{` (an object of item -> attribute list)")?;
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.pos += 1;
    } else {
        loop {
            p.skip_ws();
            let line = p.line;
            let item = p.string("an item id (a string key)")?;
            p.skip_ws();
            p.expect(b':', "`:`")?;
            p.skip_ws();
            p.expect(b'[', "`[` (the item's list of attribute ids)")?;
            let mut attributes = Vec::new();
            p.skip_ws();
            if p.peek() == Some(b']') {
                p.pos += 1;
            } else {
                loop {
                    p.skip_ws();
                    attributes.push(p.attribute()?);
                    p.skip_ws();
                    match p.next_byte() {
                        Some(b',') => continue,
                        Some(b']') => break,
                        _ => return Err(p.unexpected("`,` or `]` in the attribute list")),
                    }
                }
            }
            entries.push(Entry {
                item,
                line,
                attributes,
            });
            p.skip_ws();
            match p.next_byte() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(p.unexpected("`,` or `}` after an item's attribute list")),
            }
        }
    }
    p.skip_ws();
    if p.pos != p.bytes.len() {
        return Err(p.unexpected("the end of the file after the object"));
    }
    Ok(entries)
}

struct JsonCursor<'a> {
    path: &'a Path,
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line: usize,
}

impl JsonCursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }
    fn next_byte(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.pos += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.next_byte();
        }
    }
    fn error(&self, message: String) -> DataError {
        malformed(self.path, self.line, message)
    }
    fn unexpected(&self, expected: &str) -> DataError {
        let found = match self.text.get(self.pos..) {
            Some("") | None => "the end of the file".to_string(),
            Some(rest) => format!("`{}`", quote(&rest.chars().take(20).collect::<String>())),
        };
        self.error(format!("expected {expected}, found {found}"))
    }
    fn expect(&mut self, b: u8, expected: &str) -> Result<(), DataError> {
        if self.peek() == Some(b) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected(expected))
        }
    }
    /// A JSON string (at its opening quote), unescaped.
    fn string(&mut self, expected: &str) -> Result<String, DataError> {
        if self.peek() != Some(b'"') {
            return Err(self.unexpected(expected));
        }
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(b) = self.peek() {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // The scan stops only at ASCII bytes, so both ends are char boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.peek() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.next_byte() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => return Err(self.error("invalid escape in a string".into())),
                    };
                    out.push(c);
                }
                Some(_) => {
                    return Err(self.error("a control character (or line break) in a string".into()))
                }
                None => return Err(self.error("a string is not closed".into())),
            }
        }
    }
    fn hex4(&mut self) -> Result<u32, DataError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("expected 4 hex digits after `\\u`".into()))?;
        self.pos += 4;
        u32::from_str_radix(digits, 16)
            .map_err(|_| self.error("expected 4 hex digits after `\\u`".into()))
    }
    fn unicode_escape(&mut self) -> Result<char, DataError> {
        let hi = self.hex4()?;
        let code = if (0xd800..0xdc00).contains(&hi) {
            if self.text.get(self.pos..self.pos + 2) != Some("\\u") {
                return Err(self.error("a lone UTF-16 surrogate in a `\\u` escape".into()));
            }
            self.pos += 2;
            let lo = self.hex4()?;
            if !(0xdc00..0xe000).contains(&lo) {
                return Err(self.error("a lone UTF-16 surrogate in a `\\u` escape".into()));
            }
            0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00)
        } else {
            hi
        };
        char::from_u32(code)
            .ok_or_else(|| self.error("a lone UTF-16 surrogate in a `\\u` escape".into()))
    }
    /// One attribute id: an integer (kept as written) or a string without white space.
    fn attribute(&mut self) -> Result<String, DataError> {
        let token = match self.peek() {
            Some(b'"') => self.string("an attribute id")?,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while let Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') = self.peek() {
                    self.pos += 1;
                }
                let number = &self.text[start..self.pos];
                let digits = number.strip_prefix('-').unwrap_or(number);
                let integer = !digits.is_empty()
                    && digits.bytes().all(|b| b.is_ascii_digit())
                    && (digits == "0" || !digits.starts_with('0'));
                if !integer {
                    return Err(self.error(format!(
                        "expected an attribute id (an integer or a string), found `{}`",
                        quote(number)
                    )));
                }
                number.to_string()
            }
            _ => return Err(self.unexpected("an attribute id (an integer or a string)")),
        };
        if token.is_empty() || token.chars().any(char::is_whitespace) {
            return Err(self.error(format!(
                "attribute id `{}` is empty or holds white space; RecBole's token_seq cannot hold it",
                quote(&token)
            )));
        }
        Ok(token)
    }
}
