//! The dataset type: each user's interactions in time order with dense ids, and the item
//! attribute tables (token and float columns as CSR tables). Loading is `load.rs`; the token
//! interner it uses is `intern.rs`.
use crate::data::atomic::FieldType;

/// The token shown for id 0 (padding), as in RecBole.
pub const PAD_TOKEN: &str = "[PAD]";

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
    pub(super) vocab: Vec<String>,
    pub(super) offsets: Vec<u32>,
    pub(super) ids: Vec<u32>,
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
    pub(super) offsets: Vec<u32>,
    pub(super) values: Vec<f64>,
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

impl Dataset {
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
