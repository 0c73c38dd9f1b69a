//! Loading a RecBole dataset: read `.inter` (and `.item`), drop interactions whose item has no
//! `.item` row, k-core filter, remap tokens to dense ids, and order each user's interactions by
//! time with a stable sort (spec §5.1–5.2).
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::atomic::{AtomicReader, FieldType};
use crate::data::error::DataError;

/// The token shown for id 0 (padding), as in RecBole.
pub const PAD_TOKEN: &str = "[PAD]";

/// Where a dataset's atomic files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetFiles {
    /// Dataset name (used in messages and summaries).
    pub name: String,
    /// The interaction file (`<name>.inter`).
    pub inter: PathBuf,
    /// The item feature file (`<name>.item`), if any.
    pub item: Option<PathBuf>,
}

impl DatasetFiles {
    /// RecBole's layout: `<dir>/<name>.inter` and, when it exists, `<dir>/<name>.item`.
    pub fn recbole(dir: impl AsRef<Path>, name: &str) -> DatasetFiles {
        let dir = dir.as_ref();
        let item = dir.join(format!("{name}.item"));
        DatasetFiles {
            name: name.to_string(),
            inter: dir.join(format!("{name}.inter")),
            item: item.is_file().then_some(item),
        }
    }
}

/// How timestamps order a user's interactions. Every order is a stable sort: interactions
/// whose keys are equal keep file order.
///
/// RecBole 1.2.1 sorts each user's interactions by the timestamp column as it holds it after
/// preprocessing: a 32-bit float (`torch.FloatTensor`), min-max normalised first when
/// `normalize_all` is on. Its built-in ml-100k configuration turns `normalize_all` on, which
/// [`TimeOrder::RecBoleNormalizedF32`] (the default) reproduces; [`TimeOrder::RecBoleF32`] is
/// its order with normalisation off (RecBole's default for a dataset without a built-in
/// configuration). `tests/data_ml100k.rs` checks the default against RecBole's own split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TimeOrder {
    /// RecBole with `normalize_all` (its ml-100k configuration): the key is
    /// `(t − min) / (max − min)` in f64, min and max over the interactions that survive
    /// filtering, rounded to f32 (1.0 for every row when min = max). Timestamps that round to
    /// the same f32 are ties; on ml-100k that merges some timestamps 1 s apart. Default.
    #[default]
    RecBoleNormalizedF32,
    /// RecBole without normalisation: the key is the timestamp rounded to f32, so timestamps
    /// within one f32 step (64 s around 2^29–2^30) are ties. The default before issue 14.
    RecBoleF32,
    /// Compare the timestamps as parsed (f64).
    Exact,
}

/// Which fields to read and how to filter; the defaults are RecBole's.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadConfig {
    /// `USER_ID_FIELD`, a `token` column of `.inter`. Default `user_id`.
    pub user_field: String,
    /// `ITEM_ID_FIELD`, a `token` column of `.inter` and `.item`. Default `item_id`.
    pub item_field: String,
    /// `TIME_FIELD`, a `float` column of `.inter`. Default `timestamp`.
    pub time_field: String,
    /// Item attribute columns of `.item` to load (`selected_features`), any type. Default none.
    pub attribute_fields: Vec<String>,
    /// `field_separator`. Default tab.
    pub field_separator: char,
    /// `seq_separator` inside token_seq / float_seq cells. Default one space.
    pub seq_separator: String,
    /// Keep only users with at least this many interactions (`user_inter_num_interval =
    /// "[k,inf)"`), iterated with the item bound until stable. Default off.
    pub user_min_interactions: Option<usize>,
    /// Same for items. Items listed in `.item` but never interacted with count 0. Default off.
    pub item_min_interactions: Option<usize>,
    /// `filter_inter_by_user_or_item`: drop interactions whose item has no `.item` row
    /// (only when there is an `.item` file). Default true.
    pub filter_inter_by_item: bool,
    /// How to compare timestamps. Default [`TimeOrder::RecBoleNormalizedF32`].
    pub time_order: TimeOrder,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            user_field: "user_id".into(),
            item_field: "item_id".into(),
            time_field: "timestamp".into(),
            attribute_fields: Vec::new(),
            field_separator: '\t',
            seq_separator: " ".into(),
            user_min_interactions: None,
            item_min_interactions: None,
            filter_inter_by_item: true,
            time_order: TimeOrder::RecBoleNormalizedF32,
        }
    }
}

impl LoadConfig {
    /// k-core filtering on both users and items (`[k,inf)`); `k = 0` turns it off.
    pub fn with_kcore(mut self, k: usize) -> Self {
        let k = (k > 0).then_some(k);
        self.user_min_interactions = k;
        self.item_min_interactions = k;
        self
    }

    /// The item attribute columns to load.
    pub fn with_attributes<S: AsRef<str>>(mut self, fields: &[S]) -> Self {
        self.attribute_fields = fields.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    fn validate(&self) -> Result<(), DataError> {
        if self.seq_separator.is_empty() {
            return Err(DataError::InvalidArgument(
                "seq_separator must not be empty".into(),
            ));
        }
        if self.seq_separator.contains(self.field_separator) {
            return Err(DataError::InvalidArgument(
                "seq_separator must not contain the field separator".into(),
            ));
        }
        if self.field_separator == '\n' || self.field_separator == '\r' {
            return Err(DataError::InvalidArgument(
                "field_separator cannot be a line break".into(),
            ));
        }
        for (i, a) in self.attribute_fields.iter().enumerate() {
            if *a == self.item_field || self.attribute_fields[..i].contains(a) {
                return Err(DataError::InvalidArgument(format!(
                    "attribute field `{a}` is listed twice or is the item field"
                )));
            }
        }
        Ok(())
    }
}

/// What happened while loading, for logs and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Data rows read from `.inter`.
    pub rows_read: usize,
    /// Rows dropped because their item has no `.item` row.
    pub dropped_unknown_item: usize,
    /// Rows removed by k-core filtering.
    pub dropped_by_kcore: usize,
    /// k-core passes that removed something.
    pub kcore_rounds: usize,
    /// Rows of `.item` read.
    pub item_rows_read: usize,
}

/// Token ids per item, stored as CSR: item `i`'s tokens are `ids[offsets[i]..offsets[i+1]]`.
/// Row 0 (the padding item) is empty, and so is any item without an `.item` row, so they
/// pool to zero. Token 0 is padding and never appears in a row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenTable {
    vocab: Vec<String>,
    offsets: Vec<u32>,
    ids: Vec<u32>,
}

impl TokenTable {
    /// The tokens of `item`.
    pub fn tokens(&self, item: u32) -> &[u32] {
        let i = item as usize;
        &self.ids[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
    /// Number of token ids including the padding 0 (rows of an attribute embedding table).
    pub fn n_token_ids(&self) -> usize {
        self.vocab.len()
    }
    /// id -> token text; `[PAD]` at 0.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }
    /// Number of items (rows), padding item included.
    pub fn n_rows(&self) -> usize {
        self.offsets.len() - 1
    }
    /// The CSR offsets (`n_rows + 1` entries).
    pub fn offsets(&self) -> &[u32] {
        &self.offsets
    }
    /// The CSR token ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }
    /// The most tokens any item has.
    pub fn max_tokens(&self) -> usize {
        self.offsets
            .windows(2)
            .map(|w| (w[1] - w[0]) as usize)
            .max()
            .unwrap_or(0)
    }
    /// A dense `n_rows × width` table, right-padded with 0; items with more than `width`
    /// tokens keep their first `width`.
    pub fn padded(&self, width: usize) -> Vec<u32> {
        let mut out = vec![0u32; self.n_rows() * width];
        for item in 0..self.n_rows() {
            let t = self.tokens(item as u32);
            let k = t.len().min(width);
            out[item * width..item * width + k].copy_from_slice(&t[..k]);
        }
        out
    }
}

/// Numbers per item (CSR, like [`TokenTable`]) for `float` and `float_seq` attributes.
#[derive(Clone, Debug, PartialEq)]
pub struct FloatTable {
    offsets: Vec<u32>,
    values: Vec<f64>,
}

impl FloatTable {
    /// The values of `item` (empty for the padding item and items without an `.item` row).
    pub fn values(&self, item: u32) -> &[f64] {
        let i = item as usize;
        &self.values[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

/// The values of one attribute column.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValues {
    Tokens(TokenTable),
    Floats(FloatTable),
}

/// One item attribute (a selected `.item` column).
#[derive(Clone, Debug, PartialEq)]
pub struct Attribute {
    pub name: String,
    pub kind: FieldType,
    pub values: AttributeValues,
}

impl Attribute {
    /// The token table, for token and token_seq attributes.
    pub fn tokens(&self) -> Option<&TokenTable> {
        match &self.values {
            AttributeValues::Tokens(t) => Some(t),
            AttributeValues::Floats(_) => None,
        }
    }
    /// The float table, for float and float_seq attributes.
    pub fn floats(&self) -> Option<&FloatTable> {
        match &self.values {
            AttributeValues::Floats(t) => Some(t),
            AttributeValues::Tokens(_) => None,
        }
    }
}

/// A loaded, filtered dataset: each user's interactions in time order, with dense ids
/// (0 = padding for users, items and attribute tokens).
#[derive(Clone, Debug)]
pub struct Dataset {
    pub(crate) name: String,
    pub(crate) user_tokens: Vec<String>,
    pub(crate) item_tokens: Vec<String>,
    /// `offsets[u]..offsets[u+1]` indexes user `u`'s interactions; user 0 has none.
    pub(crate) offsets: Vec<usize>,
    pub(crate) items: Vec<u32>,
    pub(crate) times: Vec<f64>,
    pub(crate) attributes: Vec<Attribute>,
    pub(crate) stats: LoadStats,
}

/// FxHash-style word hashing with a murmur3 finish: fast on short tokens. Files are local
/// input, not an adversary, so no keyed (DoS-resistant) hash is needed.
#[derive(Default, Clone, Copy)]
struct FxHasher {
    hash: u64,
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().unwrap());
            self.hash = (self.hash.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.hash = (self.hash.rotate_left(5) ^ b as u64).wrapping_mul(K);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.write(&[i]);
    }
    fn finish(&self) -> u64 {
        // The multiply only mixes upward; finish with murmur3's fmix64 so the low bits that
        // pick a bucket depend on every input byte.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

type FxBuild = std::hash::BuildHasherDefault<FxHasher>;

/// Tokens of up to this many bytes are stored inline in the map's key (no pointer to chase).
const INLINE: usize = 23;

/// A short token packed into 24 bytes: the bytes, zero-filled, then the length.
fn inline_key(token: &str) -> Option<[u8; INLINE + 1]> {
    let b = token.as_bytes();
    (b.len() <= INLINE).then(|| {
        let mut k = [0u8; INLINE + 1];
        k[..b.len()].copy_from_slice(b);
        k[INLINE] = b.len() as u8;
        k
    })
}

/// Token -> provisional id, first come first served; later turned into id -> token.
/// Short tokens (nearly all ids) live inline in the hash table, which keeps a lookup to about
/// one cache miss on files with millions of rows.
#[derive(Default)]
struct Interner {
    short: HashMap<[u8; INLINE + 1], u32, FxBuild>,
    long: HashMap<Box<str>, u32, FxBuild>,
}

impl Interner {
    fn get(&self, token: &str) -> Option<u32> {
        match inline_key(token) {
            Some(k) => self.short.get(&k).copied(),
            None => self.long.get(token).copied(),
        }
    }
    fn intern(&mut self, token: &str) -> u32 {
        let next = self.len() as u32;
        match inline_key(token) {
            Some(k) => *self.short.entry(k).or_insert(next),
            None => {
                if let Some(&id) = self.long.get(token) {
                    return id;
                }
                self.long.insert(token.into(), next);
                next
            }
        }
    }
    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }
    fn into_tokens(self) -> Vec<Box<str>> {
        let mut out: Vec<Box<str>> = vec![Box::default(); self.len()];
        for (k, v) in self.short {
            let len = k[INLINE] as usize;
            // The bytes came from a &str, so they are UTF-8.
            out[v as usize] = String::from_utf8_lossy(&k[..len]).into();
        }
        for (k, v) in self.long {
            out[v as usize] = k;
        }
        out
    }
}

/// A `.item` column as read: per item row, provisional ids (tokens) or values (floats).
enum RawColumn {
    Tokens {
        interner: Interner,
        offsets: Vec<u32>,
        ids: Vec<u32>,
    },
    Floats {
        offsets: Vec<u32>,
        values: Vec<f64>,
    },
}

struct RawItems {
    /// Item file row -> provisional item id.
    row_item: Vec<u32>,
    /// Attribute columns, in `LoadConfig::attribute_fields` order, with their types.
    columns: Vec<(FieldType, RawColumn)>,
}

fn too_large(path: &Path, what: &str) -> DataError {
    DataError::Empty {
        path: path.to_path_buf(),
        stage: "reading",
        detail: format!("more than 2^32-1 {what}; ids are 32-bit"),
    }
}

fn read_items(
    path: &Path,
    cfg: &LoadConfig,
    items: &mut Interner,
    stats: &mut LoadStats,
) -> Result<RawItems, DataError> {
    let mut reader = AtomicReader::open(path, cfg.field_separator)?;
    let header = reader.header().clone();
    let item_col = header.require(&cfg.item_field, &[FieldType::Token], path)?;
    let any = [
        FieldType::Token,
        FieldType::TokenSeq,
        FieldType::Float,
        FieldType::FloatSeq,
    ];
    let mut cols = Vec::new();
    let mut columns = Vec::new();
    for name in &cfg.attribute_fields {
        let c = header.require(name, &any, path)?;
        let kind = header.fields[c].kind;
        cols.push(c);
        let raw = if kind.is_token() {
            RawColumn::Tokens {
                interner: Interner::default(),
                offsets: vec![0],
                ids: Vec::new(),
            }
        } else {
            RawColumn::Floats {
                offsets: vec![0],
                values: Vec::new(),
            }
        };
        columns.push((kind, raw));
    }
    let mut row_item = Vec::new();
    let mut first_line: HashMap<u32, usize> = HashMap::new();
    let sep = cfg.seq_separator.as_str();
    let mut floats = Vec::new();
    while let Some(row) = reader.next_row()? {
        let token = row.token(item_col, true)?;
        let id = items.intern(token);
        if items.len() > u32::MAX as usize - 1 {
            return Err(too_large(path, "items"));
        }
        if let Some(prev) = first_line.insert(id, row.line()) {
            return Err(row.error(format!(
                "item `{}` has a second row (the first is line {prev}); expected one row per item",
                crate::data::error::quote(token)
            )));
        }
        row_item.push(id);
        for (&c, (kind, raw)) in cols.iter().zip(columns.iter_mut()) {
            match raw {
                RawColumn::Tokens {
                    interner,
                    offsets,
                    ids,
                } => {
                    if *kind == FieldType::Token {
                        let t = row.cell(c);
                        if !t.is_empty() {
                            ids.push(interner.intern(t));
                        }
                    } else {
                        for t in row.tokens(c, sep) {
                            ids.push(interner.intern(t));
                        }
                    }
                    offsets.push(
                        u32::try_from(ids.len())
                            .map_err(|_| too_large(path, "attribute tokens"))?,
                    );
                }
                RawColumn::Floats { offsets, values } => {
                    if *kind == FieldType::Float {
                        if !row.cell(c).trim().is_empty() {
                            values.push(row.float(c)?);
                        }
                    } else {
                        floats.clear();
                        row.floats(c, sep, &mut floats)?;
                        values.extend_from_slice(&floats);
                    }
                    offsets.push(
                        u32::try_from(values.len())
                            .map_err(|_| too_large(path, "attribute values"))?,
                    );
                }
            }
        }
    }
    stats.item_rows_read = row_item.len();
    Ok(RawItems { row_item, columns })
}

/// The per-row keys a [`TimeOrder`] sorts by.
enum SortKeys<'a> {
    F32(Vec<f32>),
    F64(&'a [f64]),
}

/// The keys of `times` (the interactions that survived filtering) under `order`.
fn sort_keys(times: &[f64], order: TimeOrder) -> SortKeys<'_> {
    match order {
        TimeOrder::RecBoleNormalizedF32 => {
            // RecBole `Dataset._normalize`: `(arr - mn) / (mx - mn)` in float64 with
            // mn, mx = min(arr), max(arr); 1.0 everywhere when they are equal. Then
            // `torch.FloatTensor` rounds to f32 (to nearest, as `as f32` does).
            let (min, max) = times
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &t| {
                    (lo.min(t), hi.max(t))
                });
            let keys = if max == min {
                vec![1.0; times.len()]
            } else {
                // With |timestamps| near f64::MAX the range overflows and keys become NaN;
                // numpy sorts NaN after every number, as total_cmp does a positive NaN.
                let range = max - min;
                times
                    .iter()
                    .map(|&t| match ((t - min) / range) as f32 {
                        k if k.is_nan() => f32::NAN,
                        k => k,
                    })
                    .collect()
            };
            SortKeys::F32(keys)
        }
        TimeOrder::RecBoleF32 => SortKeys::F32(times.iter().map(|&t| t as f32).collect()),
        TimeOrder::Exact => SortKeys::F64(times),
    }
}

/// Loads a dataset from atomic files (see [`LoadConfig`] for what is read and how).
pub fn load(files: &DatasetFiles, cfg: &LoadConfig) -> Result<Dataset, DataError> {
    cfg.validate()?;
    let mut stats = LoadStats::default();
    let mut items = Interner::default();
    let mut users = Interner::default();
    if !cfg.attribute_fields.is_empty() && files.item.is_none() {
        return Err(DataError::InvalidArgument(format!(
            "attributes {:?} requested but dataset `{}` has no .item file",
            cfg.attribute_fields, files.name
        )));
    }
    let raw_items = match &files.item {
        Some(p) => Some(read_items(p, cfg, &mut items, &mut stats)?),
        None => None,
    };

    // Stream the interactions, keeping only the three selected columns.
    let path = files.inter.as_path();
    let mut reader = AtomicReader::open(path, cfg.field_separator)?;
    let header = reader.header().clone();
    let ucol = header.require(&cfg.user_field, &[FieldType::Token], path)?;
    let icol = header.require(&cfg.item_field, &[FieldType::Token], path)?;
    let tcol = header.require(&cfg.time_field, &[FieldType::Float], path)?;
    let filter_items = raw_items.is_some() && cfg.filter_inter_by_item;
    let mut row_user: Vec<u32> = Vec::new();
    let mut row_item: Vec<u32> = Vec::new();
    let mut row_time: Vec<f64> = Vec::new();
    while let Some(row) = reader.next_row()? {
        stats.rows_read += 1;
        let u = row.token(ucol, true)?;
        let i = row.token(icol, true)?;
        let t = row.float(tcol)?;
        let item = if filter_items {
            match items.get(i) {
                Some(id) => id,
                None => {
                    stats.dropped_unknown_item += 1;
                    continue;
                }
            }
        } else {
            items.intern(i)
        };
        let user = users.intern(u);
        if users.len() >= u32::MAX as usize || items.len() >= u32::MAX as usize {
            return Err(too_large(path, "users or items"));
        }
        row_user.push(user);
        row_item.push(item);
        row_time.push(t);
    }
    if row_user.is_empty() {
        let detail = if stats.rows_read == 0 {
            "the file has a header but no rows".to_string()
        } else {
            format!(
                "all {} interactions name items that have no row in the .item file",
                stats.rows_read
            )
        };
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            stage: "reading",
            detail,
        });
    }

    // k-core filtering, iterated until stable (RecBole `_filter_by_inter_num`).
    let n_u = users.len();
    let n_i = items.len();
    let mut user_alive = vec![true; n_u];
    let mut item_alive = vec![true; n_i];
    if cfg.user_min_interactions.is_some() || cfg.item_min_interactions.is_some() {
        let before = row_user.len();
        let mut cu = vec![0usize; n_u];
        let mut ci = vec![0usize; n_i];
        loop {
            cu.iter_mut().for_each(|c| *c = 0);
            ci.iter_mut().for_each(|c| *c = 0);
            for (&u, &i) in row_user.iter().zip(&row_item) {
                cu[u as usize] += 1;
                ci[i as usize] += 1;
            }
            let mut banned = false;
            if let Some(k) = cfg.user_min_interactions {
                for u in 0..n_u {
                    if user_alive[u] && cu[u] < k {
                        user_alive[u] = false;
                        banned = true;
                    }
                }
            }
            if let Some(k) = cfg.item_min_interactions {
                for i in 0..n_i {
                    if item_alive[i] && ci[i] < k {
                        item_alive[i] = false;
                        banned = true;
                    }
                }
            }
            if !banned {
                break;
            }
            stats.kcore_rounds += 1;
            let mut w = 0;
            for r in 0..row_user.len() {
                if user_alive[row_user[r] as usize] && item_alive[row_item[r] as usize] {
                    row_user[w] = row_user[r];
                    row_item[w] = row_item[r];
                    row_time[w] = row_time[r];
                    w += 1;
                }
            }
            row_user.truncate(w);
            row_item.truncate(w);
            row_time.truncate(w);
        }
        stats.dropped_by_kcore = before - row_user.len();
        if row_user.is_empty() {
            return Err(DataError::Empty {
                path: path.to_path_buf(),
                stage: "k-core filtering",
                detail: format!(
                    "no interactions survive user_min_interactions={:?}, item_min_interactions={:?}",
                    cfg.user_min_interactions, cfg.item_min_interactions
                ),
            });
        }
    }

    // Dense ids in RecBole's order: first appearance in the surviving interactions, then
    // the remaining `.item` rows in file order (pandas.factorize over the concatenation).
    const NONE: u32 = u32::MAX;
    let mut user_final = vec![NONE; n_u];
    let mut item_final = vec![NONE; n_i];
    let mut next_user = 1u32;
    let mut next_item = 1u32;
    for (&u, &i) in row_user.iter().zip(&row_item) {
        if user_final[u as usize] == NONE {
            user_final[u as usize] = next_user;
            next_user += 1;
        }
        if item_final[i as usize] == NONE {
            item_final[i as usize] = next_item;
            next_item += 1;
        }
    }
    if let Some(raw) = &raw_items {
        for &i in &raw.row_item {
            if item_alive[i as usize] && item_final[i as usize] == NONE {
                item_final[i as usize] = next_item;
                next_item += 1;
            }
        }
    }
    let n_user_ids = next_user as usize;
    let n_item_ids = next_item as usize;

    let mut user_tokens = vec![String::new(); n_user_ids];
    user_tokens[0] = PAD_TOKEN.to_string();
    for (prov, tok) in users.into_tokens().into_iter().enumerate() {
        let f = user_final[prov];
        if f != NONE {
            user_tokens[f as usize] = tok.into_string();
        }
    }
    let mut item_tokens = vec![String::new(); n_item_ids];
    item_tokens[0] = PAD_TOKEN.to_string();
    for (prov, tok) in items.into_tokens().into_iter().enumerate() {
        let f = item_final[prov];
        if f != NONE {
            item_tokens[f as usize] = tok.into_string();
        }
    }

    // Group by user (counting sort keeps file order), then a stable sort by time per user.
    let mut offsets = vec![0usize; n_user_ids + 1];
    for &u in &row_user {
        offsets[user_final[u as usize] as usize + 1] += 1;
    }
    for k in 1..offsets.len() {
        offsets[k] += offsets[k - 1];
    }
    let mut cursor = offsets.clone();
    let mut order = vec![0u32; row_user.len()];
    for (r, &u) in row_user.iter().enumerate() {
        let f = user_final[u as usize] as usize;
        order[cursor[f]] = r as u32;
        cursor[f] += 1;
    }
    let keys = sort_keys(&row_time, cfg.time_order);
    for u in 1..n_user_ids {
        let seg = &mut order[offsets[u]..offsets[u + 1]];
        match &keys {
            SortKeys::F32(k) => seg.sort_by(|&a, &b| k[a as usize].total_cmp(&k[b as usize])),
            SortKeys::F64(k) => seg.sort_by(|&a, &b| k[a as usize].total_cmp(&k[b as usize])),
        }
    }
    drop(keys);
    let seq_items: Vec<u32> = order
        .iter()
        .map(|&r| item_final[row_item[r as usize] as usize])
        .collect();
    let seq_times: Vec<f64> = order.iter().map(|&r| row_time[r as usize]).collect();
    drop(order);
    drop(row_user);
    drop(row_item);
    drop(row_time);

    // Attribute tables indexed by final item id.
    let mut attributes = Vec::new();
    if let Some(raw) = raw_items {
        // item id -> item file row
        let mut item_row = vec![NONE; n_item_ids];
        for (r, &prov) in raw.row_item.iter().enumerate() {
            let f = item_final[prov as usize];
            if f != NONE {
                item_row[f as usize] = r as u32;
            }
        }
        for ((kind, column), name) in raw.columns.into_iter().zip(&cfg.attribute_fields) {
            let values = match column {
                RawColumn::Tokens {
                    interner,
                    offsets: ro,
                    ids: rids,
                } => {
                    // Attribute ids: first appearance over the surviving item rows in file order.
                    let prov_tokens = interner.into_tokens();
                    let mut remap = vec![NONE; prov_tokens.len()];
                    let mut vocab = vec![PAD_TOKEN.to_string()];
                    for (r, &prov) in raw.row_item.iter().enumerate() {
                        if item_final[prov as usize] == NONE {
                            continue;
                        }
                        for &t in &rids[ro[r] as usize..ro[r + 1] as usize] {
                            if remap[t as usize] == NONE {
                                remap[t as usize] = vocab.len() as u32;
                                vocab.push(prov_tokens[t as usize].to_string());
                            }
                        }
                    }
                    let mut offsets = Vec::with_capacity(n_item_ids + 1);
                    let mut ids = Vec::new();
                    offsets.push(0u32);
                    for &r in &item_row {
                        if r != NONE {
                            let r = r as usize;
                            ids.extend(
                                rids[ro[r] as usize..ro[r + 1] as usize]
                                    .iter()
                                    .map(|&t| remap[t as usize]),
                            );
                        }
                        offsets.push(ids.len() as u32);
                    }
                    AttributeValues::Tokens(TokenTable {
                        vocab,
                        offsets,
                        ids,
                    })
                }
                RawColumn::Floats {
                    offsets: ro,
                    values: rv,
                } => {
                    let mut offsets = Vec::with_capacity(n_item_ids + 1);
                    let mut values = Vec::new();
                    offsets.push(0u32);
                    for &r in &item_row {
                        if r != NONE {
                            let r = r as usize;
                            values.extend_from_slice(&rv[ro[r] as usize..ro[r + 1] as usize]);
                        }
                        offsets.push(values.len() as u32);
                    }
                    AttributeValues::Floats(FloatTable { offsets, values })
                }
            };
            attributes.push(Attribute {
                name: name.clone(),
                kind,
                values,
            });
        }
    }

    Ok(Dataset {
        name: files.name.clone(),
        user_tokens,
        item_tokens,
        offsets,
        items: seq_items,
        times: seq_times,
        attributes,
        stats,
    })
}

impl Dataset {
    /// Loads `<dir>/<name>.inter` (and `.item` when present); see [`load`].
    pub fn load_recbole(
        dir: impl AsRef<Path>,
        name: &str,
        cfg: &LoadConfig,
    ) -> Result<Dataset, DataError> {
        load(&DatasetFiles::recbole(dir, name), cfg)
    }

    /// The dataset's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of users (padding not counted).
    pub fn n_users(&self) -> usize {
        self.user_tokens.len() - 1
    }
    /// Number of items (padding not counted), including items listed only in `.item`.
    pub fn n_items(&self) -> usize {
        self.item_tokens.len() - 1
    }
    /// Rows of a user embedding table: users plus the padding id 0.
    pub fn n_user_ids(&self) -> usize {
        self.user_tokens.len()
    }
    /// Rows of an item embedding table and width of a full score row: items plus padding 0.
    pub fn n_item_ids(&self) -> usize {
        self.item_tokens.len()
    }
    /// Number of interactions after filtering.
    pub fn n_interactions(&self) -> usize {
        self.items.len()
    }
    /// The file token of user id `user` (`[PAD]` for 0).
    pub fn user_token(&self, user: u32) -> &str {
        &self.user_tokens[user as usize]
    }
    /// The file token of item id `item` (`[PAD]` for 0).
    pub fn item_token(&self, item: u32) -> &str {
        &self.item_tokens[item as usize]
    }
    /// The id of the item whose file token is `token` (a linear scan).
    pub fn item_id(&self, token: &str) -> Option<u32> {
        self.item_tokens
            .iter()
            .skip(1)
            .position(|t| t == token)
            .map(|p| p as u32 + 1)
    }
    /// The id of the user whose file token is `token` (a linear scan).
    pub fn user_id(&self, token: &str) -> Option<u32> {
        self.user_tokens
            .iter()
            .skip(1)
            .position(|t| t == token)
            .map(|p| p as u32 + 1)
    }
    /// User `user`'s items in time order (empty for 0).
    pub fn sequence(&self, user: u32) -> &[u32] {
        let u = user as usize;
        &self.items[self.offsets[u]..self.offsets[u + 1]]
    }
    /// The timestamps matching [`Dataset::sequence`].
    pub fn times(&self, user: u32) -> &[f64] {
        let u = user as usize;
        &self.times[self.offsets[u]..self.offsets[u + 1]]
    }
    /// The loaded item attributes, in the order of `LoadConfig::attribute_fields`.
    pub fn attributes(&self) -> &[Attribute] {
        &self.attributes
    }
    /// The attribute named `name`.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }
    /// What loading did.
    pub fn stats(&self) -> &LoadStats {
        &self.stats
    }
    /// One line: users, items, interactions, sequence lengths.
    pub fn summary(&self) -> String {
        let mut lens: Vec<usize> = (1..self.n_user_ids())
            .map(|u| self.sequence(u as u32).len())
            .collect();
        lens.sort_unstable();
        let (min, median, max) = match lens.len() {
            0 => (0, 0, 0),
            n => (lens[0], lens[n / 2], lens[n - 1]),
        };
        format!(
            "{}: {} users, {} items, {} interactions; length min {min}, median {median}, mean {:.1}, max {max}",
            self.name,
            self.n_users(),
            self.n_items(),
            self.n_interactions(),
            self.n_interactions() as f64 / self.n_users().max(1) as f64,
        )
    }
}
