//! The model (issue 8): every kind builds and trains, a finite-difference check of whole tiny
//! models against the tape, loss falls, ASIF at the paper's defaults stays finite, the same seed
//! gives the same run, the emulated device agrees with the CPU, bad configurations are typed
//! errors, and the public ASIF layer (`Model::asif_layer`) is the model's layer.
mod common;

use asif_kernels::autograd::Tape;
use asif_kernels::data::{Batcher, Dataset, Order, SyntheticConfig};
use asif_kernels::model::{
    attribute_groups, broadcast_positions, data_shape, token_attributes, AsifStreams, DataShape,
    DropoutSeeds, Fusion, HieGradient, Mode, Model, ModelConfig, ModelInputs, ModelKind,
    PositionStream,
};
use asif_kernels::ops::adam::{Adam, AdamConfig};
use asif_kernels::ops::add::add;
use asif_kernels::ops::cross_entropy::cross_entropy_over_items;
use asif_kernels::ops::dropout::dropout;
use asif_kernels::ops::embedding::{embedding, pooled_embedding};
use asif_kernels::ops::gather::gather_last;
use asif_kernels::ops::layer_norm::layer_norm;
use asif_kernels::{Device, Error, IndexTensor, Tensor};
use common::tiny_model::{self, ITEMS};

/// A tiny model: d = 16, 2 heads, 2 layers, n = 8, r = 4.
fn tiny(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        hidden_size: 16,
        heads: 2,
        layers: 2,
        max_len: 8,
        inner_size: 24,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 2.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 7,
        // DIF-SR's d_a: 3 channels per head against d_h = 8 (other kinds ignore it).
        attribute_hidden_size: 6,
        attribute_prediction_lambda: 1.5,
        ..ModelConfig::default()
    }
}

fn loss_at(model: &Model, inputs: &ModelInputs, step: u64) -> f32 {
    let tape = Tape::new();
    model
        .forward(&tape, inputs, Mode::Train { step })
        .unwrap()
        .loss()
        .unwrap()
}

#[test]
fn every_kind_runs_forward_and_backward() {
    let device = Device::cpu();
    let inputs = tiny_model::inputs(&device, 8);
    for kind in ModelKind::ALL {
        for fusion in [Fusion::Sum, Fusion::Concat, Fusion::Gate] {
            let config = ModelConfig {
                fusion,
                ..tiny(kind)
            };
            let model = Model::new(&config, &tiny_model::shape(), &device).unwrap();
            let tape = Tape::new();
            let pass = model
                .forward(&tape, &inputs, Mode::Train { step: 0 })
                .unwrap();
            let loss = pass.loss().unwrap();
            assert!(loss.is_finite(), "{kind} {fusion:?}: loss {loss}");
            assert_eq!(pass.contrastive.is_some(), kind.rsa(), "{kind}");
            let grads = pass.backward(&tape).unwrap();
            let mut reached = 0;
            for (p, g) in model.parameters().iter().zip(&grads) {
                assert_eq!(p.value.shape(), g.shape(), "{kind} {}", p.name);
                let g = g.to_vec().unwrap();
                assert!(g.iter().all(|v| v.is_finite()), "{kind} {}", p.name);
                if g.iter().any(|&v| v != 0.0) {
                    reached += 1;
                } else {
                    // Only HIE's W_r (constant Q, A7) may receive no gradient.
                    assert!(
                        p.name.ends_with("hie_bases"),
                        "{kind} {}: no gradient",
                        p.name
                    );
                }
            }
            assert!(reached > 10, "{kind}");
            let scores = model.scores(&inputs).unwrap();
            assert_eq!(scores.shape(), [3, ITEMS]);
        }
    }
}

#[test]
fn parameters_follow_the_switch_table_and_recbole_init() {
    let device = Device::cpu();
    let names = |kind| -> Vec<String> {
        Model::new(&tiny(kind), &tiny_model::shape(), &device)
            .unwrap()
            .parameters()
            .iter()
            .map(|p| p.name.clone())
            .collect()
    };
    let has = |kind, name: &str| names(kind).iter().any(|n| n == name);
    assert!(!has(ModelKind::SasRec, "attribute_embedding.0.weight"));
    assert!(has(ModelKind::SasRecF, "attribute_embedding.1.weight"));
    assert!(has(ModelKind::Asif, "layers.0.query_position.weight"));
    assert!(!has(
        ModelKind::AsifWithoutUp,
        "layers.0.query_position.weight"
    ));
    assert!(has(ModelKind::AsifWithoutFa, "layers.1.key_id.weight"));
    assert!(!has(ModelKind::Asif, "layers.1.key_id.weight"));
    assert!(has(ModelKind::Asif, "layers.1.hie_bases"));
    assert!(!has(ModelKind::AsifWithoutHie, "layers.1.hie_bases"));
    assert!(has(ModelKind::Asif, "logit_scale"));
    assert!(!has(ModelKind::AsifWithoutRsa, "logit_scale"));
    // The last layer's fused and position FFNs are never read, so they are not built.
    assert!(has(ModelKind::Asif, "layers.0.ffn_fused.dense1.weight"));
    assert!(!has(ModelKind::Asif, "layers.1.ffn_fused.dense1.weight"));
    // NOVA: attribute tables, a fusion and a norm of G in every layer, one score pair, no
    // model-level fusion, no fused input, no RSA.
    assert!(has(ModelKind::Nova, "attribute_embedding.1.weight"));
    assert!(has(ModelKind::Nova, "layers.1.fused_norm.weight"));
    assert!(has(ModelKind::Nova, "layers.1.query.weight"));
    assert!(!has(ModelKind::Nova, "fused_input_norm.weight"));
    assert!(!has(ModelKind::Nova, "logit_scale"));
    let concat = ModelConfig {
        fusion: Fusion::Concat,
        ..tiny(ModelKind::Nova)
    };
    let nova_concat: Vec<String> = Model::new(&concat, &tiny_model::shape(), &device)
        .unwrap()
        .parameters()
        .iter()
        .map(|p| p.name.clone())
        .collect();
    for name in [
        "layers.0.fusion.item.weight",
        "layers.0.fusion.attribute.1.weight",
        "layers.1.fusion.position.weight",
    ] {
        assert!(nova_concat.iter().any(|n| n == name), "NOVA concat: {name}");
    }
    assert!(!nova_concat.iter().any(|n| n.starts_with("fusion.")));
    // DIF-SR: attribute tables at d_a, per-layer decoupled query/key pairs (attributes at d_a,
    // positions), attribute predictors, no model-level fusion, no RSA.
    let difsr = Model::new(&tiny(ModelKind::DifSr), &tiny_model::shape(), &device).unwrap();
    let shape_of = |name: &str| difsr.parameter(name).unwrap().shape().to_vec();
    assert_eq!(shape_of("attribute_embedding.0.weight"), [6, 6]);
    assert_eq!(shape_of("layers.1.attribute_query.1.weight"), [6, 6]);
    assert_eq!(shape_of("layers.1.key_position.weight"), [16, 16]);
    assert_eq!(shape_of("attribute_prediction.1.weight"), [16, 4]);
    assert!(!has(ModelKind::DifSr, "logit_scale"));
    assert!(!has(ModelKind::DifSr, "fused_input_norm.weight"));
    let gate = ModelConfig {
        fusion: Fusion::Gate,
        ..tiny(ModelKind::DifSr)
    };
    let difsr_gate = Model::new(&gate, &tiny_model::shape(), &device).unwrap();
    // The gate runs over score rows of length n = 8.
    assert_eq!(
        difsr_gate
            .parameter("layers.0.fusion.gate.projection.0.weight")
            .unwrap()
            .shape(),
        [8, 8]
    );

    let model = Model::new(&tiny(ModelKind::Asif), &tiny_model::shape(), &device).unwrap();
    let get = |name: &str| model.parameter(name).unwrap().to_vec().unwrap();
    let items = get("item_embedding.weight");
    assert!(items[..16].iter().all(|&v| v == 0.0), "pad row zeroed");
    let rest = &items[16..];
    let mean = rest.iter().map(|&v| v as f64).sum::<f64>() / rest.len() as f64;
    let std =
        (rest.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / rest.len() as f64).sqrt();
    assert!(
        mean.abs() < 0.004 && (std - 0.02).abs() < 0.003,
        "{mean} {std}"
    );
    assert!(get("layers.0.query_fused.bias").iter().all(|&v| v == 0.0));
    assert!(get("layers.0.norm_id.weight").iter().all(|&v| v == 1.0));
    assert!(get("input_norm.bias").iter().all(|&v| v == 0.0));
    assert_eq!(model.config().layer_norm_eps, 1e-12);
    let s = get("logit_scale")[0];
    assert!((s - (1.0f32 / 0.07).ln()).abs() < 1e-6);
}

/// Directional finite differences of L in f32 against the tape's gradient, per parameter
/// tensor. Direction v = unit(ĝ + ρ) (ĝ the unit gradient, ρ a random unit vector): g·v is
/// large enough to stand above the f32 noise of L, and the random half makes a gradient
/// pointing the wrong way fail too. Step h = 1e-3 along a unit vector: HIE's sign filter φ puts
/// kinks in L (where a coordinate C_A crosses 0), and at h = 1e-2 a kink inside [−h, h] was
/// seen to move the central difference by 20 % while h = 1e-3 matched the tape to 0.3 %. The
/// noise is then f32 rounding: L ≈ 7 has an ulp of 4.8e-7, a few ulps over 2h gives ≈ 1e-3.
/// Tolerance: 2e-3 + 3 % of |g·v| (typical |g·v| is 1e-2 to 1e-1). HIE uses its full QR
/// backward (the default treats Q as a constant, which is not the derivative, A7) with every
/// L_b ≥ r so Q has full rank.
fn finite_difference_check(config: &ModelConfig) {
    let device = Device::cpu();
    let mut model = Model::new(config, &tiny_model::shape(), &device).unwrap();
    // Move away from the init (zero biases, unit γ) so every kind of parameter is generic.
    let mut rng = common::rng(99);
    let tensors: Vec<Tensor> = model
        .parameters()
        .iter()
        .map(|p| {
            let mut v = p.value.to_vec().unwrap();
            let noise = common::random(&mut rng, v.len(), 0.0, 0.05);
            let is_pad_table = p.name.contains("embedding") && !p.name.starts_with("position");
            for (i, x) in v.iter_mut().enumerate() {
                if !(is_pad_table && i < config.hidden_size) && p.name != "logit_scale" {
                    *x += noise[i] as f32;
                }
            }
            Tensor::from_vec(&device, p.value.shape(), v).unwrap()
        })
        .collect();
    model.set_tensors(tensors.clone()).unwrap();
    let inputs = tiny_model::inputs(&device, config.max_len);
    let tape = Tape::new();
    let pass = model
        .forward(&tape, &inputs, Mode::Train { step: 3 })
        .unwrap();
    let grads = pass.backward(&tape).unwrap();
    drop(pass);
    let h = 1e-3f64;
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, p) in model.parameters().to_vec().iter().enumerate() {
        let g = grads[i].to_vec().unwrap();
        let g_norm = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let random = common::random(&mut rng, g.len(), 0.0, 1.0);
        let r_norm = random.iter().map(|x| x * x).sum::<f64>().sqrt();
        let mut v: Vec<f64> = (0..g.len())
            .map(|k| {
                let gk = if g_norm > 0.0 {
                    g[k] as f64 / g_norm
                } else {
                    0.0
                };
                gk + random[k] / r_norm
            })
            .collect();
        let v_norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        v.iter_mut().for_each(|x| *x /= v_norm);
        let along = |sign: f64| {
            let mut moved = tensors.clone();
            let base = tensors[i].to_vec().unwrap();
            let values = base
                .iter()
                .zip(&v)
                .map(|(&x, &d)| (x as f64 + sign * h * d) as f32)
                .collect();
            moved[i] = Tensor::from_vec(&device, p.value.shape(), values).unwrap();
            let mut m = model.clone();
            m.set_tensors(moved).unwrap();
            loss_at(&m, &inputs, 3) as f64
        };
        let numeric = (along(1.0) - along(-1.0)) / (2.0 * h);
        let analytic: f64 = g.iter().zip(&v).map(|(&a, &b)| a as f64 * b).sum();
        let tolerance = 2e-3 + 0.03 * analytic.abs();
        checked += 1;
        if (numeric - analytic).abs() > tolerance {
            failures.push(format!(
                "{}: tape {analytic:.6}, finite differences {numeric:.6}",
                p.name
            ));
        }
    }
    assert!(checked > 20);
    assert!(
        failures.is_empty(),
        "{:?}: {} of {checked} parameters disagree:\n{}",
        config.kind,
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn finite_differences_asif_every_parameter() {
    finite_difference_check(&ModelConfig {
        hie_gradient: HieGradient::FullQr,
        ..tiny(ModelKind::Asif)
    });
}

#[test]
fn finite_differences_fusion_gate() {
    finite_difference_check(&ModelConfig {
        fusion: Fusion::Gate,
        ..tiny(ModelKind::SasRecF)
    });
    finite_difference_check(&ModelConfig {
        fusion: Fusion::Gate,
        hie_gradient: HieGradient::FullQr,
        rsa_dedup: true,
        ..tiny(ModelKind::Asif)
    });
}

#[test]
fn finite_differences_baselines_and_ablations() {
    finite_difference_check(&ModelConfig {
        fusion: Fusion::Concat,
        ..tiny(ModelKind::SasRecF)
    });
    finite_difference_check(&ModelConfig {
        hie_gradient: HieGradient::FullQr,
        ..tiny(ModelKind::AsifWithoutFa)
    });
    finite_difference_check(&ModelConfig {
        hie_gradient: HieGradient::FullQr,
        ..tiny(ModelKind::AsifWithoutUp)
    });
    finite_difference_check(&tiny(ModelKind::AsifWithoutHie));
}

/// NOVA (spec §4): the layers' own fusions of X with A and E_P, the norm of G, the score pair
/// from G and the values from X; concat names every side source (positions included), gate
/// stacks them.
#[test]
fn finite_differences_nova() {
    finite_difference_check(&ModelConfig {
        fusion: Fusion::Concat,
        ..tiny(ModelKind::Nova)
    });
    finite_difference_check(&ModelConfig {
        fusion: Fusion::Gate,
        ..tiny(ModelKind::Nova)
    });
}

/// DIF-SR (spec §4): the decoupled score pairs (attributes at d_a ≠ d), the three score
/// fusions at width n, the values from X, and the attribute-prediction heads and loss.
#[test]
fn finite_differences_difsr() {
    for fusion in [Fusion::Sum, Fusion::Concat, Fusion::Gate] {
        finite_difference_check(&ModelConfig {
            fusion,
            ..tiny(ModelKind::DifSr)
        });
    }
}

/// DIF-SR's loss is L_ce + λ_aap Σ_j L_attr,j: linear in λ_aap, and its attribute predictors
/// get their gradient only through it.
#[test]
fn difsr_loss_is_linear_in_the_attribute_prediction_lambda() {
    let device = Device::cpu();
    let inputs = tiny_model::inputs(&device, 8);
    let at = |lambda: f32| {
        let config = ModelConfig {
            attribute_prediction_lambda: lambda,
            hidden_dropout: 0.0,
            attention_dropout: 0.0,
            ..tiny(ModelKind::DifSr)
        };
        let model = Model::new(&config, &tiny_model::shape(), &device).unwrap();
        let tape = Tape::new();
        let pass = model.forward(&tape, &inputs, Mode::Eval).unwrap();
        let aap = pass
            .attribute_prediction
            .as_ref()
            .map(|a| a.value().to_vec().unwrap()[0]);
        let ce = pass.cross_entropy.value().to_vec().unwrap()[0];
        (pass.loss().unwrap(), ce, aap)
    };
    let (zero, ce0, aap0) = at(0.0);
    let (two, _, aap2) = at(2.0);
    assert!(aap0.is_none(), "λ_aap = 0 computes no L_attr");
    assert_eq!(zero, ce0);
    let aap = aap2.expect("L_attr at λ_aap = 2");
    // Two attribute types, each ≈ ln 2 at initialisation (logits ≈ 0).
    assert!(aap > 1.0, "Σ L_attr = {aap}");
    assert!(((two - zero) - 2.0 * aap).abs() <= 1e-4 * aap);
    // Without target attributes the model says so.
    let mut missing = inputs.clone();
    missing.target_attributes.clear();
    let model = Model::new(&tiny(ModelKind::DifSr), &tiny_model::shape(), &device).unwrap();
    assert!(model
        .forward(&Tape::new(), &missing, Mode::Train { step: 0 })
        .is_err());
}

fn synthetic(dir: &std::path::Path) -> Dataset {
    let cfg = SyntheticConfig {
        n_users: 80,
        n_categories: 4,
        active_per_category: 6,
        churn_per_period: 1,
        n_periods: 6,
        min_len: 6,
        max_len: 14,
        ..SyntheticConfig::default()
    };
    Dataset::synthetic(&cfg, dir).unwrap()
}

/// Runs `steps` Adam steps cycling over the first batches of epoch 1; returns the losses and
/// the final parameters.
fn run_steps(
    dataset: &Dataset,
    config: &ModelConfig,
    lr: f32,
    batch_size: usize,
    steps: usize,
    device: &Device,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let mut model = Model::new(config, &data_shape(dataset), device).unwrap();
    let split = dataset.leave_one_out();
    let batcher = Batcher::new(dataset, &split.train, batch_size, config.max_len).unwrap();
    let tables: Vec<_> = token_attributes(dataset)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let batches: Vec<_> = batcher
        .epoch(Order::Shuffled { seed: 1, epoch: 1 })
        .take(4)
        .collect();
    let mut adam = Adam::new(
        AdamConfig {
            lr,
            ..AdamConfig::default()
        },
        &model.tensors(),
    )
    .unwrap();
    let mut losses = Vec::new();
    for step in 0..steps {
        let batch = &batches[step % batches.len()];
        let inputs =
            ModelInputs::from_batch(device, batch, &tables, config.attribute_width).unwrap();
        let tape = Tape::new();
        let pass = model
            .forward(&tape, &inputs, Mode::Train { step: step as u64 })
            .unwrap();
        losses.push(pass.loss().unwrap());
        let grads = pass.backward(&tape).unwrap();
        let mut params = model.tensors();
        adam.step(&mut params, &grads).unwrap();
        model.set_tensors(params).unwrap();
    }
    let params = model
        .tensors()
        .iter()
        .map(|t| t.to_vec().unwrap())
        .collect();
    (losses, params)
}

#[test]
fn loss_falls_on_synthetic_data() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(dir.path());
    for kind in [
        ModelKind::SasRec,
        ModelKind::Nova,
        ModelKind::DifSr,
        ModelKind::Asif,
    ] {
        let config = ModelConfig {
            hidden_dropout: 0.1,
            attention_dropout: 0.1,
            rsa_lambda: 1.0,
            ..tiny(kind)
        };
        let (losses, _) = run_steps(&dataset, &config, 5e-3, 32, 40, &Device::cpu());
        let first: f32 = losses[..4].iter().sum::<f32>() / 4.0;
        let last: f32 = losses[losses.len() - 4..].iter().sum::<f32>() / 4.0;
        assert!(
            last < 0.85 * first,
            "{kind}: loss {first} -> {last} ({losses:?})"
        );
    }
}

#[test]
fn asif_at_paper_defaults_trains_without_nan() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(dir.path());
    // Spec §6: d 256, h 4, L 3, n 50, dropout 0.5/0.3, λ 10, r 16, lr 1e-4; a small batch.
    let config = ModelConfig::default();
    let (losses, params) = run_steps(&dataset, &config, 1e-4, 16, 4, &Device::cpu());
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(params.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn same_seed_gives_the_same_cpu_run() {
    let dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(dir.path());
    let config = tiny(ModelKind::Asif);
    let a = run_steps(&dataset, &config, 1e-3, 16, 5, &Device::cpu());
    let b = run_steps(&dataset, &config, 1e-3, 16, 5, &Device::cpu());
    assert_eq!(a, b, "same seed, different run");
    let other = ModelConfig { seed: 8, ..config };
    let c = run_steps(&dataset, &other, 1e-3, 16, 5, &Device::cpu());
    assert_ne!(a.1, c.1, "the seed must matter");
}

#[test]
fn emulated_device_agrees_with_cpu() {
    let cpu = Device::cpu();
    let small = |kind| ModelConfig {
        hidden_size: 8,
        layers: 1,
        max_len: 6,
        inner_size: 8,
        ..tiny(kind)
    };
    // Every kind with the default fusion (NOVA included; DIF-SR only with its published gate:
    // its score ops are host code, the same on every device; one emulated DIF-SR config took
    // 3.7 s on the shared 2-core machine, 20 s beside a release build), then the fusion gate (SASRec_F, DIF-SR and ASIF) and ASIF with RSA
    // dedup.
    let mut configs: Vec<ModelConfig> = ModelKind::ALL
        .into_iter()
        .filter(|&kind| kind != ModelKind::DifSr)
        .map(small)
        .collect();
    for kind in [ModelKind::SasRecF, ModelKind::DifSr, ModelKind::Asif] {
        configs.push(ModelConfig {
            fusion: Fusion::Gate,
            ..small(kind)
        });
    }
    configs.push(ModelConfig {
        rsa_dedup: true,
        ..small(ModelKind::Asif)
    });
    for device in common::kernel_devices() {
        for config in &configs {
            let config = config.clone();
            let label = format!(
                "{} {:?}{}",
                config.kind,
                config.fusion,
                if config.rsa_dedup { " dedup" } else { "" }
            );
            let model_cpu = Model::new(&config, &tiny_model::shape(), &cpu).unwrap();
            let model_dev = Model::new(&config, &tiny_model::shape(), &device).unwrap();
            let (tape_cpu, tape_dev) = (Tape::new(), Tape::new());
            let pass_cpu = model_cpu
                .forward(
                    &tape_cpu,
                    &tiny_model::inputs(&cpu, 6),
                    Mode::Train { step: 1 },
                )
                .unwrap();
            let pass_dev = model_dev
                .forward(
                    &tape_dev,
                    &tiny_model::inputs(&device, 6),
                    Mode::Train { step: 1 },
                )
                .unwrap();
            let (l_cpu, l_dev) = (pass_cpu.loss().unwrap(), pass_dev.loss().unwrap());
            assert!(
                (l_cpu - l_dev).abs() <= 1e-4 * l_cpu.abs(),
                "{label} on {}: loss {l_dev} vs CPU {l_cpu}",
                device.name()
            );
            let g_cpu = pass_cpu.backward(&tape_cpu).unwrap();
            let g_dev = pass_dev.backward(&tape_dev).unwrap();
            for ((p, a), b) in model_cpu.parameters().iter().zip(&g_cpu).zip(&g_dev) {
                let (a, b) = (a.to_vec().unwrap(), b.to_vec().unwrap());
                let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
                let worst = a
                    .iter()
                    .zip(&b)
                    .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
                // fp32 kernels against the CPU reference through a whole model: 1e-3 of the
                // tensor's largest gradient (atomics and summation order differ).
                assert!(
                    worst <= 1e-3 * scale,
                    "{label} on {}: {} differs by {worst} (scale {scale})",
                    device.name(),
                    p.name
                );
            }
            let s_cpu = model_cpu
                .scores(&tiny_model::inputs(&cpu, 6))
                .unwrap()
                .to_vec()
                .unwrap();
            let s_dev = model_dev
                .scores(&tiny_model::inputs(&device, 6))
                .unwrap()
                .to_vec()
                .unwrap();
            for (x, y) in s_cpu.iter().zip(&s_dev) {
                assert!(
                    (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                    "{label}: scores differ"
                );
            }
        }
    }
}

#[test]
fn bad_configurations_are_typed_errors() {
    let device = Device::cpu();
    let shape = tiny_model::shape();
    let build = |config: ModelConfig| Model::new(&config, &shape, &device).unwrap_err();
    let base = tiny(ModelKind::Asif);
    assert!(matches!(
        build(ModelConfig {
            heads: 3,
            ..base.clone()
        }),
        Error::Config(_)
    ));
    assert!(matches!(
        build(ModelConfig {
            max_len: 65,
            ..base.clone()
        }),
        Error::Config(_)
    ));
    assert!(matches!(
        build(ModelConfig {
            hie_rank: 9,
            ..base.clone()
        }),
        Error::Config(_)
    ));
    assert!(matches!(
        build(ModelConfig {
            hidden_dropout: 1.0,
            ..base.clone()
        }),
        Error::Config(_)
    ));
    let too_many_sources = Model::new(
        &ModelConfig {
            fusion: Fusion::Gate,
            ..base.clone()
        },
        &DataShape {
            n_item_ids: 10,
            attribute_vocab: vec![3; 32],
        },
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(too_many_sources, Error::Config(_)),
        "{too_many_sources}"
    );
    let no_attributes = Model::new(
        &tiny(ModelKind::SasRecF),
        &DataShape {
            n_item_ids: 10,
            attribute_vocab: vec![],
        },
        &device,
    )
    .unwrap_err();
    assert!(no_attributes.to_string().contains("side information"));
    // SASRec needs no attributes.
    Model::new(
        &tiny(ModelKind::SasRec),
        &DataShape {
            n_item_ids: 10,
            attribute_vocab: vec![],
        },
        &device,
    )
    .unwrap();
    let unknown = "asif_wo_xyz".parse::<ModelKind>().unwrap_err();
    assert!(unknown.to_string().contains("asif_wo_rsa"), "{unknown}");
    assert_eq!(
        "ASIF-wo-HIE".parse::<ModelKind>().unwrap(),
        ModelKind::AsifWithoutHie
    );
    // Inputs of the wrong window are a shape error, not a panic.
    let model = Model::new(&base, &shape, &device).unwrap();
    let err = model.scores(&tiny_model::inputs(&device, 7)).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");
    // set_tensors refuses a tensor of another shape on the right device (cargo-mutants: the
    // shape-or-device check weakened to shape-and-device went unnoticed), and too few tensors.
    let mut model = model;
    let mut tensors = model.tensors();
    let wrong = Tensor::zeros(&device, &[tensors[0].len() + 1]).unwrap();
    tensors[0] = wrong;
    let err = model.set_tensors(tensors).unwrap_err();
    assert!(err.to_string().contains("given for"), "{err}");
    let mut tensors = model.tensors();
    tensors.pop();
    assert!(matches!(model.set_tensors(tensors), Err(Error::Config(_))));
    model.set_tensors(model.tensors()).unwrap();
}

/// Every kind's name reads back as that kind, and a kind without HIE ignores the HIE rank
/// (cargo-mutants: `Display` writing nothing and `hie()` always true went unnoticed).
#[test]
fn kind_names_round_trip_and_hie_rank_binds_hie_only() {
    for kind in ModelKind::ALL {
        let name = kind.to_string();
        assert!(!name.is_empty());
        assert_eq!(name.parse::<ModelKind>().unwrap(), kind, "{name}");
    }
    let device = Device::cpu();
    for kind in [ModelKind::SasRec, ModelKind::AsifWithoutHie] {
        let config = ModelConfig {
            hie_rank: 0,
            ..tiny(kind)
        };
        Model::new(&config, &tiny_model::shape(), &device).unwrap();
    }
    let config = ModelConfig {
        hie_rank: 0,
        ..tiny(ModelKind::Asif)
    };
    assert!(matches!(
        Model::new(&config, &tiny_model::shape(), &device),
        Err(Error::Config(_))
    ));
}

#[test]
fn attribute_groups_match_identical_token_sets() {
    // Items 1 and 2 have the same tokens in another order; 3 differs in type 0; 4 repeats 3's
    // tokens with a duplicate slot of 0s; the pad gets −1.
    let items = [1, 2, 3, 4, 0];
    let type0 = [1, 2, 2, 1, 1, 0, 0, 1, 0, 0];
    let type1 = [3, 3, 3, 3, 0];
    let groups = attribute_groups(&items, &[&type0, &type1], &[2, 1]);
    assert_eq!(groups, vec![0, 0, 1, 1, -1]);
    // A second attribute type that differs splits a group.
    let type1 = [3, 2, 3, 3, 0];
    assert_eq!(
        attribute_groups(&items, &[&type0, &type1], &[2, 1]),
        vec![0, 1, 2, 2, -1]
    );
}

/// The contrastive term L_co of a forward pass.
fn contrastive_at(model: &Model, inputs: &ModelInputs) -> f32 {
    let tape = Tape::new();
    let pass = model
        .forward(&tape, inputs, Mode::Train { step: 1 })
        .unwrap();
    pass.contrastive.unwrap().value().to_vec().unwrap()[0]
}

#[test]
fn rsa_dedup_changes_the_loss_only_where_attribute_sets_repeat() {
    let device = Device::cpu();
    let off = Model::new(&tiny(ModelKind::Asif), &tiny_model::shape(), &device).unwrap();
    let on = Model::new(
        &ModelConfig {
            rsa_dedup: true,
            ..tiny(ModelKind::Asif)
        },
        &tiny_model::shape(),
        &device,
    )
    .unwrap();
    assert_eq!(
        off.tensors().len(),
        on.tensors().len(),
        "dedup adds no parameter"
    );

    // tiny_inputs repeats attribute sets inside a sequence: dedup removes false negatives.
    let repeated = tiny_model::inputs(&device, 8);
    let groups = repeated.attribute_group_ids().unwrap().to_vec().unwrap();
    let first_row = &groups[..8];
    assert!(
        (0..8).any(|t| (0..t).any(|u| first_row[t] == first_row[u])),
        "the test needs a repeated set: {first_row:?}"
    );
    let (l_off, l_on) = (
        contrastive_at(&off, &repeated),
        contrastive_at(&on, &repeated),
    );
    assert!(
        (l_off - l_on).abs() > 1e-4 * l_off.abs(),
        "dedup must change L_co: {l_off} vs {l_on}"
    );
    // Fewer negatives: each position's softmax loses competitors, so the loss falls.
    assert!(l_on < l_off, "{l_on} !< {l_off}");

    // Every position of each sequence has its own attribute set: dedup is a no-op, bit for bit.
    let mut unique = tiny_model::inputs(&device, 8);
    let (b, n) = (3, 8);
    unique.attributes = (0..2)
        .map(|j| {
            let mut tokens = vec![0i32; b * n * 2];
            for row in 0..b {
                for t in 0..n {
                    tokens[(row * n + t) * 2] = if j == 0 { 1 + t % 5 } else { 1 + t / 5 } as i32;
                }
            }
            IndexTensor::from_vec(&device, &[b, n, 2], tokens).unwrap()
        })
        .collect();
    let groups = unique.attribute_group_ids().unwrap().to_vec().unwrap();
    for row in groups.chunks(n) {
        let valid: Vec<i32> = row.iter().copied().filter(|&g| g >= 0).collect();
        let mut distinct = valid.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), valid.len(), "{row:?}");
    }
    assert_eq!(
        contrastive_at(&off, &unique),
        contrastive_at(&on, &unique),
        "dedup must be a no-op when all sets differ"
    );

    // from_batch precomputes the same ids on the host.
    let dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(dir.path());
    let split = dataset.leave_one_out();
    let batcher = Batcher::new(&dataset, &split.train, 16, 8).unwrap();
    let tables: Vec<_> = token_attributes(&dataset)
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    let batch = batcher
        .epoch(Order::Shuffled { seed: 1, epoch: 1 })
        .next()
        .unwrap();
    let mut inputs = ModelInputs::from_batch(&device, &batch, &tables, 2).unwrap();
    let precomputed = inputs.attribute_groups.take().unwrap().to_vec().unwrap();
    assert_eq!(
        precomputed,
        inputs.attribute_group_ids().unwrap().to_vec().unwrap()
    );
}

#[test]
fn configs_written_before_rsa_dedup_still_load() {
    let config = ModelConfig {
        rsa_dedup: true,
        fusion: Fusion::Gate,
        ..tiny(ModelKind::Asif)
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"rsa_dedup\":true"), "{json}");
    assert_eq!(serde_json::from_str::<ModelConfig>(&json).unwrap(), config);
    // An older config (no rsa_dedup key) loads with dedup off.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    value.as_object_mut().unwrap().remove("rsa_dedup");
    let old: ModelConfig = serde_json::from_value(value).unwrap();
    assert!(!old.rsa_dedup);
    assert_eq!(old.fusion, Fusion::Gate);
}

/// L_ce of a training step rebuilt from the public pieces: the input stage by hand (spec §3.1,
/// sum fusion, in the model's order of dropout sites), then `Model::asif_layer` per layer, the
/// read-out and the loss. Returns L_ce and its gradient per parameter.
fn loss_through_public_layers(
    model: &Model,
    inputs: &ModelInputs,
    step: u64,
) -> (f32, Vec<Option<Vec<f32>>>) {
    let config = model.config();
    let kind = config.kind;
    let tape = Tape::new();
    let vars: Vec<_> = model
        .parameters()
        .iter()
        .map(|p| tape.leaf(p.value.clone()))
        .collect();
    let var = |name: &str| {
        let i = model
            .parameters()
            .iter()
            .position(|p| p.name == name)
            .unwrap_or_else(|| panic!("no {name}"));
        &vars[i]
    };
    let seeds = DropoutSeeds::for_model(config.seed, Mode::Train { step });
    let drop = |x| {
        dropout(
            &tape,
            &x,
            config.hidden_dropout,
            seeds.next().unwrap(),
            seeds.mode,
        )
        .unwrap()
    };
    let norm = |x, prefix: &str| {
        let (w, b) = (
            var(&format!("{prefix}.weight")),
            var(&format!("{prefix}.bias")),
        );
        layer_norm(&tape, x, w, b, config.layer_norm_eps).unwrap()
    };
    let items = embedding(&tape, var("item_embedding.weight"), &inputs.items).unwrap();
    let mut attribute_sum = None;
    for (j, tokens) in inputs.attributes.iter().enumerate() {
        let table = var(&format!("attribute_embedding.{j}.weight"));
        let a = pooled_embedding(&tape, table, tokens, config.pooling.into()).unwrap();
        attribute_sum = Some(match attribute_sum {
            None => a,
            Some(sum) => add(&tape, &sum, &a).unwrap(),
        });
    }
    let attribute_sum = attribute_sum.unwrap();
    let x = drop(norm(&items, "input_norm"));
    let batch = inputs.batch_size();
    let table = var("position_embedding.weight");
    let fused_source = match kind {
        ModelKind::AsifWithoutFa => attribute_sum.clone(),
        ModelKind::AsifWithoutUp => {
            let fused = add(&tape, &items, &attribute_sum).unwrap();
            let positions = broadcast_positions(&tape, table, batch).unwrap();
            add(&tape, &fused, &positions).unwrap()
        }
        _ => add(&tape, &items, &attribute_sum).unwrap(),
    };
    let f = drop(norm(&fused_source, "fused_input_norm"));
    let mut streams = AsifStreams {
        id: x,
        fused: Some(f),
        position: kind
            .position_stream()
            .then(|| PositionStream::from_table(&tape, table, batch).unwrap()),
    };
    for l in 0..config.layers {
        streams = model
            .asif_layer(&tape, &vars, l, &streams, &inputs.lengths, &seeds)
            .unwrap();
        let last = l + 1 == config.layers;
        assert_eq!(streams.fused.is_some(), !last, "{kind} layer {l}: F'");
        assert_eq!(
            streams.position.is_some(),
            !last && kind.position_stream(),
            "{kind} layer {l}: P'"
        );
    }
    let user = gather_last(&tape, &streams.id, &inputs.lengths).unwrap();
    let ce = cross_entropy_over_items(&tape, &user, var("item_embedding.weight"), &inputs.targets)
        .unwrap();
    let one = Tensor::from_vec(model.device(), ce.value().shape(), vec![1.0]).unwrap();
    let grads = tape.backward(&ce, one).unwrap();
    let grads = vars
        .iter()
        .map(|v| grads.get(v).map(|g| g.to_vec().unwrap()))
        .collect();
    (ce.value().to_vec().unwrap()[0], grads)
}

#[test]
fn the_public_asif_layer_is_the_models_layer() {
    let device = Device::cpu();
    let inputs = tiny_model::inputs(&device, 8);
    for kind in [
        ModelKind::Asif,
        ModelKind::AsifWithoutHie,
        ModelKind::AsifWithoutUp,
        ModelKind::AsifWithoutFa,
    ] {
        // λ = 0: the model's loss is L_ce alone; two layers cover the inner and the last layer.
        let config = ModelConfig {
            rsa_lambda: 0.0,
            ..tiny(kind)
        };
        assert_eq!(config.layers, 2);
        let model = Model::new(&config, &tiny_model::shape(), &device).unwrap();
        let tape = Tape::new();
        let pass = model
            .forward(&tape, &inputs, Mode::Train { step: 5 })
            .unwrap();
        assert!(pass.contrastive.is_none());
        let expected_loss = pass.loss().unwrap();
        let expected_grads = pass.backward(&tape).unwrap();
        let (loss, grads) = loss_through_public_layers(&model, &inputs, 5);
        // The same ops on the same values in the same order: bit for bit.
        assert_eq!(loss.to_bits(), expected_loss.to_bits(), "{kind}: L_ce");
        for ((p, expected), got) in model.parameters().iter().zip(&expected_grads).zip(&grads) {
            let expected = expected.to_vec().unwrap();
            let got = got.clone().unwrap_or_else(|| vec![0.0; expected.len()]);
            assert!(
                expected
                    .iter()
                    .zip(&got)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{kind}: gradient of {} differs",
                p.name
            );
        }
        // Another step draws other masks: the seeds reach the layer.
        let (other, _) = loss_through_public_layers(&model, &inputs, 6);
        assert_ne!(other.to_bits(), loss.to_bits(), "{kind}: dropout seeds");
    }
}

#[test]
fn the_public_asif_layer_rejects_what_it_cannot_run() {
    let device = Device::cpu();
    let inputs = tiny_model::inputs(&device, 8);
    let run = |config: &ModelConfig, layer: usize, with_position: bool, drop_var: bool| {
        let model = Model::new(config, &tiny_model::shape(), &device).unwrap();
        let tape = Tape::new();
        let mut vars: Vec<_> = model
            .parameters()
            .iter()
            .map(|p| tape.leaf(p.value.clone()))
            .collect();
        let table = model.parameter("position_embedding.weight").unwrap();
        let stream = tape.leaf(Tensor::zeros(&device, &[3, 8, 16]).unwrap());
        let position = with_position
            .then(|| PositionStream::from_table(&tape, &tape.leaf(table.clone()), 3).unwrap());
        if drop_var {
            vars.pop();
        }
        let streams = AsifStreams {
            id: stream.clone(),
            fused: Some(stream),
            position,
        };
        let seeds = DropoutSeeds::for_model(1, Mode::Eval);
        model.asif_layer(&tape, &vars, layer, &streams, &inputs.lengths, &seeds)
    };
    let asif = tiny(ModelKind::Asif);
    assert!(run(&asif, 1, true, false).is_ok());
    for (config, layer, position, drop_var, what) in [
        (tiny(ModelKind::SasRecF), 0, false, false, "a SASRec model"),
        (asif.clone(), 2, true, false, "layer out of range"),
        (asif.clone(), 0, false, false, "missing P"),
        (
            tiny(ModelKind::AsifWithoutUp),
            0,
            true,
            false,
            "P without a stream",
        ),
        (asif.clone(), 0, true, true, "too few variables"),
    ] {
        assert!(
            matches!(
                run(&config, layer, position, drop_var),
                Err(Error::Argument { .. })
            ),
            "{what}"
        );
    }
}

/// `ModelConfig::validate`, one condition at a time (cargo-mutants: `||` ↔ `&&` between a check's
/// clauses and `>` ↔ `>=` at its bounds survived while one bad value per check was tried and any
/// refusal counted): each bad configuration is refused by its own check, named by its message,
/// and each allowed boundary passes.
#[test]
fn model_configurations_are_checked_one_by_one() {
    use asif_kernels::ops::attention::{MAX_HEAD_DIM, MAX_SEQ_LEN};
    use asif_kernels::ops::hie::MAX_RANK;
    use asif_kernels::ops::source_attention::MAX_SOURCES;
    use ModelKind::{Asif, DifSr, Nova, SasRecF};
    let shape = tiny_model::shape();
    type Edit = fn(&mut ModelConfig, &mut DataShape);
    // (the message's words, the kind, the edit); the tiny config has d 16, h 2, n 8, r 4.
    let refused: [(&str, ModelKind, Edit); 30] = [
        ("hidden size d = 0", Asif, |c, _| c.hidden_size = 0),
        ("heads = 0", Asif, |c, _| c.heads = 0),
        ("heads = 3", Asif, |c, _| c.heads = 3),
        ("head width d/h = 65", Asif, |c, _| {
            c.heads = 1;
            c.hidden_size = MAX_HEAD_DIM + 1;
        }),
        ("max length n = 0", Asif, |c, _| c.max_len = 0),
        ("max length n = 65", Asif, |c, _| {
            c.max_len = MAX_SEQ_LEN + 1
        }),
        ("layers and inner size", Asif, |c, _| c.layers = 0),
        ("layers and inner size", Asif, |c, _| c.inner_size = 0),
        ("hidden dropout", Asif, |c, _| c.hidden_dropout = 1.0),
        ("hidden dropout", Asif, |c, _| c.hidden_dropout = -0.1),
        ("attention dropout", Asif, |c, _| c.attention_dropout = 1.0),
        ("λ must be", Asif, |c, _| c.rsa_lambda = -1.0),
        ("λ must be", Asif, |c, _| c.rsa_lambda = f32::INFINITY),
        ("λ must be", Asif, |c, _| c.rsa_lambda = f32::NAN),
        ("layer-norm eps", Asif, |c, _| c.layer_norm_eps = 0.0),
        ("layer-norm eps", Asif, |c, _| c.init_std = 0.0),
        ("d_a = 0", DifSr, |c, _| c.attribute_hidden_size = 0),
        ("d_a = 5", DifSr, |c, _| c.attribute_hidden_size = 5),
        ("λ_aap", DifSr, |c, _| c.attribute_prediction_lambda = -1.0),
        ("λ_aap", DifSr, |c, _| {
            c.attribute_prediction_lambda = f32::NAN
        }),
        ("HIE rank r = 0", Asif, |c, _| c.hie_rank = 0),
        ("HIE rank r = 9", Asif, |c, _| c.hie_rank = 9),
        ("HIE rank r = 33", Asif, |c, _| {
            c.max_len = 64;
            c.hidden_size = 64;
            c.hie_rank = MAX_RANK + 1;
        }),
        ("exceeds d = 4", Asif, |c, _| {
            c.hidden_size = 4;
            c.hie_rank = 6;
        }),
        ("1 item ids", Asif, |_, d| d.n_item_ids = 1),
        ("needs side information", SasRecF, |_, d| {
            d.attribute_vocab.clear()
        }),
        ("attribute width", Asif, |c, _| c.attribute_width = 0),
        ("with 1 token ids", Asif, |_, d| d.attribute_vocab[1] = 1),
        ("over 33 sources", Asif, |c, d| {
            c.fusion = Fusion::Gate;
            d.attribute_vocab = vec![3; MAX_SOURCES];
        }),
        ("over 33 sources", Nova, |c, d| {
            c.fusion = Fusion::Gate;
            d.attribute_vocab = vec![3; MAX_SOURCES - 1];
        }),
    ];
    // The tiny config of `kind` with one edit, validated.
    let validate_edited = |kind: ModelKind, edit: Edit| {
        let (mut config, mut data) = (tiny(kind), shape.clone());
        edit(&mut config, &mut data);
        config.validate(&data)
    };
    for (words, kind, edit) in refused {
        match validate_edited(kind, edit) {
            Err(Error::Config(m)) => assert!(m.contains(words), "{words}: refused with `{m}`"),
            other => panic!("{words}: {other:?}"),
        }
    }
    // The boundaries that are allowed.
    let allowed: [(&str, ModelKind, Edit); 12] = [
        ("head width 64", Asif, |c, _| {
            c.heads = 1;
            c.hidden_size = MAX_HEAD_DIM;
        }),
        ("n = 64", Asif, |c, _| c.max_len = MAX_SEQ_LEN),
        ("n = 1 without HIE", SasRecF, |c, _| c.max_len = 1),
        ("no dropout", Asif, |c, _| {
            c.hidden_dropout = 0.0;
            c.attention_dropout = 0.0;
        }),
        ("λ = 0", Asif, |c, _| c.rsa_lambda = 0.0),
        ("λ_aap = 0, d_a = h", DifSr, |c, _| {
            c.attribute_prediction_lambda = 0.0;
            c.attribute_hidden_size = 2;
        }),
        ("r = n", Asif, |c, _| c.hie_rank = 8),
        ("r = d = 32", Asif, |c, _| {
            c.max_len = 64;
            c.hidden_size = MAX_RANK;
            c.hie_rank = MAX_RANK;
        }),
        ("two item ids", Asif, |_, d| d.n_item_ids = 2),
        ("a vocabulary of 2", Asif, |_, d| {
            d.attribute_vocab = vec![2]
        }),
        ("32 sources", Asif, |c, d| {
            c.fusion = Fusion::Gate;
            d.attribute_vocab = vec![3; MAX_SOURCES - 1];
        }),
        ("32 sources with positions", DifSr, |c, d| {
            c.fusion = Fusion::Gate;
            d.attribute_vocab = vec![3; MAX_SOURCES - 2];
        }),
    ];
    for (what, kind, edit) in allowed {
        if let Err(e) = validate_edited(kind, edit) {
            panic!("{what}: {e}");
        }
    }
}

/// `ModelInputs::from_batch` gives each row its target item's attribute tokens (DIF-SR's
/// attribute-prediction targets) at `[row, 0..width]`, zeros for a target past the table's end;
/// and the model refuses attribute blocks of the wrong shape with a shape error (cargo-mutants:
/// the row layout, the skip of missing targets and `||` → `&&` in the shape checks survived).
#[test]
fn from_batch_gives_each_target_its_tokens_and_the_model_checks_their_shapes() {
    use asif_kernels::data::{load, DatasetFiles, LoadConfig};
    let device = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let load_with = |inter: &str, item: &str| {
        let files = DatasetFiles {
            name: "t".into(),
            inter: write("t.inter", inter),
            item: Some(write("t.item", item)),
        };
        load(&files, &LoadConfig::default().with_attributes(&["class"])).unwrap()
    };
    let head = "user_id:token\titem_id:token\ttimestamp:float\n";
    let dataset = load_with(
        &format!(
            "{head}u1\ta\t1\nu1\tb\t2\nu1\tc\t3\nu1\td\t4\nu1\ta\t5\nu1\tb\t6\n\
             u2\td\t1\nu2\tc\t2\nu2\ta\t3\nu2\tb\t4\nu2\td\t5\n"
        ),
        "item_id:token\tclass:token_seq\na\tA B\nb\tC\nc\t\nd\tB D E\n",
    );
    let split = dataset.leave_one_out();
    let batch = Batcher::new(&dataset, &split.train, 8, 4)
        .unwrap()
        .epoch(Order::Sequential)
        .next()
        .unwrap();
    let class = dataset.attribute("class").unwrap().tokens().unwrap();
    // One table of one item (ids 0 and 1): targets past its end get no tokens.
    let small = load_with(
        &format!("{head}u\ta\t1\nu\ta\t2\n"),
        "item_id:token\tclass:token_seq\na\tX Y\n",
    );
    let small = small.attribute("class").unwrap().tokens().unwrap();
    let width = 2;
    let inputs = ModelInputs::from_batch(&device, &batch, &[class, small], width).unwrap();
    assert!(batch.len() >= 3 && batch.targets.iter().any(|&t| t >= 2));
    for (table, got) in [class, small].iter().zip(&inputs.target_attributes) {
        assert_eq!(got.shape(), [batch.len(), width]);
        let mut want = vec![0i32; batch.len() * width];
        for (row, &target) in batch.targets.iter().enumerate() {
            if (target as usize) < table.n_rows() {
                for (slot, &token) in table.tokens(target).iter().take(width).enumerate() {
                    want[row * width + slot] = token as i32;
                }
            }
        }
        assert!(want.iter().any(|&t| t != 0));
        assert_eq!(got.to_vec().unwrap(), want, "targets {:?}", batch.targets);
    }

    // Blocks of the wrong shape are shape errors naming the block (DIF-SR: λ_aap > 0, so the
    // target blocks are checked too).
    let model = Model::new(&tiny(ModelKind::DifSr), &tiny_model::shape(), &device).unwrap();
    let good = tiny_model::inputs(&device, 8);
    model.scores(&good).unwrap();
    // (the message's words, whether the target block is replaced, the replacement's shape)
    let cases: [(&str, bool, &[usize]); 4] = [
        ("attribute tokens must be", false, &[3, 9, 2]),
        ("attribute tokens must be", false, &[3, 8]),
        ("target attribute tokens must be", true, &[4, 2]),
        ("target attribute tokens must be", true, &[3]),
    ];
    for (words, target, shape) in cases {
        let mut inputs = good.clone();
        let block = IndexTensor::zeros(&device, shape).unwrap();
        if target {
            inputs.target_attributes[0] = block;
        } else {
            inputs.attributes[0] = block;
        }
        match model.scores(&inputs) {
            Err(e @ Error::Shape { .. }) => assert!(e.to_string().contains(words), "{e}"),
            other => panic!("{words}: {:?}", other.map(|_| ())),
        }
    }
}

/// The initial weights as known answers (cargo-mutants: the parameter seed's `^` and the second
/// uniform's counter `2i + 1` survived, since every test compares a model with itself or loads
/// the same weights into the oracle): the values below are printed by
/// `scripts/oracle/parameter_init_known_answers.py`, which states the initialisation from the
/// crate's counter hash (pinned by `tests/known_answers.rs`) and Box–Muller.
#[test]
fn initial_weights_are_known() {
    let row = |seed: u64, name: &str, row: usize| {
        let config = ModelConfig {
            seed,
            ..tiny(ModelKind::SasRec)
        };
        let model = Model::new(&config, &tiny_model::shape(), &Device::cpu()).unwrap();
        let values = model.parameter(name).unwrap().to_vec().unwrap();
        values[row * 16..row * 16 + 4].to_vec()
    };
    assert_eq!(row(7, "item_embedding.weight", 0), [0.0; 4], "the pad row");
    assert_eq!(
        row(7, "item_embedding.weight", 1),
        [0.012992239, 0.007528725, 0.018684126, 0.015433482]
    );
    assert_eq!(
        row(7, "position_embedding.weight", 0),
        [-0.024818653, -0.017981319, -0.0048088864, -0.025183816]
    );
    // A seed sharing bits with the stream constant 0xA51F << 48 (it is xored in).
    assert_eq!(
        row(0xA51F_0000_0000_0000, "position_embedding.weight", 0),
        [0.016208319, 0.021251682, -0.0036799766, 0.018050391]
    );
}
