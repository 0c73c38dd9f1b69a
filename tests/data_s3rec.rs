//! The S³-Rec format converter (`data::s3rec`): the counts of `../shared/data/README.md` for
//! Beauty and Yelp, a round trip through the RecBole reader, and typed, located errors on small
//! synthetic inputs. The real files are read from `../shared/data/s3rec/` (or
//! `ASIF_S3REC_DIR`); without them those tests print one skip line and pass, unless
//! `ASIF_REQUIRE_DATA=1` (CI), which makes a missing file a failure.
use std::io::Write;
use std::path::{Path, PathBuf};

use asif_kernels::data::{load, DataError, S3Rec, S3RecFiles};

fn s3rec_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ASIF_S3REC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/s3rec"));
    let files = ["Beauty", "Yelp"].map(|n| S3RecFiles::new(&dir, n));
    if files
        .iter()
        .all(|f| f.sequences.is_file() && f.attributes.is_file())
    {
        return Some(dir);
    }
    assert!(
        std::env::var_os("ASIF_REQUIRE_DATA").is_none_or(|v| v != "1"),
        "ASIF_REQUIRE_DATA=1 but {} lacks Beauty.txt, Yelp.txt or their _item2attributes.json",
        dir.display()
    );
    static SKIP_LINE: std::sync::Once = std::sync::Once::new();
    SKIP_LINE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED S3-Rec data tests: {} lacks Beauty/Yelp files (set ASIF_S3REC_DIR)",
            dir.display()
        );
    });
    None
}

/// The counts of `../shared/data/README.md`'s table.
struct Counts {
    users: usize,
    items: usize,
    interactions: usize,
    attributes: usize,
    /// Attributes per item: min, mean (to 2 decimals), max.
    per_item: (usize, f64, usize),
}

/// Reads a data set, checks its counts, converts it and reads it back through the RecBole
/// reader: every user's sequence and every item's attributes must come back unchanged.
fn check(name: &str, expected: Counts) {
    let Some(dir) = s3rec_dir() else { return };
    let data = S3Rec::read(&S3RecFiles::new(&dir, name)).unwrap();
    assert_eq!(data.n_users(), expected.users, "{name} users");
    assert_eq!(data.n_items(), expected.items, "{name} items");
    assert_eq!(data.n_interactions(), expected.interactions, "{name}");
    assert_eq!(data.n_attributes(), expected.attributes, "{name}");
    let per_item: Vec<usize> = (0..data.n_items())
        .map(|i| data.item_attributes(i).len())
        .collect();
    let mean = per_item.iter().sum::<usize>() as f64 / per_item.len() as f64;
    assert_eq!(per_item.iter().min().copied(), Some(expected.per_item.0));
    assert!(
        (mean - expected.per_item.1).abs() < 0.005,
        "{name} mean {mean}"
    );
    assert_eq!(per_item.iter().max().copied(), Some(expected.per_item.2));

    let out = tempfile::tempdir().unwrap();
    let files = data.write_recbole(out.path()).unwrap();
    let ds = load(&files, &S3Rec::load_config()).unwrap();
    assert_eq!(ds.n_users(), data.n_users());
    assert_eq!(ds.n_items(), data.n_items());
    assert_eq!(ds.n_interactions(), data.n_interactions());
    assert_eq!(ds.stats().dropped_unknown_item, 0);
    for (u, user) in data.users().iter().enumerate() {
        let id = u as u32 + 1; // users get ids in file order
        assert_eq!(ds.user_token(id), user);
        let back: Vec<&str> = ds.sequence(id).iter().map(|&i| ds.item_token(i)).collect();
        let line: Vec<&str> = data.sequence(u).collect();
        assert_eq!(back, line, "{name} user {user}");
    }
    let categories = ds.attribute("categories").unwrap().tokens().unwrap();
    for (i, item) in data.items().iter().enumerate() {
        let id = i as u32 + 1; // items get ids in order of first appearance
        assert_eq!(ds.item_token(id), item);
        let back: Vec<&str> = categories
            .tokens(id)
            .iter()
            .map(|&t| categories.vocab()[t as usize].as_str())
            .collect();
        assert_eq!(back, data.item_attributes(i), "{name} item {item}");
    }
    assert_eq!(categories.n_token_ids(), expected.attributes + 1);
    // Every user has at least 3 items (5-core), so leave-one-out holds out two samples each.
    let split = ds.leave_one_out();
    assert_eq!(split.test.len(), expected.users);
    assert_eq!(split.valid.len(), expected.users);
    assert_eq!(
        split.train.len(),
        expected.interactions - 3 * expected.users
    );
}

#[test]
fn beauty_counts_and_round_trip() {
    check(
        "Beauty",
        Counts {
            users: 22_363,
            items: 12_101,
            interactions: 198_502,
            attributes: 637,
            per_item: (1, 3.72, 6),
        },
    );
}

#[test]
fn yelp_counts_and_round_trip() {
    check(
        "Yelp",
        Counts {
            users: 30_431,
            items: 20_033,
            interactions: 316_354,
            attributes: 1_001,
            per_item: (0, 4.84, 20),
        },
    );
}

/// Writes `txt` and `json` as the S³-Rec files of data set `t` into a fresh folder.
fn synthetic(txt: &[u8], json: &[u8]) -> (tempfile::TempDir, S3RecFiles) {
    let dir = tempfile::tempdir().unwrap();
    let files = S3RecFiles::new(dir.path(), "t");
    std::fs::write(&files.sequences, txt).unwrap();
    std::fs::write(&files.attributes, json).unwrap();
    (dir, files)
}

const JSON: &str = "{\"10\": [1, 2], \"11\": [2], \"12\": []}";

#[test]
fn small_file_converts_in_order_with_an_order_column() {
    let (dir, files) = synthetic(b"\xef\xbb\xbf1 10 11 10\r\n\n2 12 11\n", JSON.as_bytes());
    let data = S3Rec::read(&files).unwrap();
    assert_eq!(
        (data.n_users(), data.n_items(), data.n_interactions()),
        (2, 3, 5)
    );
    assert_eq!(data.n_attributes(), 2);
    assert_eq!(data.name(), "t");
    assert_eq!(data.users(), ["1", "2"]);
    assert_eq!(data.items(), ["10", "11", "12"]);
    let out = data.write_recbole(dir.path().join("recbole")).unwrap();
    let inter = std::fs::read_to_string(&out.inter).unwrap();
    assert_eq!(
        inter,
        "user_id:token\titem_id:token\ttimestamp:float\n\
         1\t10\t1\n1\t11\t2\n1\t10\t3\n2\t12\t1\n2\t11\t2\n"
    );
    let item = std::fs::read_to_string(out.item.as_ref().unwrap()).unwrap();
    assert_eq!(
        item,
        "item_id:token\tcategories:token_seq\n10\t1 2\n11\t2\n12\t\n"
    );
    let ds = load(&out, &S3Rec::load_config()).unwrap();
    let seq: Vec<&str> = ds.sequence(1).iter().map(|&i| ds.item_token(i)).collect();
    assert_eq!(seq, ["10", "11", "10"]);
    let categories = ds.attribute("categories").unwrap().tokens().unwrap();
    assert!(categories.tokens(ds.item_id("12").unwrap()).is_empty());
}

/// The error of reading `txt` + `json`: it must be `Malformed` at `file`:`line`, mentioning
/// `needle`.
fn expect_error(txt: &str, json: &str, file: &str, line: usize, needle: &str) {
    let (_dir, files) = synthetic(txt.as_bytes(), json.as_bytes());
    let err = S3Rec::read(&files).unwrap_err();
    let path = match file {
        "txt" => &files.sequences,
        _ => &files.attributes,
    };
    assert!(matches!(err, DataError::Malformed { .. }), "{err:?}");
    assert_eq!(err.path(), Some(path.as_path()), "{err}");
    assert_eq!(err.line(), Some(line), "{err}");
    let message = err.to_string();
    assert!(message.contains(needle), "{message}");
    assert!(
        message.starts_with(&format!("{}:{line}: ", path.display())),
        "{message}"
    );
}

#[test]
fn malformed_inputs_give_typed_located_errors() {
    // The .txt: a user without items, a second line for a user, an item the JSON lacks.
    expect_error("1 10\n2\n", JSON, "txt", 2, "user `2` has no items");
    expect_error(
        "1 10\n2 11\n1 12\n",
        JSON,
        "txt",
        3,
        "user `1` has a second line (the first is line 1)",
    );
    expect_error(
        "1 10 11 12\n2 13\n",
        JSON,
        "txt",
        2,
        "item `13` has no entry",
    );
    let (_dir, files) = synthetic(b"1 10\n2 \xff\n", JSON.as_bytes());
    let err = S3Rec::read(&files).unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    // The JSON: an item not in the .txt, a second entry for an item, syntax and type errors,
    // each on the line it is on.
    let txt = "1 10 11\n2 12\n";
    // An empty object parses (and then lacks the .txt's items); invalid UTF-8 names its line.
    expect_error("1 10\n", "{}", "txt", 1, "item `10` has no entry");
    let (_dir, files) = synthetic(
        txt.as_bytes(),
        b"{\"10\": [1],\n\"11\": [2],\n\"12\": [\xff]}",
    );
    let err = S3Rec::read(&files).unwrap_err();
    assert_eq!(err.path(), Some(files.attributes.as_path()), "{err}");
    assert_eq!(err.line(), Some(3), "{err}");
    assert!(err.to_string().contains("invalid UTF-8"), "{err}");
    expect_error(
        txt,
        "{\"10\": [1],\n \"11\": [2],\n \"99\": [3],\n \"12\": []}",
        "json",
        3,
        "item `99` does not occur in",
    );
    expect_error(
        txt,
        "{\"10\": [1],\n\"11\": [2],\n\"12\": [],\n\"10\": [4]}",
        "json",
        4,
        "item `10` has a second entry (the first is on line 1)",
    );
    expect_error(
        txt,
        "{\"10\": [1],\n\"11\": [2.5], \"12\": []}",
        "json",
        2,
        "expected an attribute id (an integer or a string), found `2.5`",
    );
    expect_error(
        txt,
        "{\"10\": [1],\n\"11\": [true], \"12\": []}",
        "json",
        2,
        "expected an attribute id",
    );
    expect_error(
        txt,
        "{\"10\": [1],\n\"11\": [2]\n\"12\": []}",
        "json",
        3,
        "expected `,` or `}`",
    );
    expect_error(
        txt,
        "{\"10\": [1], \"11\": [2], \"12\": [\"a b\"]}",
        "json",
        1,
        "holds white space",
    );
    expect_error(
        txt,
        "{\"10\": [1], \"11\": [2], \"12\": []}\n\nx",
        "json",
        3,
        "expected the end of the file",
    );
    expect_error(
        txt,
        "{\"10\": [1], \"11\": [2], \"12\": [",
        "json",
        1,
        "the end of the file",
    );
    expect_error(txt, "[1, 2]", "json", 1, "expected `{`");
    expect_error(txt, "{\"1\\u00\": [1]}", "json", 1, "expected 4 hex digits");
    // Escapes are decoded: "1\u0030" is item 10.
    let (_dir, files) = synthetic(
        txt.as_bytes(),
        b"{\"1\\u0030\": [\"x\"], \"11\": [], \"12\": []}",
    );
    let data = S3Rec::read(&files).unwrap();
    assert_eq!(data.item_attributes(0), ["x"]);
    // An empty .txt has nothing to convert.
    let (_dir, files) = synthetic(b"\n\n", b"{}");
    assert!(matches!(
        S3Rec::read(&files).unwrap_err(),
        DataError::Empty { .. }
    ));
    // Missing files are I/O errors naming the file.
    let files = S3RecFiles::new(Path::new("/nonexistent"), "t");
    let err = S3Rec::read(&files).unwrap_err();
    assert!(matches!(err, DataError::Io { .. }), "{err:?}");
    assert_eq!(err.path(), Some(files.sequences.as_path()));
}

/// `text` with the bytes of `edits` written over it at their positions (a near-valid file).
fn mutate(text: &str, edits: &[(usize, u8)]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for &(pos, b) in edits {
        let n = bytes.len();
        match pos % 3 {
            0 => bytes[pos / 3 % n] = b,
            1 => bytes.insert(pos / 3 % (n + 1), b),
            _ if n > 1 => {
                bytes.remove(pos / 3 % n);
            }
            _ => {}
        }
    }
    bytes
}

proptest::proptest! {
    // 256 cases by default; PROPTEST_CASES overrides.
    #[test]
    fn reading_never_panics_on_near_valid_files(
        txt_edits in proptest::collection::vec((0usize..3000, proptest::num::u8::ANY), 0..4),
        json_edits in proptest::collection::vec((0usize..3000, proptest::sample::select(
            b"{}[]\",: \n\\u0123456789.-eE\xffa".to_vec())), 0..6),
    ) {
        let txt = mutate("1 10 11\n2 12\n", &txt_edits);
        let json = mutate("{\"10\": [1, 2],\n\"11\": [\"a\"], \"12\": []}", &json_edits);
        let (dir, files) = synthetic(&txt, &json);
        match S3Rec::read(&files) {
            Ok(data) => {
                // Whatever is accepted converts and reads back with the same counts.
                let out = data.write_recbole(dir.path().join("recbole")).unwrap();
                let ds = load(&out, &S3Rec::load_config()).unwrap();
                proptest::prop_assert_eq!(ds.n_interactions(), data.n_interactions());
                proptest::prop_assert_eq!(ds.n_items(), data.n_items());
            }
            Err(e) => {
                let message = e.to_string();
                proptest::prop_assert!(!message.is_empty());
            }
        }
    }
}

#[test]
fn json_string_escapes_decode() {
    // Every JSON escape in an attribute id: the ones a token may hold decode to their
    // characters; the white-space ones decode and are then refused (a token_seq cannot hold
    // them), which names white space rather than a bad escape.
    let json = r#"{"10": ["q\"b\\s\/x\by\u00e9"], "11": [], "12": []}"#;
    let (_dir, files) = synthetic(b"1 10 11\n2 12\n", json.as_bytes());
    let data = S3Rec::read(&files).unwrap();
    assert_eq!(data.item_attributes(0), ["q\"b\\s/x\u{8}yé"]);
    // A UTF-16 surrogate pair decodes to one char; a lone half is refused; 0 is an integer
    // id, 01 is not.
    let json = r#"{"10": ["\ud83d\ude00", 0], "11": [], "12": []}"#;
    let (_dir, files) = synthetic(b"1 10 11\n2 12\n", json.as_bytes());
    assert_eq!(S3Rec::read(&files).unwrap().item_attributes(0), ["😀", "0"]);
    for lone in [
        r#""\ud83d""#,
        r#""\ud83dx""#,
        r#""\ud83d\u0041""#,
        r#""\ude00""#,
    ] {
        let json = format!(r#"{{"10": [{lone}], "11": [], "12": []}}"#);
        let (_dir, files) = synthetic(b"1 10 11\n2 12\n", json.as_bytes());
        let err = S3Rec::read(&files).unwrap_err().to_string();
        assert!(
            err.contains("surrogate") || err.contains("not a valid"),
            "{lone}: {err}"
        );
    }
    expect_error(
        "1 10 11\n2 12\n",
        r#"{"10": [01], "11": [], "12": []}"#,
        "json",
        1,
        "`01`",
    );
    for escape in [r"\f", r"\n", r"\r", r"\t"] {
        let json = format!(r#"{{"10": ["a{escape}b"], "11": [], "12": []}}"#);
        expect_error("1 10 11\n2 12\n", &json, "json", 1, "holds white space");
    }
}
