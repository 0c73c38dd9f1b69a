//! Old checkpoints still load (issue 17): `tests/fixtures/checkpoints/` holds small models
//! written by `Model::save` before the model's parameters became typed blocks, one per model
//! kind and fusion, with the scores and training-mode loss that code gave on fixed inputs
//! (`expected.json`). Each must load into today's `Model` (every parameter by its name and
//! shape, in the same order, nothing left over) and give the same numbers.
//!
//! The fixtures were written by `write_fixtures` below, run on the CPU with
//! `ASIF_WRITE_CHECKPOINT_FIXTURES=1 cargo test --test checkpoint_compat -- --ignored`. Rerunning
//! it overwrites them with what today's code writes, which defeats the test: do that only when
//! the checkpoint format changes on purpose.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use asif_kernels::autograd::Tape;
use asif_kernels::checkpoint::SafetensorsFile;
use asif_kernels::model::{DataShape, Fusion, Mode, Model, ModelConfig, ModelInputs, ModelKind};
use asif_kernels::{Device, Tensor};
use serde::{Deserialize, Serialize};

mod common;

use common::tiny_model;

const MAX_LEN: usize = 8;

/// The fixtures: a name and the model it holds.
fn cases() -> Vec<(&'static str, ModelConfig)> {
    let tiny = |kind: ModelKind, fusion: Fusion| ModelConfig {
        kind,
        fusion,
        hidden_size: 8,
        heads: 2,
        layers: 2,
        max_len: MAX_LEN,
        inner_size: 8,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 2.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 7,
        ..ModelConfig::default()
    };
    // NOVA and DIF-SR came after the typed parameters: no checkpoint predates them.
    let mut cases: Vec<(&'static str, ModelConfig)> = ModelKind::ALL
        .into_iter()
        .filter(|&kind| !matches!(kind, ModelKind::Nova | ModelKind::DifSr))
        .map(|kind| (kind.name(), tiny(kind, Fusion::Sum)))
        .collect();
    cases.push(("asif_concat", tiny(ModelKind::Asif, Fusion::Concat)));
    cases.push(("asif_gate", tiny(ModelKind::Asif, Fusion::Gate)));
    cases.push(("sasrec_f_gate", tiny(ModelKind::SasRecF, Fusion::Gate)));
    cases.push((
        "asif_wo_fa_concat",
        tiny(ModelKind::AsifWithoutFa, Fusion::Concat),
    ));
    cases
}

#[derive(Debug, Serialize, Deserialize)]
struct Expected {
    /// The parameter names in `Model::parameters` order (the optimiser's order).
    parameters: Vec<String>,
    /// `Model::scores` on [`inputs`], `[B, |V|]` row-major.
    scores: Vec<f32>,
    /// `Model::forward(..).loss()` on [`inputs`] in `Mode::Train { step: 3 }`.
    loss: f32,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoints")
}

/// The shared tiny problem at n = 8: B = 3 sequences (lengths 8, 6, 5).
fn inputs(device: &Device) -> ModelInputs {
    tiny_model::inputs(device, MAX_LEN)
}

fn outputs(model: &Model, inputs: &ModelInputs) -> (Vec<f32>, f32) {
    let scores = model.scores(inputs).unwrap().to_vec().unwrap();
    let tape = Tape::new();
    let loss = model
        .forward(&tape, inputs, Mode::Train { step: 3 })
        .unwrap()
        .loss()
        .unwrap();
    (scores, loss)
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

fn read_expected() -> BTreeMap<String, Expected> {
    let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn checkpoints_written_before_the_typed_parameters_still_load() {
    let device = Device::cpu();
    let inputs = inputs(&device);
    let expected = read_expected();
    assert_eq!(expected.len(), cases().len(), "one expectation per fixture");
    for (name, _) in cases() {
        let want = &expected[name];
        let path = fixtures().join(format!("{name}.safetensors"));
        let file = SafetensorsFile::read(&path).unwrap();
        let metadata = file.metadata().unwrap();
        let config: ModelConfig = serde_json::from_str(&metadata["model_config"]).unwrap();
        let shape: DataShape = serde_json::from_str(&metadata["data_shape"]).unwrap();
        let mut model = Model::new(&config, &shape, &device).unwrap();

        // The same parameters, in the same order, and none in the file left unread.
        let names: Vec<&str> = model.parameters().iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, want.parameters, "{name}: parameter names and order");
        let bytes = std::fs::read(&path).unwrap();
        let stored = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut in_file: Vec<&str> = stored.names().into_iter().map(String::as_str).collect();
        in_file.sort_unstable();
        let mut built = names.clone();
        built.sort_unstable();
        assert_eq!(in_file, built, "{name}: tensors in the file");

        // The stored weights differ from a fresh initialisation, so loading them is what
        // makes the numbers match.
        let (fresh_scores, _) = outputs(&model, &inputs);
        assert!(
            fresh_scores
                .iter()
                .zip(&want.scores)
                .any(|(&a, &b)| !close(a, b)),
            "{name}: a fresh model already gives the stored scores"
        );
        model.load_weights(&path).unwrap();
        let (scores, loss) = outputs(&model, &inputs);
        assert_eq!(scores.len(), want.scores.len(), "{name}: score count");
        for (i, (&got, &wanted)) in scores.iter().zip(&want.scores).enumerate() {
            assert!(close(got, wanted), "{name}: score {i}: {got} vs {wanted}");
        }
        assert!(
            close(loss, want.loss),
            "{name}: loss {loss} vs {}",
            want.loss
        );
    }
}

/// Writes the fixtures (see the module docs): each model freshly initialised, its weights moved
/// off the initialisation by a fixed pattern, saved, and its outputs recorded.
#[test]
#[ignore = "writes the committed fixtures; run only on purpose"]
fn write_fixtures() {
    if std::env::var("ASIF_WRITE_CHECKPOINT_FIXTURES").as_deref() != Ok("1") {
        eprintln!("SKIPPED write_fixtures: set ASIF_WRITE_CHECKPOINT_FIXTURES=1 to overwrite");
        return;
    }
    let device = Device::cpu();
    let inputs = inputs(&device);
    let shape = tiny_model::shape();
    std::fs::create_dir_all(fixtures()).unwrap();
    let mut expected = BTreeMap::new();
    for (name, config) in cases() {
        let mut model = Model::new(&config, &shape, &device).unwrap();
        let moved: Vec<Tensor> = model
            .parameters()
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let values: Vec<f32> = p
                    .value
                    .to_vec()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v + 0.05 * ((i as f32) * 0.37 + k as f32).sin())
                    .collect();
                Tensor::from_vec(&device, p.value.shape(), values).unwrap()
            })
            .collect();
        model.set_tensors(moved).unwrap();
        model
            .save(&fixtures().join(format!("{name}.safetensors")))
            .unwrap();
        let (scores, loss) = outputs(&model, &inputs);
        let parameters = model.parameters().iter().map(|p| p.name.clone()).collect();
        expected.insert(
            name.to_string(),
            Expected {
                parameters,
                scores,
                loss,
            },
        );
    }
    std::fs::write(
        fixtures().join("expected.json"),
        serde_json::to_string_pretty(&expected).unwrap() + "\n",
    )
    .unwrap();
}

/// A config written before DIF-SR existed (no d_a, no λ_aap) reads with the spec's DIF-SR values,
/// d_a = 64 and λ_aap = 10, the same as `ModelConfig::default()` (cargo-mutants: both serde
/// defaults could return 0, 1 or −1 unnoticed).
#[test]
fn configs_without_the_difsr_fields_read_the_spec_defaults() {
    let mut old = serde_json::to_value(ModelConfig::default()).unwrap();
    let fields = old.as_object_mut().unwrap();
    assert!(fields.remove("attribute_hidden_size").is_some());
    assert!(fields.remove("attribute_prediction_lambda").is_some());
    let read: ModelConfig = serde_json::from_value(old).unwrap();
    assert_eq!(read.attribute_hidden_size, 64);
    assert_eq!(read.attribute_prediction_lambda, 10.0);
    assert_eq!(ModelConfig::default().attribute_hidden_size, 64);
    assert_eq!(ModelConfig::default().attribute_prediction_lambda, 10.0);
}
