//! The tiny model problem that the model tests and the committed checkpoint fixtures share:
//! |V| = 20 item ids, two attribute types (vocabularies 6 and 4), B = 3 sequences.
use asif_kernels::model::{DataShape, ModelInputs};
use asif_kernels::{Device, IndexTensor};

pub const ITEMS: usize = 20;
pub const ATTRIBUTES: [usize; 2] = [6, 4];

pub fn shape() -> DataShape {
    DataShape {
        n_item_ids: ITEMS,
        attribute_vocab: ATTRIBUTES.to_vec(),
    }
}

/// B = 3 sequences with lengths n, n − 2 and n − 3 (all ≥ r for n ≥ 7, so HIE's QR has full
/// rank), items in 1..|V|, two attribute types with up to two tokens per item (some slots 0).
pub fn inputs(device: &Device, n: usize) -> ModelInputs {
    let lengths = [n, n - 2, n - 3];
    let b = lengths.len();
    let mut items = vec![0i32; b * n];
    for (row, &l) in lengths.iter().enumerate() {
        for t in 0..l {
            items[row * n + t] = (1 + (row * 7 + t * 5) % (ITEMS - 1)) as i32;
        }
    }
    let attributes = ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(j, &vocab)| {
            let mut tokens = vec![0i32; b * n * 2];
            for (s, &item) in items.iter().enumerate() {
                if item == 0 {
                    continue;
                }
                tokens[s * 2] = 1 + (item as usize * (j + 2)) as i32 % (vocab as i32 - 1);
                if item % 3 == 0 {
                    tokens[s * 2 + 1] = 1 + (item as usize + j) as i32 % (vocab as i32 - 1);
                }
            }
            IndexTensor::from_vec(device, &[b, n, 2], tokens).unwrap()
        })
        .collect();
    ModelInputs {
        items: IndexTensor::from_vec(device, &[b, n], items).unwrap(),
        lengths: IndexTensor::from_vec(device, &[b], lengths.iter().map(|&l| l as i32).collect())
            .unwrap(),
        targets: IndexTensor::from_vec(device, &[b], vec![3, 11, 17]).unwrap(),
        attributes,
        attribute_groups: None,
    }
}
