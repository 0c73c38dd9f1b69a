//! The atomic-file reader and the protocol on small hand-written files: ids, order, k-core,
//! augmentation, leave-one-out, batches, and the typed errors for bad files.
use std::path::Path;

use asif_kernels::data::{
    load, Batch, Batcher, DataError, Dataset, DatasetFiles, LoadConfig, Order, Sample, TimeOrder,
};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn files(dir: &Path, inter: &str, item: Option<&str>) -> DatasetFiles {
    DatasetFiles {
        name: "t".into(),
        inter: write(dir, "t.inter", inter),
        item: item.map(|s| write(dir, "t.item", s)),
    }
}

fn load_str(inter: &str, item: Option<&str>, cfg: &LoadConfig) -> Result<Dataset, DataError> {
    let dir = tempfile::tempdir().unwrap();
    load(&files(dir.path(), inter, item), cfg)
}

fn tokens(ds: &Dataset, user: &str) -> Vec<String> {
    let u = ds.user_id(user).unwrap();
    ds.sequence(u)
        .iter()
        .map(|&i| ds.item_token(i).to_string())
        .collect()
}

const INTER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
a\tx\t1\t30\n\
b\ty\t2\t10\n\
a\ty\t3\t10\n\
a\tz\t4\t20\n\
b\tx\t5\t5\n";

#[test]
fn ids_follow_first_appearance_and_sequences_are_time_ordered() {
    let ds = load_str(INTER, None, &LoadConfig::default()).unwrap();
    assert_eq!((ds.n_users(), ds.n_items(), ds.n_interactions()), (2, 3, 5));
    assert_eq!((ds.n_user_ids(), ds.n_item_ids()), (3, 4));
    assert_eq!(ds.user_token(0), "[PAD]");
    assert_eq!(ds.item_token(0), "[PAD]");
    assert_eq!((ds.user_token(1), ds.user_token(2)), ("a", "b"));
    assert_eq!(
        (ds.item_token(1), ds.item_token(2), ds.item_token(3)),
        ("x", "y", "z")
    );
    assert_eq!(tokens(&ds, "a"), ["y", "z", "x"]);
    assert_eq!(tokens(&ds, "b"), ["x", "y"]);
    assert_eq!(ds.times(1), &[10.0, 20.0, 30.0]);
    assert_eq!(ds.sequence(0), &[] as &[u32]);
}

#[test]
fn tied_timestamps_keep_file_order_and_f32_rounding_makes_ties() {
    // 881250949 and 881250950 both round to the f32 881250944 (f32 steps are 64 there), so
    // RecBole without normalisation sees a tie and keeps file order; the exact order puts
    // 881250949 first.
    let inter = "user_id:token\ttimestamp:float\titem_id:token\n\
u\t881250950\tlate\n\
u\t5\tfirst\n\
u\t881250949\tearly\n\
u\t7\ttie1\n\
u\t7\ttie2\n";
    let recbole = load_str(
        inter,
        None,
        &LoadConfig {
            time_order: TimeOrder::RecBoleF32,
            ..LoadConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        tokens(&recbole, "u"),
        ["first", "tie1", "tie2", "late", "early"]
    );
    let exact = load_str(
        inter,
        None,
        &LoadConfig {
            time_order: TimeOrder::Exact,
            ..LoadConfig::default()
        },
    )
    .unwrap();
    assert_eq!(
        tokens(&exact, "u"),
        ["first", "tie1", "tie2", "early", "late"]
    );
}

#[test]
fn normalized_keys_that_overflow_sort_last() {
    // Timestamps ±1e308: max - min overflows to inf, so 1e308's key is inf / inf = NaN (a NaN
    // with its sign bit set, on x86) while -1e308's and 0's are 0. The NaN key sorts after every
    // number, as numpy sorts NaN, whatever its sign; the two 0 keys keep file order.
    let inter = "user_id:token\titem_id:token\ttimestamp:float\n\
u\tlow\t-1e308\n\
u\thigh\t1e308\n\
u\tzero\t0\n";
    let ds = load_str(inter, None, &LoadConfig::default()).unwrap();
    assert_eq!(tokens(&ds, "u"), ["low", "zero", "high"]);
}

#[test]
fn load_config_checks_separators_and_attribute_fields() {
    let inter = "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\n";
    let item = "item_id:token\tclass:token\na\tA\n";
    for sep in ['\n', '\r'] {
        let cfg = LoadConfig {
            field_separator: sep,
            ..LoadConfig::default()
        };
        let (e, m) = err(inter, Some(item), &cfg);
        assert!(
            matches!(e, DataError::InvalidArgument(_)) && m.contains("line break"),
            "{sep:?}: {m}"
        );
    }
    // The item field as an attribute of itself, and an attribute listed twice.
    for fields in [&["item_id"][..], &["class", "class"][..]] {
        let (e, m) = err(
            inter,
            Some(item),
            &LoadConfig::default().with_attributes(fields),
        );
        assert!(
            matches!(e, DataError::InvalidArgument(_)) && m.contains("listed twice"),
            "{fields:?}: {m}"
        );
    }
    assert!(load_str(
        inter,
        Some(item),
        &LoadConfig::default().with_attributes(&["class"])
    )
    .is_ok());
    // k = 0 turns k-core off: no bound at all, not a bound of 0.
    let off = LoadConfig::default().with_kcore(0);
    assert_eq!(off.user_min_interactions, None);
    assert_eq!(off.item_min_interactions, None);
    assert_eq!(
        LoadConfig::default().with_kcore(1).user_min_interactions,
        Some(1)
    );
}

#[test]
fn default_order_is_recboles_normalized_f32() {
    // RecBole's ml-100k configuration min-max normalises timestamps (in f64) and then rounds
    // them to f32. Here min = 0 (user v's) and max = 2^30 + 1030: 2^30 + 1000 and 2^30 + 1010
    // map to within 3e-8 of 1.0 and both round to 1.0 (f32 steps below 1.0 are 6e-8), a tie
    // kept in file order; near 0 the f32 steps are fine, so 1 and 2 stay apart. Min and max
    // are over every user's interactions.
    let top = (1u64 << 30) + 1000;
    let inter = format!(
        "user_id:token\titem_id:token\ttimestamp:float\n\
u\tlate\t{}\n\
u\tearly\t{}\n\
u\ttwo\t2\n\
u\tone\t1\n\
v\tlast\t{}\n\
v\tzero\t0\n",
        top + 10,
        top,
        top + 30
    );
    let ds = load_str(&inter, None, &LoadConfig::default()).unwrap();
    assert_eq!(tokens(&ds, "u"), ["one", "two", "late", "early"]);
    assert_eq!(tokens(&ds, "v"), ["zero", "last"]);
    let cfg = |time_order| LoadConfig {
        time_order,
        ..LoadConfig::default()
    };
    let exact = load_str(&inter, None, &cfg(TimeOrder::Exact)).unwrap();
    assert_eq!(tokens(&exact, "u"), ["one", "two", "early", "late"]);
    // A tie only the normalisation makes: with min = −1e9, 1.25 and 1.5 both map to about
    // 1 − 1e-10, which rounds to the f32 1.0, while as raw f32 they are distinct.
    let small = "user_id:token\titem_id:token\ttimestamp:float\n\
u\tb\t1.5\n\
u\ta\t1.25\n\
u\tlo\t-1e9\n";
    let ds = load_str(small, None, &LoadConfig::default()).unwrap();
    assert_eq!(tokens(&ds, "u"), ["lo", "b", "a"]);
    let raw = load_str(small, None, &cfg(TimeOrder::RecBoleF32)).unwrap();
    assert_eq!(tokens(&raw, "u"), ["lo", "a", "b"]);
    // All timestamps equal: RecBole sets every key to 1.0, so file order.
    let flat = "user_id:token\titem_id:token\ttimestamp:float\n\
u\tx\t5\n\
u\ty\t5\n";
    let ds = load_str(flat, None, &LoadConfig::default()).unwrap();
    assert_eq!(tokens(&ds, "u"), ["x", "y"]);
}

#[test]
fn unicode_tokens_custom_separators_crlf_bom_and_blank_lines() {
    let inter = "\u{feff}user_id:token,item_id:token,timestamp:float\r\n\
Ünïcødé 用户,🎬 电影,1\r\n\
\r\n\
Ünïcødé 用户,книга,2\r\n";
    let item = "item_id:token,genre:token_seq,year:token,score:float,vec:float_seq\r\n\
🎬 电影,Dràma|Comédie||,1995, 4.5 ,1|2.5\r\n\
книга,,,,\r\n";
    let cfg = LoadConfig {
        field_separator: ',',
        seq_separator: "|".into(),
        ..LoadConfig::default()
    }
    .with_attributes(&["genre", "year", "score", "vec"]);
    let ds = load_str(inter, Some(item), &cfg).unwrap();
    assert_eq!(ds.n_users(), 1);
    assert_eq!(tokens(&ds, "Ünïcødé 用户"), ["🎬 电影", "книга"]);
    let film = ds.item_id("🎬 电影").unwrap();
    let book = ds.item_id("книга").unwrap();
    let genre = ds.attribute("genre").unwrap().tokens().unwrap();
    assert_eq!(genre.vocab(), ["[PAD]", "Dràma", "Comédie"]);
    assert_eq!(genre.tokens(film), &[1, 2]);
    assert_eq!(genre.tokens(book), &[] as &[u32]);
    assert_eq!(genre.tokens(0), &[] as &[u32]);
    assert_eq!(genre.padded(3), vec![0, 0, 0, 1, 2, 0, 0, 0, 0]);
    let year = ds.attribute("year").unwrap().tokens().unwrap();
    assert_eq!(year.tokens(film), &[1]);
    assert_eq!(year.tokens(book), &[] as &[u32]);
    assert_eq!(
        ds.attribute("score")
            .unwrap()
            .floats()
            .unwrap()
            .values(film),
        &[4.5]
    );
    assert_eq!(
        ds.attribute("score")
            .unwrap()
            .floats()
            .unwrap()
            .values(book),
        &[] as &[f64]
    );
    assert_eq!(
        ds.attribute("vec").unwrap().floats().unwrap().values(film),
        &[1.0, 2.5]
    );
}

/// A field separator of more than one byte ('│' is three) is searched as a string: each cell
/// starts after the whole separator.
#[test]
fn a_multi_byte_field_separator_splits_cells() {
    let inter = "user_id:token│item_id:token│timestamp:float\nu1│i1│1\nu1│i2│2\nu2│i1│3\n";
    let cfg = LoadConfig {
        field_separator: '│',
        ..LoadConfig::default()
    };
    let ds = load_str(inter, None, &cfg).unwrap();
    assert_eq!(ds.n_users(), 2);
    assert_eq!(tokens(&ds, "u1"), ["i1", "i2"]);
    assert_eq!(tokens(&ds, "u2"), ["i1"]);
}

/// A float_seq cell must hold finite numbers only: `inf` and `NaN` parse as f64 but are refused.
#[test]
fn float_seq_cells_refuse_non_finite_numbers() {
    let inter = "user_id:token\titem_id:token\ttimestamp:float\nu1\ti1\t1\nu1\ti2\t2\n";
    let cfg = LoadConfig::default().with_attributes(&["vec"]);
    for bad in ["inf", "NaN", "-inf"] {
        let item = format!("item_id:token\tvec:float_seq\ni1\t1 2\ni2\t3 {bad}\n");
        let (e, m) = err(inter, Some(&item), &cfg);
        assert!(
            matches!(e, DataError::Parse { line: 3, .. })
                && m.contains("a list of finite numbers")
                && m.contains(bad),
            "{bad}: {m}"
        );
    }
    let item = "item_id:token\tvec:float_seq\ni1\t1 2\ni2\t3 -4.5\n";
    let ds = load_str(inter, Some(item), &cfg).unwrap();
    let vec = ds.attribute("vec").unwrap().floats().unwrap();
    assert_eq!(vec.values(ds.item_id("i2").unwrap()), &[3.0, -4.5]);
}

/// A batch's row count: B rows, and none for a batch built empty by hand.
#[test]
fn batch_len_counts_rows() {
    let ds = seq_dataset(&[4, 5]);
    let train = ds.leave_one_out().train;
    let batcher = Batcher::new(&ds, &train, 64, 6).unwrap();
    let batch = batcher.epoch(Order::Sequential).next().unwrap();
    assert_eq!(batch.len(), train.len());
    assert!(!batch.is_empty());
    let empty = Batch {
        samples: vec![],
        users: vec![],
        items: vec![],
        lengths: vec![],
        targets: vec![],
        ..batch
    };
    assert_eq!((empty.len(), empty.is_empty()), (0, true));
}

#[test]
fn item_file_filters_interactions_and_adds_unseen_items() {
    let item = "item_id:token\tclass:token_seq\n\
w\tW1 W2\n\
x\tX\n\
y\tY W1\n";
    // z has no .item row: its interaction is dropped (RecBole filter_inter_by_user_or_item).
    let cfg = LoadConfig::default().with_attributes(&["class"]);
    let ds = load_str(INTER, Some(item), &cfg).unwrap();
    assert_eq!(ds.stats().dropped_unknown_item, 1);
    assert_eq!(ds.n_interactions(), 4);
    // x, y from the interactions first, then w (only in .item).
    assert_eq!(
        (ds.item_token(1), ds.item_token(2), ds.item_token(3)),
        ("x", "y", "w")
    );
    assert_eq!(ds.n_items(), 3);
    let class = ds.attribute("class").unwrap().tokens().unwrap();
    // Attribute ids follow the .item file order: W1, W2, X, Y.
    assert_eq!(class.vocab(), ["[PAD]", "W1", "W2", "X", "Y"]);
    assert_eq!(class.tokens(1), &[3]);
    assert_eq!(class.tokens(2), &[4, 1]);
    assert_eq!(class.tokens(3), &[1, 2]);
    // Without the filter, z stays and has no attributes.
    let cfg = LoadConfig {
        filter_inter_by_item: false,
        ..cfg
    };
    let ds = load_str(INTER, Some(item), &cfg).unwrap();
    assert_eq!(ds.n_interactions(), 5);
    let z = ds.item_id("z").unwrap();
    assert_eq!(
        ds.attribute("class").unwrap().tokens().unwrap().tokens(z),
        &[] as &[u32]
    );
    // With item 2-core, the never-seen w is gone as in RecBole.
    let ds = load_str(INTER, Some(item), &LoadConfig::default().with_kcore(2)).unwrap();
    assert!(ds.item_id("w").is_none());
}

#[test]
fn kcore_iterates_until_stable() {
    // 2-core, one removal leading to the next: pass 1 removes user c and item q (1 each);
    // pass 2 removes user d (left with p); pass 3 removes item p (left with e); pass 4
    // removes user e (left with m); pass 5 finds nothing.
    let inter = "user_id:token\titem_id:token\ttimestamp:float\n\
a\tm\t1\na\tn\t2\n\
b\tm\t1\nb\tn\t2\n\
c\tm\t1\n\
d\tp\t1\nd\tq\t2\n\
e\tp\t1\ne\tm\t2\n";
    let ds = load_str(inter, None, &LoadConfig::default().with_kcore(2)).unwrap();
    let users: Vec<&str> = (1..ds.n_user_ids() as u32)
        .map(|u| ds.user_token(u))
        .collect();
    assert_eq!(users, ["a", "b"]);
    assert_eq!(ds.n_items(), 2);
    assert_eq!(ds.n_interactions(), 4);
    assert_eq!(ds.stats().kcore_rounds, 4, "{:?}", ds.stats());
    assert_eq!(ds.stats().dropped_by_kcore, 5);
    // Off by default.
    assert_eq!(
        load_str(inter, None, &LoadConfig::default())
            .unwrap()
            .n_interactions(),
        9
    );
    // Users only.
    let cfg = LoadConfig {
        user_min_interactions: Some(2),
        ..LoadConfig::default()
    };
    assert_eq!(load_str(inter, None, &cfg).unwrap().n_interactions(), 8);
}

fn seq_dataset(lens: &[usize]) -> Dataset {
    let mut text = String::from("user_id:token\titem_id:token\ttimestamp:float\n");
    for (u, &len) in lens.iter().enumerate() {
        for k in 0..len {
            text.push_str(&format!("u{u}\ti{}\t{k}\n", 100 * u + k));
        }
    }
    load_str(&text, None, &LoadConfig::default()).unwrap()
}

#[test]
fn augmentation_and_leave_one_out() {
    // Users with 1, 2, 3, 4 and 6 interactions -> 0, 1, 2, 3, 5 samples.
    let ds = seq_dataset(&[1, 2, 3, 4, 6]);
    assert_eq!(ds.n_samples(), 11);
    let samples: Vec<Sample> = ds.samples().collect();
    assert_eq!(samples.len(), 11);
    assert_eq!(samples[0], Sample { user: 2, pos: 1 });
    assert_eq!(samples[10], Sample { user: 5, pos: 5 });
    // seq_dataset's timestamps are 0, 1, … per user: the target's is its position.
    assert_eq!(ds.target_time(samples[10]), 5.0);
    assert_eq!(ds.target_time(samples[0]), 1.0);
    // Lengths sorted 1 2 3 4 6: the median is the middle one, the mean 16 / 5.
    assert_eq!(
        ds.summary(),
        "t: 5 users, 16 items, 16 interactions; length min 1, median 3, mean 3.2, max 6"
    );
    let split = ds.leave_one_out();
    let by_user = |v: &[Sample], u: u32| {
        v.iter()
            .filter(|s| s.user == u)
            .map(|s| s.pos)
            .collect::<Vec<_>>()
    };
    // 1 interaction: no sample. 2 interactions = 1 sample: min(2, 0) = 0 held out, so it trains.
    assert_eq!(by_user(&split.train, 1), [] as [u32; 0]);
    assert_eq!(by_user(&split.train, 2), [1]);
    assert!(by_user(&split.test, 2).is_empty() && by_user(&split.valid, 2).is_empty());
    // 3 interactions = 2 samples: min(2, 1) = 1 held out, as test.
    assert_eq!(by_user(&split.train, 3), [1]);
    assert_eq!(by_user(&split.valid, 3), [] as [u32; 0]);
    assert_eq!(by_user(&split.test, 3), [2]);
    // 4 interactions = 3 samples: train 1, valid 2, test 3.
    assert_eq!(
        (
            by_user(&split.train, 4),
            by_user(&split.valid, 4),
            by_user(&split.test, 4)
        ),
        (vec![1], vec![2], vec![3])
    );
    // 6 interactions: train 1..=3, valid 4, test 5.
    assert_eq!(by_user(&split.train, 5), [1, 2, 3]);
    assert_eq!(
        (by_user(&split.valid, 5), by_user(&split.test, 5)),
        (vec![4], vec![5])
    );
    assert_eq!(
        split.train.len() + split.valid.len() + split.test.len(),
        ds.n_samples()
    );

    // Inputs: the last <= n items before the target; test input includes the valid target.
    let u = 5;
    let seq = ds.sequence(u).to_vec();
    let test = split.test.iter().find(|s| s.user == u).copied().unwrap();
    let valid = split.valid.iter().find(|s| s.user == u).copied().unwrap();
    assert_eq!(ds.target(test), seq[5]);
    assert_eq!(ds.input(test, 50), &seq[..5]);
    assert_eq!(ds.input(test, 3), &seq[2..5]);
    assert_eq!(ds.input(valid, 3), &seq[1..4]);
    assert_eq!(ds.history(test), &seq[..5]);
    assert_eq!(ds.histories(&[test, valid]), [&seq[..5], &seq[..4]]);
    assert!(ds.input(test, 3).contains(&ds.target(valid)));

    // The split has no randomness: loading again gives the same split.
    assert_eq!(seq_dataset(&[1, 2, 3, 4, 6]).leave_one_out(), split);
}

#[test]
fn batches_are_padded_and_shuffles_reproducible() {
    let ds = seq_dataset(&[5, 9, 3, 12, 7, 4]);
    let split = ds.leave_one_out();
    let n = 4;
    let batcher = Batcher::new(&ds, &split.train, 5, n).unwrap();
    assert_eq!(batcher.n_batches(), split.train.len().div_ceil(5));
    assert_eq!(batcher.n_samples(), split.train.len());
    assert!(split.train.len() > 1, "n_samples must tell 0 and 1 apart");
    // An epoch is an ExactSizeIterator: its length counts down from n_batches (more than 1 here).
    let mut epoch = batcher.epoch(Order::Sequential);
    let n_batches = batcher.n_batches();
    assert!(n_batches > 2);
    assert_eq!(epoch.size_hint(), (n_batches, Some(n_batches)));
    epoch.next();
    assert_eq!(epoch.len(), n_batches - 1);
    assert_eq!(epoch.by_ref().count(), n_batches - 1);
    assert_eq!(epoch.len(), 0);
    let collect = |order| {
        batcher
            .epoch(order)
            .flat_map(|b| b.samples)
            .collect::<Vec<_>>()
    };
    let seq = collect(Order::Sequential);
    assert_eq!(seq, split.train);
    let e0 = collect(Order::Shuffled { seed: 1, epoch: 0 });
    assert_eq!(e0, collect(Order::Shuffled { seed: 1, epoch: 0 }));
    assert_ne!(e0, collect(Order::Shuffled { seed: 1, epoch: 1 }));
    assert_ne!(e0, collect(Order::Shuffled { seed: 2, epoch: 0 }));
    assert_ne!(e0, seq);
    let mut sorted = e0.clone();
    sorted.sort();
    assert_eq!(sorted, split.train, "every sample exactly once");

    for batch in batcher.epoch(Order::Shuffled { seed: 1, epoch: 3 }) {
        assert!(batch.len() <= 5 && !batch.is_empty());
        assert_eq!(batch.items.len(), batch.len() * n);
        let mask = batch.valid_mask();
        for (b, &s) in batch.samples.iter().enumerate() {
            let input = ds.input(s, n);
            let l = batch.lengths[b] as usize;
            assert_eq!(l, input.len());
            assert!((1..=n).contains(&l));
            assert_eq!(&batch.row(b)[..l], input);
            assert!(batch.row(b)[l..].iter().all(|&i| i == 0));
            assert_eq!(batch.targets[b], ds.target(s));
            assert_eq!(batch.users[b], s.user);
            assert!(mask[b * n..(b + 1) * n]
                .iter()
                .enumerate()
                .all(|(t, &m)| m == if t < l { 1.0 } else { 0.0 }));
        }
    }
    assert!(Batcher::new(&ds, &split.train, 0, 4).is_err());
    assert!(Batcher::new(&ds, &split.train, 4, 0).is_err());
    assert!(Batcher::new(&ds, &[Sample { user: 1, pos: 0 }], 4, 4).is_err());
    assert!(Batcher::new(&ds, &[Sample { user: 99, pos: 1 }], 4, 4).is_err());
}

#[test]
fn batch_attribute_tokens_are_ready_for_pooling() {
    let inter = "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\tb\t2\nu\tc\t3\n";
    let item = "item_id:token\tclass:token_seq\na\tA B C\nb\tB\nc\tC A\n";
    let ds = load_str(
        inter,
        Some(item),
        &LoadConfig::default().with_attributes(&["class"]),
    )
    .unwrap();
    let split = ds.leave_one_out();
    let batcher = Batcher::new(&ds, &split.test, 8, 3).unwrap();
    let batch = batcher.epoch(Order::Sequential).next().unwrap();
    assert_eq!(batch.row(0), &[1, 2, 0]); // a b pad
    let class = ds.attribute("class").unwrap().tokens().unwrap();
    assert_eq!(class.max_tokens(), 3);
    // The CSR form (what the model uploads): vocabulary ids by first appearance (A 1, B 2, C 3),
    // the padding item's row empty, then a: A B C, b: B, c: C A.
    assert_eq!(class.offsets(), &[0, 0, 3, 4, 6]);
    assert_eq!(class.ids(), &[1, 2, 3, 2, 3, 1]);
    assert_eq!(ds.name(), "t");
    let names: Vec<&str> = ds.attributes().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["class"]);
    // width 2: a -> A B (cut), b -> B, pad -> nothing
    assert_eq!(batch.attribute_tokens(class, 2), vec![1, 2, 2, 0, 0, 0]);
    assert_eq!(
        batch.attribute_tokens(class, 3),
        vec![1, 2, 3, 2, 0, 0, 0, 0, 0]
    );

    // A table with fewer rows than the batch's item ids (here another data set's, of one item):
    // items past its end have no tokens and pool to zero, as items without an `.item` row do;
    // they are not read past the table's end.
    let small = load_str(
        "user_id:token\titem_id:token\ttimestamp:float\nu\ta\t1\nu\ta\t2\nu\ta\t3\n",
        Some("item_id:token\tclass:token_seq\na\tA B\n"),
        &LoadConfig::default().with_attributes(&["class"]),
    )
    .unwrap();
    let small_class = small.attribute("class").unwrap().tokens().unwrap();
    assert_eq!(small_class.n_rows(), 2); // the padding item and a
    assert_eq!(
        batch.attribute_tokens(small_class, 2),
        vec![1, 2, 0, 0, 0, 0]
    );
}

fn err(inter: &str, item: Option<&str>, cfg: &LoadConfig) -> (DataError, String) {
    let e = load_str(inter, item, cfg).unwrap_err();
    let msg = e.to_string();
    (e, msg)
}

/// The four RecBole field types: their header spellings, and which are remapped to ids and which
/// hold a list in one cell.
#[test]
fn field_types_spell_and_classify() {
    use asif_kernels::data::FieldType;
    let all = [
        ("token", true, false),
        ("token_seq", true, true),
        ("float", false, false),
        ("float_seq", false, true),
    ];
    for (name, token, seq) in all {
        let kind = FieldType::parse(name).unwrap();
        assert_eq!((kind.as_str(), kind.to_string()), (name, name.to_string()));
        assert_eq!((kind.is_token(), kind.is_seq()), (token, seq), "{name}");
    }
    assert_eq!(FieldType::parse("int"), None);
}

#[test]
fn bad_files_give_typed_errors_with_file_line_and_expectation() {
    let cfg = LoadConfig::default();
    let head = "user_id:token\titem_id:token\ttimestamp:float\n";

    let (e, m) = err("", None, &cfg);
    assert!(matches!(e, DataError::Header { line: 1, .. }), "{m}");
    assert!(m.contains("t.inter:1") && m.contains("empty"), "{m}");

    let (e, m) = err("user_id\titem_id:token\ttimestamp:float\n", None, &cfg);
    assert!(
        matches!(e, DataError::Header { line: 1, .. }) && m.contains("`name:type`"),
        "{m}"
    );

    let (e, m) = err("user_id:token\titem_id:int\ttimestamp:float\n", None, &cfg);
    assert!(
        matches!(e, DataError::Header { .. })
            && m.contains("column 2:")
            && m.contains("token, token_seq, float or float_seq")
            && m.contains("`int`"),
        "{m}"
    );

    let (e, m) = err("user_id:token\tuser_id:token\n", None, &cfg);
    assert!(
        matches!(e, DataError::Header { .. }) && m.contains("twice"),
        "{m}"
    );

    let (e, m) = err("user_id:token\titem_id:token\n", None, &cfg);
    assert!(
        matches!(&e, DataError::MissingField { field, line: 1, .. } if field == "timestamp"),
        "{m}"
    );
    assert!(
        m.contains("t.inter:1")
            && m.contains("timestamp:float")
            && m.contains("user_id:token, item_id:token"),
        "{m}"
    );

    let (e, m) = err(
        "user_id:token\titem_id:token_seq\ttimestamp:float\n",
        None,
        &cfg,
    );
    assert!(
        matches!(&e, DataError::MissingField { field, .. } if field == "item_id")
            && m.contains("found token_seq"),
        "{m}"
    );

    let (e, m) = err(&format!("{head}a\tx\t1\nb\ty\n"), None, &cfg);
    assert!(
        matches!(
            e,
            DataError::CellCount {
                line: 3,
                expected: 3,
                found: 2,
                ..
            }
        ),
        "{m}"
    );
    assert!(m.contains("t.inter:3"), "{m}");

    let (e, m) = err(&format!("{head}a\tx\t1\tEXTRA\n"), None, &cfg);
    assert!(
        matches!(
            e,
            DataError::CellCount {
                line: 2,
                expected: 3,
                found: 4,
                ..
            }
        ),
        "{m}"
    );

    // A long cell is quoted cut short at a char boundary: 'x' then 40 two-byte 'é', so byte 60
    // (the cut) falls inside the 30th 'é' and the quote keeps 'x' and 29 of them.
    let long = format!("x{}", "é".repeat(40));
    let (e, m) = err(&format!("{head}a\tx\t{long}\n"), None, &cfg);
    let quoted = format!("`x{}...`", "é".repeat(29));
    assert!(
        matches!(&e, DataError::Parse { value, .. } if *value == quoted[1..quoted.len() - 1]),
        "{m}"
    );
    assert!(m.contains(&quoted), "{m}");

    let (e, m) = err(&format!("{head}a\tx\t1\n\nb\ty\tyesterday\n"), None, &cfg);
    assert!(
        matches!(&e, DataError::Parse { line: 4, field, .. } if field == "timestamp"),
        "{m}"
    );
    assert!(
        m.contains("t.inter:4") && m.contains("a finite number") && m.contains("`yesterday`"),
        "{m}"
    );

    let (e, m) = err(&format!("{head}a\tx\tNaN\n"), None, &cfg);
    assert!(matches!(e, DataError::Parse { line: 2, .. }), "{m}");

    let (e, m) = err(&format!("{head}\tx\t1\n"), None, &cfg);
    assert!(
        matches!(&e, DataError::Parse { field, .. } if field == "user_id")
            && m.contains("non-empty token"),
        "{m}"
    );

    let mut bytes = format!("{head}a\tx\t1\n").into_bytes();
    bytes.extend_from_slice(b"b\t\xff\xfe\t2\n");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.inter"), &bytes).unwrap();
    let e = load(&DatasetFiles::recbole(dir.path(), "t"), &cfg).unwrap_err();
    assert!(
        matches!(e, DataError::Malformed { line: 3, .. }) && e.to_string().contains("UTF-8"),
        "{e}"
    );

    let (e, m) = err(head, None, &cfg);
    assert!(
        matches!(e, DataError::Empty { .. }) && m.contains("no rows"),
        "{m}"
    );

    let (e, m) = err(
        &format!("{head}a\tx\t1\nb\ty\t2\n"),
        None,
        &cfg.clone().with_kcore(2),
    );
    assert!(
        matches!(
            e,
            DataError::Empty {
                stage: "k-core filtering",
                ..
            }
        ),
        "{m}"
    );
    assert!(m.contains("t.inter"), "{m}");

    let item = "item_id:token\tclass:token_seq\nx\tA\nq\tB\n";
    let (e, m) = err(&format!("{head}a\tz\t1\n"), Some(item), &cfg);
    assert!(
        matches!(e, DataError::Empty { .. }) && m.contains(".item"),
        "{m}"
    );

    let item = "item_id:token\tclass:token_seq\nx\tA\nx\tB\n";
    let (e, m) = err(&format!("{head}a\tx\t1\n"), Some(item), &cfg);
    assert!(
        matches!(e, DataError::Malformed { line: 3, .. })
            && m.contains("t.item:3")
            && m.contains("line 2"),
        "{m}"
    );

    let item = "item_id:token\tclass:token_seq\nx\tA\n";
    let (e, m) = err(
        &format!("{head}a\tx\t1\n"),
        Some(item),
        &cfg.clone().with_attributes(&["genre"]),
    );
    assert!(
        matches!(&e, DataError::MissingField { field, .. } if field == "genre")
            && m.contains("t.item:1"),
        "{m}"
    );

    let item = "item_id:token\tscore:float\nx\thigh\n";
    let (e, m) = err(
        &format!("{head}a\tx\t1\n"),
        Some(item),
        &cfg.clone().with_attributes(&["score"]),
    );
    assert!(
        matches!(e, DataError::Parse { line: 2, .. }) && m.contains("t.item:2"),
        "{m}"
    );

    // Missing files and impossible configurations.
    let e = load(
        &DatasetFiles {
            name: "none".into(),
            inter: "/nonexistent/none.inter".into(),
            item: None,
        },
        &cfg,
    )
    .unwrap_err();
    assert!(
        matches!(e, DataError::Io { .. }) && e.to_string().contains("/nonexistent/none.inter"),
        "{e}"
    );
    let (e, _) = err(
        &format!("{head}a\tx\t1\n"),
        None,
        &cfg.clone().with_attributes(&["class"]),
    );
    assert!(matches!(e, DataError::InvalidArgument(_)));
    let (e, _) = err(
        &format!("{head}a\tx\t1\n"),
        None,
        &LoadConfig {
            seq_separator: String::new(),
            ..cfg.clone()
        },
    );
    assert!(matches!(e, DataError::InvalidArgument(_)));
}

#[test]
fn error_accessors_name_file_and_line() {
    let (e, _) = err(
        "user_id:token\titem_id:token\ttimestamp:float\na\tb\n",
        None,
        &LoadConfig::default(),
    );
    assert_eq!(e.line(), Some(2));
    assert!(e.path().unwrap().ends_with("t.inter"));
}
