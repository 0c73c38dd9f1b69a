//! Property tests (the reader's fuzz harness): no input makes the reader, the loader, the
//! split, the batcher or the metrics panic, and what they return keeps its invariants.
//! Run longer with `PROPTEST_CASES=20000 cargo test --test data_fuzz`.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;
use std::path::Path;

use asif_kernels::data::{load, AtomicReader, Batcher, DataError, DatasetFiles, LoadConfig, Order};
use asif_kernels::metrics::{pessimistic_rank, Evaluator};
use proptest::prelude::*;

/// Reads every row of `bytes` and touches every cell through every accessor.
fn read_all(bytes: &[u8]) -> Result<usize, DataError> {
    let mut r = AtomicReader::new(Cursor::new(bytes), Path::new("fuzz.inter"), '\t')?;
    let width = r.header().fields.len();
    let mut rows = 0;
    let mut floats = Vec::new();
    while let Some(row) = r.next_row()? {
        rows += 1;
        for i in 0..width {
            let _ = row.token(i, true);
            let _ = row.float(i);
            let _ = row.tokens(i, " ").count();
            floats.clear();
            let _ = row.floats(i, " ", &mut floats);
        }
    }
    Ok(rows)
}

/// Pieces that make files almost right: field names, types, separators, odd numbers, Unicode.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("user_id:token".to_string()),
        Just("item_id:token".to_string()),
        Just("timestamp:float".to_string()),
        Just("class:token_seq".to_string()),
        Just("v:float_seq".to_string()),
        Just("x:int".to_string()),
        Just(":token".to_string()),
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("1e309".to_string()),
        Just("-0".to_string()),
        Just(" 12 ".to_string()),
        Just("a b  c".to_string()),
        Just("用户 🎬".to_string()),
        Just("\u{feff}".to_string()),
        "[0-9]{1,12}",
        "[a-c]{1,2}",
        "[ -~]{0,8}",
        any::<String>().prop_map(|s| s.chars().take(6).collect()),
    ]
}

fn near_valid_file() -> impl Strategy<Value = String> {
    let header = prop_oneof![
        Just("user_id:token\titem_id:token\ttimestamp:float".to_string()),
        Just("user_id:token\titem_id:token\trating:float\ttimestamp:float".to_string()),
        prop::collection::vec(cell(), 0..5).prop_map(|c| c.join("\t")),
    ];
    let line = prop::collection::vec(cell(), 0..6).prop_map(|c| c.join("\t"));
    let eol = prop_oneof![Just("\n"), Just("\r\n"), Just("\t\n"), Just("\n\n")];
    (header, prop::collection::vec((line, eol), 0..30)).prop_map(|(h, rows)| {
        let mut s = h + "\n";
        for (l, e) in rows {
            s.push_str(&l);
            s.push_str(e);
        }
        s
    })
}

fn load_bytes(
    inter: &[u8],
    item: Option<&[u8]>,
    cfg: &LoadConfig,
) -> Result<asif_kernels::data::Dataset, DataError> {
    let dir = tempfile::tempdir().unwrap();
    let ip = dir.path().join("f.inter");
    std::fs::write(&ip, inter).unwrap();
    let item = item.map(|b| {
        let p = dir.path().join("f.item");
        std::fs::write(&p, b).unwrap();
        p
    });
    load(
        &DatasetFiles {
            name: "f".into(),
            inter: ip,
            item,
        },
        cfg,
    )
}

/// Everything a loaded dataset promises (under the default time order).
fn check_dataset(ds: &asif_kernels::data::Dataset, n: usize) {
    let mut interactions = 0;
    // The default order's key: min-max normalised in f64, then rounded to f32 (RecBole).
    let all: Vec<f64> = (1..ds.n_user_ids() as u32)
        .flat_map(|u| ds.times(u).iter().copied())
        .collect();
    let min = all.iter().copied().fold(f64::INFINITY, f64::min);
    let max = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let key = |t: f64| {
        if max == min {
            1.0
        } else {
            ((t - min) / (max - min)) as f32
        }
    };
    for u in 1..ds.n_user_ids() as u32 {
        let seq = ds.sequence(u);
        assert!(!seq.is_empty(), "every user has an interaction");
        assert!(seq
            .iter()
            .all(|&i| i >= 1 && (i as usize) < ds.n_item_ids()));
        assert!(ds.times(u).windows(2).all(|w| key(w[0]) <= key(w[1])));
        interactions += seq.len();
    }
    assert_eq!(interactions, ds.n_interactions());
    let split = ds.leave_one_out();
    assert_eq!(
        split.train.len() + split.valid.len() + split.test.len(),
        ds.n_samples()
    );
    assert_eq!(ds.n_samples(), ds.n_interactions() - ds.n_users());
    if split.train.is_empty() {
        return;
    }
    let batcher = Batcher::new(ds, &split.train, 3, n).unwrap();
    let mut rows = 0;
    for b in batcher.epoch(Order::Shuffled { seed: 5, epoch: 1 }) {
        rows += b.len();
        for r in 0..b.len() {
            let l = b.lengths[r] as usize;
            assert!((1..=n).contains(&l));
            assert!(b.row(r)[..l].iter().all(|&i| i != 0) && b.row(r)[l..].iter().all(|&i| i == 0));
        }
        for a in ds.attributes() {
            if let Some(t) = a.tokens() {
                let toks = b.attribute_tokens(t, 2);
                assert!(toks.iter().all(|&x| (x as usize) < t.n_token_ids()));
            }
        }
    }
    assert_eq!(rows, split.train.len());
}

proptest! {
    // 256 cases by default; PROPTEST_CASES overrides.

    #[test]
    fn reader_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = read_all(&bytes);
    }

    #[test]
    fn reader_never_panics_on_near_valid_text(text in near_valid_file()) {
        match read_all(text.as_bytes()) {
            Ok(_) => {}
            Err(e) => {
                // Every file error names the file, and a line when it is about one.
                let msg = e.to_string();
                prop_assert!(msg.starts_with("fuzz.inter"), "{}", msg);
                prop_assert!(e.line().is_some() || matches!(e, DataError::Io { .. }), "{}", msg);
            }
        }
    }

    #[test]
    fn loader_never_panics(
        inter in near_valid_file(),
        item in prop::option::of(near_valid_file()),
        k in 0usize..4,
        attrs in prop::sample::subsequence(vec!["class", "v", "timestamp", "rating"], 0..3),
        n in 1usize..5,
    ) {
        let cfg = LoadConfig::default().with_kcore(k).with_attributes(&attrs);
        if let Ok(ds) = load_bytes(inter.as_bytes(), item.as_deref().map(str::as_bytes), &cfg) {
            check_dataset(&ds, n);
        }
    }

    /// Valid files with random content: k-core equals a brute-force fixed point, and every
    /// protocol invariant holds.
    #[test]
    fn kcore_matches_brute_force(
        rows in prop::collection::vec((0u8..8, 0u8..8, 0u32..5), 1..60),
        k in 0usize..4,
        n in 1usize..6,
    ) {
        let mut text = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
        for (u, i, t) in &rows {
            text.push_str(&format!("ü{u}\tí{i}\t{t}\n"));
        }
        // Brute force: remove rows until every user and item has >= k rows.
        let mut kept: Vec<(u8, u8, u32)> = rows.clone();
        loop {
            let mut cu: BTreeMap<u8, usize> = BTreeMap::new();
            let mut ci: BTreeMap<u8, usize> = BTreeMap::new();
            for (u, i, _) in &kept {
                *cu.entry(*u).or_default() += 1;
                *ci.entry(*i).or_default() += 1;
            }
            let before = kept.len();
            kept.retain(|(u, i, _)| cu[u] >= k && ci[i] >= k);
            if kept.len() == before { break; }
        }
        let result = load_bytes(text.as_bytes(), None, &LoadConfig::default().with_kcore(k));
        if kept.is_empty() {
            let empty = matches!(result, Err(DataError::Empty { .. }));
            prop_assert!(empty, "expected an Empty error");
        } else {
            let ds = result.unwrap();
            prop_assert_eq!(ds.n_interactions(), kept.len());
            prop_assert_eq!(ds.n_users(), kept.iter().map(|r| r.0).collect::<BTreeSet<_>>().len());
            prop_assert_eq!(ds.n_items(), kept.iter().map(|r| r.1).collect::<BTreeSet<_>>().len());
            // Per user: items in stable time order.
            for u in 1..ds.n_user_ids() as u32 {
                let tok = ds.user_token(u);
                let mut expect: Vec<(u32, String)> = kept.iter()
                    .filter(|r| format!("ü{}", r.0) == tok)
                    .map(|r| (r.2, format!("í{}", r.1)))
                    .collect();
                expect.sort_by_key(|e| e.0); // stable
                let got: Vec<(u32, String)> = ds.sequence(u).iter().zip(ds.times(u))
                    .map(|(&i, &t)| (t as u32, ds.item_token(i).to_string())).collect();
                prop_assert_eq!(got, expect);
            }
            check_dataset(&ds, n);
        }
    }

    /// The pessimistic rank equals its definition, for scores with ties, NaN and infinities.
    #[test]
    fn rank_matches_definition(
        scores in prop::collection::vec(prop_oneof![
            (0i32..4).prop_map(|x| x as f32),
            Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY), any::<f32>(),
        ], 2..40),
        t in any::<prop::sample::Index>(),
        masked in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
        ks in prop::collection::vec(1usize..50, 1..4),
    ) {
        let n = scores.len();
        let target = 1 + t.index(n - 1);
        let masked: Vec<u32> = masked.iter().map(|m| m.index(n) as u32).collect();
        let expect = if scores[target].is_nan() { None } else {
            let m: BTreeSet<usize> = masked.iter().map(|&x| x as usize).collect();
            Some(1 + (1..n).filter(|&j| j != target && !m.contains(&j) && scores[j] >= scores[target]).count())
        };
        prop_assert_eq!(pessimistic_rank(&scores, target as u32, &masked).unwrap(), expect);
        let mut ev = Evaluator::new(&ks).unwrap().with_mask_interacted(true);
        ev.add(&scores, target as u32, &masked).unwrap();
        let m = ev.metrics();
        for &k in &ks {
            let hit = matches!(expect, Some(r) if r <= k);
            prop_assert_eq!(m.hr(k).unwrap(), if hit { 1.0 } else { 0.0 });
            let nd = m.ndcg(k).unwrap();
            prop_assert!((0.0..=1.0).contains(&nd) && (nd > 0.0) == hit);
        }
    }
}
