//! The built-in synthetic dataset: reproducible from its seed, read through the same reader,
//! and side information (the item category) really helps on it: a category-aware count
//! predictor beats ID-only count predictors by a clear margin under the same full-ranking
//! metrics (numbers in docs/data.md).
use std::io::Write;
use std::time::Instant;

use asif_kernels::data::synthetic::{self, SyntheticConfig};
use asif_kernels::data::{load, Dataset, Sample};
use asif_kernels::metrics::{Evaluator, Metrics};

fn build(cfg: &SyntheticConfig) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic::generate(cfg, dir.path()).unwrap();
    let ds = load(&files, &cfg.load_config()).unwrap();
    (dir, ds)
}

#[test]
fn synthetic_is_reproducible() {
    let cfg = SyntheticConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let start = Instant::now();
    let files = synthetic::generate(&cfg, dir.path()).unwrap();
    let gen = start.elapsed();
    let ds = load(&files, &cfg.load_config()).unwrap();
    let total = start.elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "synthetic: generated in {gen:?}, loaded by {total:?}; {}",
        ds.summary()
    );
    assert_eq!(ds.n_users(), cfg.n_users);
    assert!(
        ds.n_items() > 2000 && ds.n_items() <= cfg.n_catalogue_items(),
        "{}",
        ds.n_items()
    );
    assert!(
        ds.n_interactions() > 25_000 && ds.n_interactions() < 45_000,
        "{}",
        ds.n_interactions()
    );

    // Same seed: byte-identical files. Another seed: different files.
    let inter = std::fs::read(&files.inter).unwrap();
    let item = std::fs::read(files.item.as_ref().unwrap()).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let again = synthetic::generate(&cfg, dir2.path()).unwrap();
    assert_eq!(inter, std::fs::read(&again.inter).unwrap());
    assert_eq!(item, std::fs::read(again.item.as_ref().unwrap()).unwrap());
    let other =
        synthetic::generate(&SyntheticConfig::with_seed(cfg.seed + 1), dir2.path()).unwrap();
    assert_ne!(inter, std::fs::read(&other.inter).unwrap());

    // One category token per item, 20 categories (+ padding).
    let cat = ds.attribute("category").unwrap().tokens().unwrap();
    assert_eq!(cat.n_token_ids(), cfg.n_categories + 1);
    let direct = Dataset::synthetic(&cfg, dir2.path()).unwrap();
    assert_eq!(direct.leave_one_out(), ds.leave_one_out());
    assert_eq!(direct.n_item_ids(), ds.n_item_ids());
    assert!((1..ds.n_item_ids() as u32).all(|i| cat.tokens(i).len() == 1));
}

/// Recent popularity: training interactions per item in the period of a timestamp and the
/// one before it.
struct RecentPopularity {
    period: f64,
    counts: Vec<Vec<u32>>, // [period][item]
}

impl RecentPopularity {
    fn new(ds: &Dataset, train_end: &[usize], period: f64) -> Self {
        let max_t = (1..ds.n_user_ids() as u32)
            .flat_map(|u| ds.times(u).iter().copied())
            .fold(0.0, f64::max);
        let n_p = (max_t / period) as usize + 1;
        let mut counts = vec![vec![0u32; ds.n_item_ids()]; n_p];
        for u in 1..ds.n_user_ids() as u32 {
            let end = train_end[u as usize];
            for (&i, &t) in ds.sequence(u)[..end].iter().zip(&ds.times(u)[..end]) {
                counts[(t / period) as usize][i as usize] += 1;
            }
        }
        RecentPopularity { period, counts }
    }
    fn at(&self, t: f64, item: usize) -> f64 {
        let p = (t / self.period) as usize;
        let mut c = self.counts[p][item];
        if p > 0 {
            c += self.counts[p - 1][item];
        }
        c as f64
    }
}

fn evaluate(
    ds: &Dataset,
    samples: &[Sample],
    mut score: impl FnMut(Sample, &mut [f32]),
) -> Metrics {
    let mut ev = Evaluator::new(&[10, 20]).unwrap();
    let mut row = vec![0f32; ds.n_item_ids()];
    for &s in samples {
        row.fill(0.0);
        score(s, &mut row);
        ev.add(&row, ds.target(s), ds.history(s)).unwrap();
    }
    ev.metrics()
}

pub struct Comparison {
    pub popularity: Metrics,
    pub id_transition: Metrics,
    pub category: Metrics,
    /// Share of test targets with at most 5 training interactions.
    pub cold_test_targets: f64,
}

pub fn compare(cfg: &SyntheticConfig) -> Comparison {
    let (_dir, ds) = build(cfg);
    let split = ds.leave_one_out();
    // Training interactions: up to and including the last training target of each user.
    let mut train_end = vec![0usize; ds.n_user_ids()];
    for s in &split.train {
        train_end[s.user as usize] = train_end[s.user as usize].max(s.pos as usize + 1);
    }
    let n = ds.n_item_ids();
    let pop = RecentPopularity::new(&ds, &train_end, cfg.period_len as f64);
    let cat = ds.attribute("category").unwrap().tokens().unwrap();
    let n_cat = cat.n_token_ids();
    let item_cat: Vec<usize> = (0..n as u32)
        .map(|i| cat.tokens(i).first().copied().unwrap_or(0) as usize)
        .collect();

    // ID-only: item -> next item counts over training pairs.
    let mut trans: Vec<std::collections::HashMap<u32, u32>> = vec![Default::default(); n];
    // Category-aware: category -> next category counts over the same pairs.
    let mut cat_trans = vec![vec![1.0f64; n_cat]; n_cat]; // add-one smoothing
    for u in 1..ds.n_user_ids() as u32 {
        let seq = &ds.sequence(u)[..train_end[u as usize]];
        for w in seq.windows(2) {
            *trans[w[0] as usize].entry(w[1]).or_default() += 1;
            cat_trans[item_cat[w[0] as usize]][item_cat[w[1] as usize]] += 1.0;
        }
    }
    for row in &mut cat_trans {
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|x| *x /= s);
    }
    let last_time = |s: Sample| ds.times(s.user)[s.pos as usize - 1];
    let last_item = |s: Sample| ds.sequence(s.user)[s.pos as usize - 1] as usize;

    let popularity = evaluate(&ds, &split.test, |s, row| {
        let t = last_time(s);
        for (j, r) in row.iter_mut().enumerate().skip(1) {
            *r = pop.at(t, j) as f32;
        }
    });
    // The mix of transitions and popularity is the ID-only predictor's one free parameter;
    // it gets the best of a few values on the test split itself (an advantage, not a handicap).
    let id_transition = [0.5, 0.9, 0.99]
        .into_iter()
        .map(|alpha| {
            evaluate(&ds, &split.test, |s, row| {
                let t = last_time(s);
                let total: f64 = (1..n).map(|j| pop.at(t, j)).sum::<f64>().max(1.0);
                for (j, r) in row.iter_mut().enumerate().skip(1) {
                    *r = ((1.0 - alpha) * pop.at(t, j) / total) as f32;
                }
                let next = &trans[last_item(s)];
                let out: f64 = next.values().map(|&c| c as f64).sum::<f64>().max(1.0);
                for (&j, &c) in next {
                    row[j as usize] += (alpha * c as f64 / out) as f32;
                }
            })
        })
        .max_by(|a, b| a.ndcg(20).unwrap().total_cmp(&b.ndcg(20).unwrap()))
        .unwrap();
    // How cold the test targets are: training interactions of the target item.
    let mut item_train = vec![0usize; n];
    for u in 1..ds.n_user_ids() as u32 {
        for &i in &ds.sequence(u)[..train_end[u as usize]] {
            item_train[i as usize] += 1;
        }
    }
    let cold = split
        .test
        .iter()
        .filter(|&&s| item_train[ds.target(s) as usize] <= 5)
        .count() as f64
        / split.test.len() as f64;
    let category = evaluate(&ds, &split.test, |s, row| {
        let t = last_time(s);
        let c_last = item_cat[last_item(s)];
        let mut per_cat = vec![0.0f64; n_cat];
        for j in 1..n {
            per_cat[item_cat[j]] += pop.at(t, j);
        }
        for (j, r) in row.iter_mut().enumerate().skip(1) {
            let c = item_cat[j];
            *r = (cat_trans[c_last][c] * pop.at(t, j) / per_cat[c].max(1.0)) as f32;
        }
    });
    Comparison {
        popularity,
        id_transition,
        category,
        cold_test_targets: cold,
    }
}

#[test]
fn side_information_helps_on_synthetic() {
    for seed in [2024u64, 7] {
        let cmp = compare(&SyntheticConfig::with_seed(seed));
        let _ = writeln!(
            std::io::stderr(),
            "synthetic seed {seed}, test split ({:.0}% of targets have ≤ 5 training interactions), full ranking:\n  recent popularity (ID only): {}\n  item transitions + popularity (ID only): {}\n  category chain + popularity in category: {}",
            100.0 * cmp.cold_test_targets,
            cmp.popularity,
            cmp.id_transition,
            cmp.category
        );
        let best_id_hr = cmp
            .popularity
            .hr(20)
            .unwrap()
            .max(cmp.id_transition.hr(20).unwrap());
        let best_id_ndcg = cmp
            .popularity
            .ndcg(20)
            .unwrap()
            .max(cmp.id_transition.ndcg(20).unwrap());
        let cat_hr = cmp.category.hr(20).unwrap();
        let cat_ndcg = cmp.category.ndcg(20).unwrap();
        assert!(
            cat_hr > 1.5 * best_id_hr,
            "HR@20: category {cat_hr} vs best ID-only {best_id_hr}"
        );
        assert!(
            cat_ndcg > 1.5 * best_id_ndcg,
            "NDCG@20: category {cat_ndcg} vs best ID-only {best_id_ndcg}"
        );
    }
}

/// Runs started at once (the grid's lanes) regenerate the same synthetic files in the same
/// folder: a reader must never see a writer's half-written file (the files are replaced whole).
#[test]
fn concurrent_generation_never_shows_a_partial_file() {
    let cfg = SyntheticConfig::default();
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic::generate(&cfg, dir.path()).unwrap();
    let whole = std::fs::read(&files.inter).unwrap();
    let writing = std::sync::atomic::AtomicUsize::new(2);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                for _ in 0..20 {
                    synthetic::generate(&cfg, dir.path()).unwrap();
                }
                writing.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            });
        }
        scope.spawn(|| {
            let mut reads = 0;
            while writing.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                let seen = std::fs::read(&files.inter).unwrap();
                reads += 1;
                assert!(
                    seen == whole,
                    "read {} of {} bytes on read {reads}",
                    seen.len(),
                    whole.len()
                );
            }
        });
    });
}

#[test]
fn synthetic_configs_are_checked() {
    let ok = SyntheticConfig::default();
    // 20 categories × (24 active + 4 churned in each of 29 later periods).
    assert_eq!(ok.n_catalogue_items(), 20 * (24 + 4 * 29));
    let dir = tempfile::tempdir().unwrap();
    // Each bad configuration: what it breaks, whether the positivity check itself must refuse
    // it (not a later check), and the edit that breaks it.
    type Edit = fn(&mut SyntheticConfig);
    let bad: [(&str, bool, Edit); 13] = [
        ("n_users 0", true, |c| c.n_users = 0),
        ("n_categories 0", true, |c| c.n_categories = 0),
        ("active 0", true, |c| {
            c.active_per_category = 0;
            c.churn_per_period = 0;
        }),
        ("n_periods 0", true, |c| c.n_periods = 0),
        ("churn > active", false, |c| c.churn_per_period = 25),
        ("min_len 0", false, |c| c.min_len = 0),
        ("min_len > max_len", false, |c| c.min_len = 61),
        ("period_len 0", false, |c| c.period_len = 0),
        ("gap inf", false, |c| c.mean_gap_periods = f64::INFINITY),
        ("gap 0", false, |c| c.mean_gap_periods = 0.0),
        ("stay_prob 1.5", false, |c| c.stay_prob = 1.5),
        ("sigma NaN", false, |c| c.popularity_sigma = f64::NAN),
        ("successors 0", false, |c| c.successors = 0),
    ];
    for (what, positivity, edit) in bad {
        let mut cfg = ok.clone();
        edit(&mut cfg);
        let e = synthetic::generate(&cfg, dir.path()).unwrap_err();
        assert!(
            matches!(e, asif_kernels::data::DataError::InvalidArgument(_)),
            "{what}: {e}"
        );
        if positivity {
            assert!(e.to_string().contains("must be positive"), "{what}: {e}");
        }
    }
    // The boundaries that are allowed: churn = active, min_len = max_len, stay_prob 1 with
    // no successors; min_len 1; one category with no successors (it can only stay); periods so
    // long that f64 time cannot tell the horizon's last unit from the horizon.
    let edges = [
        SyntheticConfig {
            n_users: 3,
            churn_per_period: 24,
            min_len: 5,
            max_len: 5,
            stay_prob: 1.0,
            successors: 0,
            ..ok.clone()
        },
        SyntheticConfig {
            n_users: 3,
            min_len: 1,
            ..ok.clone()
        },
        SyntheticConfig {
            n_users: 3,
            n_categories: 1,
            successors: 0,
            ..ok.clone()
        },
        // Periods of 2⁶² time units: the timeline's last instant, horizon − 1, rounds to the
        // horizon itself, so a late interaction's period index must be clamped to the last one.
        SyntheticConfig {
            n_users: 3,
            n_periods: 3,
            period_len: 1 << 62,
            ..ok.clone()
        },
    ];
    for edge in &edges {
        synthetic::generate(edge, dir.path()).unwrap();
    }
}

/// FNV-1a (64-bit) of a file's bytes: a short, dependency-free fingerprint of the default world's
/// 700 KB of files, the same function as `scripts/oracle/synthetic_known_answers.py`'s.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator's output as known answers (issue 16): `scripts/oracle/synthetic_known_answers.py`
/// states the world of the module doc again in Python, drawn in the crate's order, and wrote
/// `tests/fixtures/synthetic/tiny.{inter,item}` and the numbers about the default world below.
/// The same seed must give the same files on every version: the README's default run and
/// docs/data.md's tables are made from them.
#[test]
fn synthetic_files_are_known() {
    let fixtures =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/synthetic");
    let dir = tempfile::tempdir().unwrap();
    // The script's TINY world.
    let tiny = SyntheticConfig {
        name: "tiny".into(),
        seed: 77,
        n_users: 9,
        n_categories: 4,
        active_per_category: 3,
        churn_per_period: 2,
        n_periods: 5,
        period_len: 7200,
        min_len: 3,
        max_len: 7,
        mean_gap_periods: 0.7,
        stay_prob: 0.25,
        successors: 2,
        popularity_sigma: 1.3,
    };
    let files = synthetic::generate(&tiny, dir.path()).unwrap();
    for (ours, name) in [
        (&files.inter, "tiny.inter"),
        (files.item.as_ref().unwrap(), "tiny.item"),
    ] {
        let ours = std::fs::read_to_string(ours).unwrap();
        let known = std::fs::read_to_string(fixtures.join(name)).unwrap();
        assert_eq!(ours, known, "{name} differs from the fixture");
    }

    let files = synthetic::generate(&SyntheticConfig::default(), dir.path()).unwrap();
    let inter = std::fs::read(&files.inter).unwrap();
    let item = std::fs::read(files.item.as_ref().unwrap()).unwrap();
    let text = std::str::from_utf8(&inter).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len() - 1, 35_552, "interactions");
    assert_eq!(
        lines[1..4],
        ["u984\ti212\t192", "u751\ti155\t275", "u24\ti179\t340"]
    );
    assert_eq!(
        lines[lines.len() - 3..],
        [
            "u976\ti2370\t2591999",
            "u976\ti2795\t2591999",
            "u981\ti2701\t2591999"
        ]
    );
    assert_eq!(
        item.iter().filter(|&&b| b == b'\n').count() - 1,
        2800,
        "items"
    );
    assert_eq!(fnv1a64(&inter), 0x0a13_fb51_ff67_e6cc, "inter fingerprint");
    assert_eq!(fnv1a64(&item), 0xd34e_2bf6_cd1c_a7ef, "item fingerprint");
}
