//! Full-ranking HR@K and NDCG@K against hand-computed cases (spec §5.3): pessimistic ties,
//! NaN, the padding column, masking of interacted items, the batch and merge APIs.
use asif_kernels::metrics::{pessimistic_rank, Evaluator};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn ranks_by_hand() {
    // Column 0 is padding: its huge score never counts.
    let s = [100.0, 0.5, 0.9, 0.1, 0.7];
    assert_eq!(pessimistic_rank(&s, 2, &[]).unwrap(), Some(1));
    assert_eq!(pessimistic_rank(&s, 4, &[]).unwrap(), Some(2));
    assert_eq!(pessimistic_rank(&s, 1, &[]).unwrap(), Some(3));
    assert_eq!(pessimistic_rank(&s, 3, &[]).unwrap(), Some(4));
    // Ties rank above the target: items 1, 2, 4 tie with target 3 -> rank 4.
    let t = [0.0, 0.5, 0.5, 0.5, 0.5, 0.2];
    assert_eq!(pessimistic_rank(&t, 3, &[]).unwrap(), Some(4));
    // Constant scores: the target is last, not first.
    let c = [1.0f32; 11];
    assert_eq!(pessimistic_rank(&c, 7, &[]).unwrap(), Some(10));
    // NaN target: a miss. NaN elsewhere: never above the target.
    let n = [0.0, f32::NAN, 0.3, 0.2];
    assert_eq!(pessimistic_rank(&n, 1, &[]).unwrap(), None);
    assert_eq!(pessimistic_rank(&n, 3, &[]).unwrap(), Some(2));
    // Infinities: +inf ties with a +inf target; a -inf target ties with other -inf items.
    let inf = [
        0.0,
        f32::INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    ];
    assert_eq!(pessimistic_rank(&inf, 1, &[]).unwrap(), Some(2));
    assert_eq!(pessimistic_rank(&inf, 3, &[]).unwrap(), Some(4));
    // Masking: masked items (except 0 and the target) leave the count; duplicates are fine.
    let s = [9.0, 0.9, 0.8, 0.7, 0.6];
    assert_eq!(pessimistic_rank(&s, 4, &[1, 1, 3, 0, 4]).unwrap(), Some(2));
    // -0.0 and 0.0 are equal: a tie.
    assert_eq!(
        pessimistic_rank(&[0.0, -0.0, 0.0], 2, &[]).unwrap(),
        Some(2)
    );
}

#[test]
fn rank_errors() {
    assert!(
        pessimistic_rank(&[0.0, 1.0], 0, &[]).is_err(),
        "padding is never a target"
    );
    assert!(pessimistic_rank(&[0.0, 1.0], 2, &[]).is_err());
    assert!(pessimistic_rank(&[0.0, 1.0, 2.0], 1, &[5]).is_err());
    assert!(Evaluator::new(&[]).is_err());
    assert!(Evaluator::new(&[0, 5]).is_err());
    let mut ev = Evaluator::new(&[1]).unwrap();
    assert!(
        ev.add_batch(&[0.0; 5], 3, &[1, 2]).is_err(),
        "5 scores are not 2 rows of 3"
    );
    assert!(ev
        .add_batch_with_history(&[0.0; 6], 3, &[1, 2], &[&[]])
        .is_err());
    let other = Evaluator::new(&[2]).unwrap();
    assert!(ev.merge(&other).is_err());
    // The cut-offs read back as given (cargo-mutants: `ks` returning [], [0] or [1] survived).
    assert_eq!(Evaluator::new(&[10, 20]).unwrap().ks(), &[10, 20]);
}

#[test]
fn hr_and_ndcg_by_hand() {
    // Four rows over items 1..=5 (6 columns with padding): ranks 1, 3 (with a tie), miss (NaN), 5.
    let rows: [[f32; 6]; 4] = [
        [0.0, 0.9, 0.1, 0.2, 0.3, 0.4],      // target 1: rank 1
        [0.0, 0.5, 0.9, 0.5, 0.1, 0.1],      // target 1: items 2 (0.9) and 3 (tie) above -> rank 3
        [0.0, f32::NAN, 0.1, 0.2, 0.3, 0.4], // target 1: NaN -> miss
        [0.0, 0.0, 0.1, 0.2, 0.3, 0.4],      // target 1: rank 5
    ];
    let mut ev = Evaluator::new(&[1, 3, 5, 20]).unwrap();
    let mut ranks = Vec::new();
    for r in &rows {
        ranks.push(ev.add(r, 1, &[]).unwrap());
    }
    assert_eq!(ranks, [Some(1), Some(3), None, Some(5)]);
    let m = ev.metrics();
    assert_eq!(m.count, 4);
    let g = |r: f64| 1.0 / (r + 1.0).log2();
    assert!(close(m.hr(1).unwrap(), 0.25));
    assert!(close(m.hr(3).unwrap(), 0.5));
    assert!(close(m.hr(5).unwrap(), 0.75));
    assert!(close(m.hr(20).unwrap(), 0.75));
    assert!(close(m.ndcg(1).unwrap(), 0.25));
    assert!(close(m.ndcg(3).unwrap(), (1.0 + 0.5) / 4.0)); // g(3) = 1/log2(4) = 0.5
    assert!(close(m.ndcg(5).unwrap(), (1.0 + 0.5 + g(5.0)) / 4.0));
    assert!(close(m.ndcg(20).unwrap(), m.ndcg(5).unwrap()));
    assert_eq!(m.hr(10), None);
    assert_eq!(
        m.to_string().split("  ").take(2).collect::<Vec<_>>(),
        ["hit@1 0.2500", "ndcg@1 0.2500"]
    );

    // The same through the batch API, in two batches, and through merge.
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut a = Evaluator::new(&[1, 3, 5, 20]).unwrap();
    // One row and three (two and two let `count *= other.count` pass for `+=`: 2·2 = 2 + 2).
    a.add_batch(&flat[..6], 6, &[1]).unwrap();
    let mut b = Evaluator::new(&[1, 3, 5, 20]).unwrap();
    b.add_batch(&flat[6..], 6, &[1, 1, 1]).unwrap();
    a.merge(&b).unwrap();
    assert_eq!(a.metrics(), m);
    assert_eq!((a.count(), b.count()), (4, 3));
    // No rows: zeros, not NaN.
    let empty = Evaluator::new(&[10]).unwrap().metrics();
    assert_eq!(
        (empty.count, empty.hr(10), empty.ndcg(10)),
        (0, Some(0.0), Some(0.0))
    );
}

#[test]
fn interacted_items_masked_only_when_switched_on() {
    // Target 4; items 1, 2 (interacted) and 3 score higher.
    let s = [0.0f32, 0.9, 0.8, 0.7, 0.6, 0.1];
    let history: &[u32] = &[1, 2, 4];
    let mut plain = Evaluator::new(&[2]).unwrap();
    assert_eq!(
        plain.add(&s, 4, history).unwrap(),
        Some(4),
        "RecBole default: no masking"
    );
    let mut masked = Evaluator::new(&[2]).unwrap().with_mask_interacted(true);
    // 1 and 2 leave; the target itself stays even though it is in the history.
    assert_eq!(masked.add(&s, 4, history).unwrap(), Some(2));
    assert!(close(masked.metrics().hr(2).unwrap(), 1.0));
    assert!(close(masked.metrics().ndcg(2).unwrap(), 1.0 / 3f64.log2()));
    let mut batch = Evaluator::new(&[2]).unwrap().with_mask_interacted(true);
    batch
        .add_batch_with_history(&s, 6, &[4], &[history])
        .unwrap();
    assert_eq!(batch.metrics(), masked.metrics());
    // Two rows: the second row is read from its own slice (cargo-mutants: `b / n_items` for
    // `b * n_items` survived with one row). Row 2 ranks its target 5 first with nothing masked.
    let second = [0.0f32, 0.1, 0.2, 0.3, 0.4, 0.9];
    let rows: Vec<f32> = s.iter().chain(&second).copied().collect();
    let mut two = Evaluator::new(&[2]).unwrap().with_mask_interacted(true);
    two.add_batch_with_history(&rows, 6, &[4, 5], &[history, &[]])
        .unwrap();
    masked.add(&second, 5, &[]).unwrap();
    assert_eq!(two.metrics(), masked.metrics());
}
