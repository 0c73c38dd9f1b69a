//! A built-in synthetic dataset, generated from a seed and written as RecBole atomic files so
//! that it goes through the same reader as real data.
//!
//! The world: items belong to categories; a user's current category moves by a fixed sparse
//! Markov chain (stay, or move to one of a few successor categories); each interaction picks an
//! item of the current category among those on the market at that time, by the item's
//! popularity. The catalogue churns: every period, in every category, the oldest items leave
//! and new item ids replace them, while the categories stay the same. So item ids are
//! short-lived and sparse, but the category of an item (the side information) carries the
//! chain's structure over to new items. `docs/data.md` gives the evidence that it helps.
//!
//! Files: `<name>.inter` (`user_id:token item_id:token timestamp:float`, rows in global time
//! order, as a log would be) and `<name>.item` (`item_id:token category:token_seq`, one
//! category token per item; the catalogue in birth order).
use std::io::Write;
use std::path::Path;

use crate::data::error::DataError;
use crate::data::load::{DatasetFiles, LoadConfig};
use crate::data::rng::SplitMix64;

/// Size and shape of the synthetic world. The default (1,000 users, 20 categories, 2,800
/// items, about 35,000 interactions) generates in milliseconds and suits a short CPU run.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticConfig {
    /// Dataset name: the files are `<dir>/<name>.inter` and `<dir>/<name>.item`.
    pub name: String,
    /// Everything random follows from this seed.
    pub seed: u64,
    pub n_users: usize,
    pub n_categories: usize,
    /// Items on the market per category at any time.
    pub active_per_category: usize,
    /// Items per category retired and replaced by new ids at every period boundary.
    pub churn_per_period: usize,
    /// Number of periods on the timeline.
    pub n_periods: usize,
    /// Timestamp units per period (86,400: a period is a day of seconds).
    pub period_len: u64,
    /// Interactions per user, drawn uniformly in `min_len..=max_len`.
    pub min_len: usize,
    pub max_len: usize,
    /// Mean gap between a user's interactions, in periods.
    pub mean_gap_periods: f64,
    /// Probability that the next interaction stays in the current category.
    pub stay_prob: f64,
    /// Number of successor categories each category moves to (with random fixed weights).
    pub successors: usize,
    /// Spread of item popularity: weight = exp(popularity_sigma · N(0,1)).
    pub popularity_sigma: f64,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        SyntheticConfig {
            name: "synthetic".into(),
            seed: 2024,
            n_users: 1000,
            n_categories: 20,
            active_per_category: 24,
            churn_per_period: 4,
            n_periods: 30,
            period_len: 86_400,
            min_len: 10,
            max_len: 60,
            mean_gap_periods: 0.5,
            stay_prob: 0.3,
            successors: 3,
            popularity_sigma: 1.0,
        }
    }
}

impl SyntheticConfig {
    /// The default world with another seed.
    pub fn with_seed(seed: u64) -> Self {
        SyntheticConfig {
            seed,
            ..SyntheticConfig::default()
        }
    }

    /// The [`LoadConfig`] for the generated files: the `category` attribute, no filtering.
    pub fn load_config(&self) -> LoadConfig {
        LoadConfig::default().with_attributes(&["category"])
    }

    /// Number of distinct item ids the catalogue will have.
    pub fn n_catalogue_items(&self) -> usize {
        self.n_categories
            * (self.active_per_category + self.churn_per_period * self.n_periods.saturating_sub(1))
    }

    fn validate(&self) -> Result<(), DataError> {
        let bad = |m: &str| Err(DataError::InvalidArgument(format!("synthetic config: {m}")));
        if self.n_users == 0
            || self.n_categories == 0
            || self.active_per_category == 0
            || self.n_periods == 0
        {
            return bad("users, categories, active items and periods must be positive");
        }
        if self.churn_per_period > self.active_per_category {
            return bad("churn_per_period cannot exceed active_per_category");
        }
        if self.min_len < 1 || self.min_len > self.max_len {
            return bad("need 1 <= min_len <= max_len");
        }
        if self.period_len == 0
            || !(self.mean_gap_periods > 0.0 && self.mean_gap_periods.is_finite())
        {
            return bad("period_len and mean_gap_periods must be positive");
        }
        if !(0.0..=1.0).contains(&self.stay_prob) || !self.popularity_sigma.is_finite() {
            return bad("stay_prob must lie in [0, 1] and popularity_sigma must be finite");
        }
        if self.successors == 0 && self.stay_prob < 1.0 && self.n_categories > 1 {
            return bad("successors must be positive unless stay_prob is 1");
        }
        Ok(())
    }
}

/// The generated world, kept for tests and analysis: the chain and each item's category.
#[derive(Clone, Debug)]
pub struct SyntheticWorld {
    /// `transition[c]` = probabilities of the next category given category `c`.
    pub transition: Vec<Vec<f64>>,
    /// Category index (0-based) of each catalogue item; item `k` has token `i<k+1>`.
    pub item_category: Vec<usize>,
    /// Interactions written.
    pub n_interactions: usize,
}

fn normal(rng: &mut SplitMix64) -> f64 {
    // Box–Muller.
    let u1 = 1.0 - rng.next_f64();
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        action: "cannot write",
        source,
    }
}

/// Generates the dataset into `dir` (created if needed) and returns where its files are.
pub fn generate(cfg: &SyntheticConfig, dir: &Path) -> Result<DatasetFiles, DataError> {
    generate_world(cfg, dir).map(|(files, _)| files)
}

impl crate::data::Dataset {
    /// Generates the synthetic dataset into `dir` and loads it through the atomic-file reader
    /// with [`SyntheticConfig::load_config`].
    pub fn synthetic(cfg: &SyntheticConfig, dir: &Path) -> Result<crate::data::Dataset, DataError> {
        crate::data::load(&generate(cfg, dir)?, &cfg.load_config())
    }
}

/// Like [`generate`], also returning the hidden world (chain, item categories).
pub fn generate_world(
    cfg: &SyntheticConfig,
    dir: &Path,
) -> Result<(DatasetFiles, SyntheticWorld), DataError> {
    cfg.validate()?;
    std::fs::create_dir_all(dir).map_err(|source| DataError::Io {
        path: dir.to_path_buf(),
        action: "cannot create folder",
        source,
    })?;
    let c_n = cfg.n_categories;
    let mut rng = SplitMix64::stream(cfg.seed, 0);

    // The chain: stay with stay_prob, else move to one of `successors` other categories.
    let mut transition = vec![vec![0.0; c_n]; c_n];
    for (c, row) in transition.iter_mut().enumerate() {
        let others: Vec<usize> = (0..c_n).filter(|&x| x != c).collect();
        let k = cfg.successors.min(others.len());
        if k == 0 {
            row[c] = 1.0;
            continue;
        }
        row[c] = cfg.stay_prob;
        let mut pool = others;
        rng.shuffle(&mut pool);
        let w: Vec<f64> = (0..k).map(|_| 0.5 + rng.next_f64()).collect();
        let total: f64 = w.iter().sum();
        for (&d, wd) in pool[..k].iter().zip(&w) {
            row[d] += (1.0 - cfg.stay_prob) * wd / total;
        }
    }

    // The catalogue: per category a FIFO of active items; churn at every period boundary.
    let mut item_category: Vec<usize> = Vec::with_capacity(cfg.n_catalogue_items());
    let mut item_weight: Vec<f64> = Vec::with_capacity(cfg.n_catalogue_items());
    let mut new_item = |c: usize, rng: &mut SplitMix64| {
        item_category.push(c);
        item_weight.push((cfg.popularity_sigma * normal(rng)).exp());
        item_category.len() - 1
    };
    // active[p * c_n + c] = items of category c on the market in period p.
    let mut active: Vec<Vec<usize>> = Vec::with_capacity(cfg.n_periods * c_n);
    let mut current: Vec<std::collections::VecDeque<usize>> = (0..c_n)
        .map(|c| {
            (0..cfg.active_per_category)
                .map(|_| new_item(c, &mut rng))
                .collect()
        })
        .collect();
    for p in 0..cfg.n_periods {
        if p > 0 {
            for (c, q) in current.iter_mut().enumerate() {
                for _ in 0..cfg.churn_per_period {
                    q.pop_front();
                    q.push_back(new_item(c, &mut rng));
                }
            }
        }
        for q in &current {
            active.push(q.iter().copied().collect());
        }
    }

    // Users: a start time, gaps around mean_gap_periods, a category walk.
    let horizon = cfg.n_periods as f64 * cfg.period_len as f64;
    let mean_gap = cfg.mean_gap_periods * cfg.period_len as f64;
    let mut rows: Vec<(u64, u32, u32)> = Vec::new(); // (time, user, item)
    let mut weights = Vec::with_capacity(cfg.active_per_category);
    for u in 0..cfg.n_users {
        let mut rng = SplitMix64::stream(cfg.seed, 1 + u as u64);
        let len = rng.range_inclusive(cfg.min_len as u64, cfg.max_len as u64) as usize;
        let span = (len as f64 * mean_gap).min(horizon * 0.999);
        let mut t = rng.next_f64() * (horizon - span);
        let mut c = rng.below(c_n as u64) as usize;
        for _ in 0..len {
            let p = ((t / cfg.period_len as f64) as usize).min(cfg.n_periods - 1);
            let pool = &active[p * c_n + c];
            weights.clear();
            weights.extend(pool.iter().map(|&i| item_weight[i]));
            let item = pool[rng.weighted(&weights)];
            rows.push((t as u64, u as u32, item as u32));
            c = rng.weighted(&transition[c]);
            // Gaps uniform in [0.5, 1.5] × mean, capped so the walk stays on the timeline.
            t = (t + mean_gap * (0.5 + rng.next_f64())).min(horizon - 1.0);
        }
    }
    // A log is written in time order; ties keep user order.
    rows.sort_by_key(|r| r.0);

    let inter = dir.join(format!("{}.inter", cfg.name));
    let item = dir.join(format!("{}.item", cfg.name));
    write_file(&inter, |w| {
        writeln!(w, "user_id:token\titem_id:token\ttimestamp:float")?;
        for &(t, u, i) in &rows {
            writeln!(w, "u{}\ti{}\t{}", u + 1, i + 1, t)?;
        }
        Ok(())
    })?;
    write_file(&item, |w| {
        writeln!(w, "item_id:token\tcategory:token_seq")?;
        for (i, &c) in item_category.iter().enumerate() {
            writeln!(w, "i{}\tc{:02}", i + 1, c + 1)?;
        }
        Ok(())
    })?;
    let files = DatasetFiles {
        name: cfg.name.clone(),
        inter,
        item: Some(item),
    };
    Ok((
        files,
        SyntheticWorld {
            transition,
            item_category,
            n_interactions: rows.len(),
        },
    ))
}

/// Writes one atomic file whole (temporary sibling, then rename): several runs may regenerate
/// the same dataset at once, and none may read another's half-written file.
fn write_file(
    path: &Path,
    body: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>,
) -> Result<(), DataError> {
    let mut bytes = Vec::new();
    body(&mut bytes).map_err(io_err(path))?;
    crate::files::replace_file(path, &bytes).map_err(io_err(path))
}
