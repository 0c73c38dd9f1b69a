//! The tiny model problem that the model tests and the committed checkpoint fixtures share:
//! |V| = 20 item ids, two attribute types (vocabularies 6 and 4), B = 3 sequences.
use asif_kernels::model::{DataShape, Model, ModelConfig, ModelInputs};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::train::{StepCounts, TrainStep};
use asif_kernels::{Device, IndexTensor, Tensor};

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
    let targets = [3, 11, 17];
    // Item `item`'s two token slots of attribute type j (0 for the pad item).
    let item_tokens = |item: i32, j: usize, vocab: usize| -> [i32; 2] {
        if item == 0 {
            return [0, 0];
        }
        let first = 1 + (item as usize * (j + 2)) as i32 % (vocab as i32 - 1);
        let second = if item % 3 == 0 {
            1 + (item as usize + j) as i32 % (vocab as i32 - 1)
        } else {
            0
        };
        [first, second]
    };
    let tokens_of = |ids: &[i32], j: usize, vocab: usize| -> Vec<i32> {
        ids.iter()
            .flat_map(|&item| item_tokens(item, j, vocab))
            .collect()
    };
    let attributes = ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(j, &vocab)| {
            IndexTensor::from_vec(device, &[b, n, 2], tokens_of(&items, j, vocab)).unwrap()
        })
        .collect();
    let target_attributes = ATTRIBUTES
        .iter()
        .enumerate()
        .map(|(j, &vocab)| {
            IndexTensor::from_vec(device, &[b, 2], tokens_of(&targets, j, vocab)).unwrap()
        })
        .collect();
    ModelInputs {
        items: IndexTensor::from_vec(device, &[b, n], items).unwrap(),
        lengths: IndexTensor::from_vec(device, &[b], lengths.iter().map(|&l| l as i32).collect())
            .unwrap(),
        targets: IndexTensor::from_vec(device, &[b], targets.to_vec()).unwrap(),
        attributes,
        target_attributes,
        attribute_groups: None,
    }
}

/// The first `rows` sequences of `inputs` (a shorter batch, as an epoch's last one), uploaded
/// anew; `attribute_groups` left to the model.
pub fn first_rows(device: &Device, inputs: &ModelInputs, rows: usize) -> ModelInputs {
    let cut = |t: &IndexTensor| {
        let mut shape = t.shape().to_vec();
        let per_row: usize = shape[1..].iter().product();
        shape[0] = rows;
        let values = t.to_vec().unwrap()[..rows * per_row].to_vec();
        IndexTensor::from_vec(device, &shape, values).unwrap()
    };
    ModelInputs {
        items: cut(&inputs.items),
        lengths: cut(&inputs.lengths),
        targets: cut(&inputs.targets),
        attributes: inputs.attributes.iter().map(cut).collect(),
        target_attributes: inputs.target_attributes.iter().map(cut).collect(),
        attribute_groups: None,
    }
}

/// A tensor's values as bits, for bit-identity checks.
pub fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec()
        .expect("download")
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// `TrainStep` (graphs on or off) over `batches` (the number of sequences of each step's batch:
/// 3 is the full tiny batch, fewer a shorter one), from a fresh model of `config`; returns the
/// losses, the final parameters (as bits) and the step counts. `tests/train_step.rs` (emulated)
/// and `tests/cuda_graph.rs` (GPU) share it.
pub fn train_steps(
    device: &Device,
    config: &ModelConfig,
    cuda_graph: bool,
    batches: &[usize],
) -> (Vec<u32>, Vec<Vec<u32>>, StepCounts) {
    let mut model = Model::new(config, &shape(), device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let mut steps = TrainStep::new(cuda_graph);
    let mut losses = Vec::new();
    for (step, &rows) in batches.iter().enumerate() {
        let batch = first_rows(device, &inputs(device, 8), rows);
        let loss = steps
            .run(&mut model, &mut adam, &batch, step as u64)
            .expect("step");
        losses.push(loss.to_bits());
    }
    let parameters = model.tensors().iter().map(bits).collect();
    (losses, parameters, steps.counts())
}

/// [`train_steps`] through [`TrainStep::run_staged`]: each step's batch is built on the host
/// (the first `rows` sequences, the targets rotated by the step, so consecutive batches of one
/// shape differ) and copied into the device buffers the `TrainStep` keeps.
pub fn train_steps_staged(
    device: &Device,
    config: &ModelConfig,
    cuda_graph: bool,
    batches: &[usize],
) -> (Vec<u32>, Vec<Vec<u32>>, StepCounts) {
    let host = Device::cpu();
    let mut model = Model::new(config, &shape(), device).expect("model");
    let mut adam = Adam::new(AdamConfig::default(), &model.tensors()).expect("adam");
    let mut steps = TrainStep::new(cuda_graph);
    let mut losses = Vec::new();
    for (step, &rows) in batches.iter().enumerate() {
        let mut batch = first_rows(&host, &inputs(&host, 8), rows);
        let targets: Vec<i32> = (0..rows)
            .map(|row| [3, 11, 17, 5, 9][(row + step) % 5])
            .collect();
        batch.targets = IndexTensor::from_vec(&host, &[rows], targets).expect("targets");
        let loss = steps
            .run_staged(&mut model, &mut adam, &batch, step as u64)
            .expect("step");
        losses.push(loss.to_bits());
    }
    assert_eq!(adam.steps(), batches.len() as u64, "Adam's host step count");
    let parameters = model.tensors().iter().map(bits).collect();
    (losses, parameters, steps.counts())
}
