//! Loading a RecBole dataset (spec §5.1–5.2), in named stages:
//!
//! 1. `read_items`: the `.item` file, one row per item, its attribute columns with provisional
//!    token ids;
//! 2. `read_interactions`: the `.inter` file's user, item and time columns, dropping rows whose
//!    item has no `.item` row;
//! 3. `kcore_filter`: k-core filtering, iterated until stable;
//! 4. `DenseIds::assign`: dense ids in RecBole's order, then `final_tokens` (id → file token);
//! 5. `sequences`: interactions grouped by user, each user's in time order (a stable sort);
//! 6. `attribute_tables`: the attribute tables indexed by final item id.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::data::atomic::{AtomicReader, FieldType};
use crate::data::dataset::{
    Attribute, AttributeValues, Dataset, FloatTable, LoadStats, TokenTable, PAD_TOKEN,
};
use crate::data::error::DataError;
use crate::data::intern::Interner;

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

/// Stage 1: reads `.item`: one row per item (a second row is an error), the selected
/// attribute columns with provisional token ids.
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
    let filter_items = raw_items.is_some() && cfg.filter_inter_by_item;
    let path = files.inter.as_path();
    let mut rows = read_interactions(path, cfg, filter_items, &mut users, &mut items, &mut stats)?;
    let item_alive = kcore_filter(&mut rows, users.len(), items.len(), cfg, &mut stats, path)?;
    let ids = DenseIds::assign(
        &rows,
        raw_items.as_ref(),
        &item_alive,
        users.len(),
        items.len(),
    );
    let user_tokens = final_tokens(users, &ids.user, ids.n_user_ids);
    let item_tokens = final_tokens(items, &ids.item, ids.n_item_ids);
    let (offsets, seq_items, seq_times) = sequences(rows, &ids, cfg.time_order);
    let attributes = match raw_items {
        Some(raw) => attribute_tables(raw, &ids, &cfg.attribute_fields),
        None => Vec::new(),
    };
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
}

/// The interactions that survive reading (and then filtering): one entry per row, with
/// provisional user and item ids.
struct Interactions {
    user: Vec<u32>,
    item: Vec<u32>,
    time: Vec<f64>,
}

/// Stage 2: streams `.inter`, keeping only the user, item and time columns. With
/// `filter_items`, rows whose item has no `.item` row are dropped (and counted).
fn read_interactions(
    path: &Path,
    cfg: &LoadConfig,
    filter_items: bool,
    users: &mut Interner,
    items: &mut Interner,
    stats: &mut LoadStats,
) -> Result<Interactions, DataError> {
    let mut reader = AtomicReader::open(path, cfg.field_separator)?;
    let header = reader.header().clone();
    let ucol = header.require(&cfg.user_field, &[FieldType::Token], path)?;
    let icol = header.require(&cfg.item_field, &[FieldType::Token], path)?;
    let tcol = header.require(&cfg.time_field, &[FieldType::Float], path)?;
    let mut rows = Interactions {
        user: Vec::new(),
        item: Vec::new(),
        time: Vec::new(),
    };
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
        rows.user.push(user);
        rows.item.push(item);
        rows.time.push(t);
    }
    if rows.user.is_empty() {
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
    Ok(rows)
}

/// Stage 3: k-core filtering of `rows` over `n_users` and `n_items` provisional ids, iterated
/// until stable (RecBole `_filter_by_inter_num`). Returns which provisional items survive.
fn kcore_filter(
    rows: &mut Interactions,
    n_users: usize,
    n_items: usize,
    cfg: &LoadConfig,
    stats: &mut LoadStats,
    path: &Path,
) -> Result<Vec<bool>, DataError> {
    let (n_u, n_i) = (n_users, n_items);
    let mut user_alive = vec![true; n_u];
    let mut item_alive = vec![true; n_i];
    if cfg.user_min_interactions.is_none() && cfg.item_min_interactions.is_none() {
        return Ok(item_alive);
    }
    let Interactions {
        user: row_user,
        item: row_item,
        time: row_time,
    } = rows;
    let before = row_user.len();
    let mut cu = vec![0usize; n_u];
    let mut ci = vec![0usize; n_i];
    loop {
        cu.iter_mut().for_each(|c| *c = 0);
        ci.iter_mut().for_each(|c| *c = 0);
        for (&u, &i) in row_user.iter().zip(row_item.iter()) {
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
    Ok(item_alive)
}

/// No final id: the provisional id did not survive.
const NONE: u32 = u32::MAX;

/// Provisional id → final dense id (1-based; [`NONE`] where dropped), for users and items.
struct DenseIds {
    user: Vec<u32>,
    item: Vec<u32>,
    /// Final ids including the padding 0.
    n_user_ids: usize,
    n_item_ids: usize,
}

impl DenseIds {
    /// Stage 4: dense ids in RecBole's order: first appearance in the surviving interactions,
    /// then the remaining live `.item` rows in file order (pandas.factorize over the
    /// concatenation).
    fn assign(
        rows: &Interactions,
        raw_items: Option<&RawItems>,
        item_alive: &[bool],
        n_users: usize,
        n_items: usize,
    ) -> DenseIds {
        let mut user_final = vec![NONE; n_users];
        let mut item_final = vec![NONE; n_items];
        let mut next_user = 1u32;
        let mut next_item = 1u32;
        for (&u, &i) in rows.user.iter().zip(&rows.item) {
            if user_final[u as usize] == NONE {
                user_final[u as usize] = next_user;
                next_user += 1;
            }
            if item_final[i as usize] == NONE {
                item_final[i as usize] = next_item;
                next_item += 1;
            }
        }
        if let Some(raw) = raw_items {
            for &i in &raw.row_item {
                if item_alive[i as usize] && item_final[i as usize] == NONE {
                    item_final[i as usize] = next_item;
                    next_item += 1;
                }
            }
        }
        DenseIds {
            user: user_final,
            item: item_final,
            n_user_ids: next_user as usize,
            n_item_ids: next_item as usize,
        }
    }
}

/// Final id → file token (`[PAD]` at 0) from an interner's provisional ids and their final ids.
fn final_tokens(interner: Interner, final_ids: &[u32], n_ids: usize) -> Vec<String> {
    let mut tokens = vec![String::new(); n_ids];
    tokens[0] = PAD_TOKEN.to_string();
    for (prov, tok) in interner.into_tokens().into_iter().enumerate() {
        let f = final_ids[prov];
        if f != NONE {
            tokens[f as usize] = tok.into_string();
        }
    }
    tokens
}

/// Stage 5: groups the interactions by final user id (a counting sort keeps file order), then
/// sorts each user's stably by time under `time_order`. Returns the per-user offsets (user 0
/// empty) and the items (final ids) and times in that order.
fn sequences(
    rows: Interactions,
    ids: &DenseIds,
    time_order: TimeOrder,
) -> (Vec<usize>, Vec<u32>, Vec<f64>) {
    let n_user_ids = ids.n_user_ids;
    let user_final = &ids.user;
    let mut offsets = vec![0usize; n_user_ids + 1];
    for &u in &rows.user {
        offsets[user_final[u as usize] as usize + 1] += 1;
    }
    for k in 1..offsets.len() {
        offsets[k] += offsets[k - 1];
    }
    let mut cursor = offsets.clone();
    let mut order = vec![0u32; rows.user.len()];
    for (r, &u) in rows.user.iter().enumerate() {
        let f = user_final[u as usize] as usize;
        order[cursor[f]] = r as u32;
        cursor[f] += 1;
    }
    let keys = sort_keys(&rows.time, time_order);
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
        .map(|&r| ids.item[rows.item[r as usize] as usize])
        .collect();
    let seq_times: Vec<f64> = order.iter().map(|&r| rows.time[r as usize]).collect();
    (offsets, seq_items, seq_times)
}

/// Stage 6: the attribute tables indexed by final item id, in `fields` order (token ids by
/// first appearance over the surviving item rows in file order).
fn attribute_tables(raw: RawItems, ids: &DenseIds, fields: &[String]) -> Vec<Attribute> {
    let n_item_ids = ids.n_item_ids;
    let item_final = &ids.item;
    // item id -> item file row
    let mut item_row = vec![NONE; n_item_ids];
    for (r, &prov) in raw.row_item.iter().enumerate() {
        let f = item_final[prov as usize];
        if f != NONE {
            item_row[f as usize] = r as u32;
        }
    }
    let mut attributes = Vec::new();
    for ((kind, column), name) in raw.columns.into_iter().zip(fields) {
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
    attributes
}
