//! The candle custom ops (feature `candle`, `src/candle.rs`): candle's autograd through them
//! against this crate's references, on candle's CPU device.
//!
//! Built without the feature, the binary holds one test that prints the SKIPPED line; CI runs it
//! with `cargo test --features candle --test candle`.

#[cfg(not(feature = "candle"))]
#[test]
fn candle_tests_need_the_candle_feature() {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED candle custom-op tests: built without the `candle` feature (cargo test --features candle --test candle)"
    );
}

#[cfg(feature = "candle")]
#[path = "../examples/external_trainer.rs"]
#[allow(dead_code)]
mod external_trainer;

#[cfg(feature = "candle")]
mod with_candle {
    use super::external_trainer;
    use asif_kernels::candle::{AsifAttention, AsifContrastiveLoss, AsifHie};
    use asif_kernels::prelude::*;
    use candle_core::{Device as CandleDevice, Var as CandleVar};

    fn relative_error(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len());
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0.0, f32::max)
    }

    fn values(tensor: &candle_core::Tensor) -> Vec<f32> {
        tensor
            .flatten_all()
            .expect("flatten")
            .to_vec1::<f32>()
            .expect("values")
    }

    /// The external trainer's model (attention, HIE with the full-QR backward, contrastive loss) built
    /// from the candle ops and differentiated by candle, against the same chain written by hand with
    /// this crate's plain API on its CPU reference device.
    #[test]
    fn candle_autograd_through_the_three_ops_matches_the_reference_chain() {
        chain_matches_the_reference(&CandleDevice::Cpu, 1e-6, 1e-5);
    }

    /// The same chain on candle's CUDA device: the ops run this crate's kernels on candle's
    /// stream (feature `candle-cuda`; GPU tier). The tolerances are the kernels' parity tier.
    #[cfg(feature = "candle-cuda")]
    #[test]
    fn candle_cuda_autograd_through_the_three_ops_matches_the_reference_chain() {
        use std::io::Write;
        match CandleDevice::new_cuda(0) {
            Ok(dev) => chain_matches_the_reference(&dev, 1e-4, 1e-3),
            Err(error) => {
                let _ = writeln!(
                    std::io::stderr(),
                    "SKIPPED candle CUDA custom-op test: no usable GPU for candle ({error})"
                );
            }
        }
    }

    fn chain_matches_the_reference(
        dev: &CandleDevice,
        value_tolerance: f32,
        gradient_tolerance: f32,
    ) {
        let sizes = external_trainer::Sizes::default();
        let (b, n, d, r) = (sizes.batch, sizes.seq_len, sizes.dim, sizes.rank);
        let host = [
            external_trainer::initial_values(b * n * d, 1, 1.0),
            external_trainer::initial_values(b * n * d, 2, 1.0),
            external_trainer::initial_values(n * r, 3, 0.5),
            vec![asif_kernels::ops::contrastive::initial_logit_scale()],
        ];
        let lengths: Vec<i32> = vec![n as i32, (n - 2) as i32];

        // The reference: the hand-written chain on Device::cpu().
        let cpu = Device::cpu();
        let shapes: [&[usize]; 4] = [&[b, n, d], &[b, n, d], &[n, r], &[1]];
        let params: Vec<Tensor> = host
            .iter()
            .zip(shapes)
            .map(|(h, s)| Tensor::from_vec(&cpu, s, h.clone()).expect("param"))
            .collect();
        let cpu_lengths = IndexTensor::from_vec(&cpu, &[b], lengths.clone()).expect("lengths");
        let reference =
            external_trainer::step(sizes, &params, &cpu_lengths).expect("reference step");

        // candle: the same model from the custom ops.
        let vars: Vec<CandleVar> = host
            .iter()
            .zip(shapes)
            .map(|(h, s)| CandleVar::from_vec(h.clone(), s.to_vec(), dev).expect("var"))
            .collect();
        let (x, a, w_r, s) = (&vars[0], &vars[1], &vars[2], &vars[3]);
        let attention = AsifAttention {
            lengths: lengths.clone(),
            config: AttentionConfig {
                heads: sizes.heads,
                dropout: 0.0,
                seed: 0,
                precision: Precision::Fp32,
            },
        };
        let packed_x = x.unsqueeze(0).expect("[1, B, n, d]");
        let packed_a = a.unsqueeze(0).expect("[1, B, n, d]");
        let o = packed_x
            .apply_op3(&packed_a, &packed_x, attention)
            .expect("attention")
            .squeeze(0)
            .expect("O");
        let hie = AsifHie {
            lengths: lengths.clone(),
            options: HieOptions::default(),
            backward: HieBackward::FullQr,
        };
        let h_star = o
            .apply_op3(a.as_tensor(), w_r.as_tensor(), hie)
            .expect("hie");
        let contrastive = AsifContrastiveLoss {
            lengths: lengths.clone(),
            groups: None,
            options: ContrastiveReduction::MeanPerSequence.into(),
        };
        let loss = o
            .apply_op3(&h_star, s.as_tensor(), contrastive)
            .expect("contrastive loss");
        let grads = loss.backward().expect("candle backward");

        let want_values: Vec<Vec<f32>> = reference
            .values
            .iter()
            .map(|(_, t)| t.to_vec().expect("reference value"))
            .collect();
        assert!(
            relative_error(&values(&o), &want_values[0]) < value_tolerance,
            "O"
        );
        assert!(
            relative_error(&values(&h_star), &want_values[1]) < value_tolerance,
            "h_A*"
        );
        assert!(
            relative_error(&values(&loss), &want_values[2]) < value_tolerance,
            "L_co"
        );
        for ((name, var), want) in ["dX", "dA", "dW_r", "ds"]
            .iter()
            .zip(&vars)
            .zip(&reference.gradients)
        {
            let got = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no {name}"));
            let error = relative_error(&values(got), &want.to_vec().expect("reference gradient"));
            assert!(
                error < gradient_tolerance,
                "{name}: candle against the reference: {error:.2e}"
            );
        }
    }

    /// ASIF's own attention (two score pairs, all three values): the packing along the leading axis
    /// against `attention_backward` on the CPU reference device.
    #[test]
    fn packed_attention_with_two_pairs_and_three_values_matches_the_plain_api() {
        let (b, n, d, heads) = (2usize, 6usize, 8usize, 2usize);
        let lengths = vec![6, 4];
        let item = b * n * d;
        let queries = external_trainer::initial_values(2 * item, 11, 1.0);
        let keys = external_trainer::initial_values(2 * item, 12, 1.0);
        let values_host = external_trainer::initial_values(3 * item, 13, 1.0);
        let weights = external_trainer::initial_values(3 * item, 14, 1.0);
        let config = AttentionConfig {
            heads,
            dropout: 0.1,
            seed: 7,
            precision: Precision::Fp32,
        };

        let dev = CandleDevice::Cpu;
        let q = CandleVar::from_vec(queries.clone(), (2, b, n, d), &dev).expect("q");
        let k = CandleVar::from_vec(keys.clone(), (2, b, n, d), &dev).expect("k");
        let v = CandleVar::from_vec(values_host.clone(), (3, b, n, d), &dev).expect("v");
        let w = candle_core::Tensor::from_vec(weights.clone(), (3, b, n, d), &dev).expect("w");
        let out = q
            .apply_op3(
                k.as_tensor(),
                v.as_tensor(),
                AsifAttention {
                    lengths: lengths.clone(),
                    config,
                },
            )
            .expect("attention");
        let grads = (&out * &w)
            .expect("weighted")
            .sum_all()
            .expect("sum")
            .backward()
            .expect("backward");

        let cpu = Device::cpu();
        let chunk = |all: &[f32], i: usize| {
            Tensor::from_vec(&cpu, &[b, n, d], all[i * item..(i + 1) * item].to_vec())
                .expect("chunk")
        };
        let inputs = AttentionInputs {
            score_pairs: (0..2)
                .map(|p| ScorePair {
                    query: chunk(&queries, p),
                    key: chunk(&keys, p),
                })
                .collect(),
            id_values: chunk(&values_host, 0),
            fused_values: Some(chunk(&values_host, 1)),
            position_values: Some(chunk(&values_host, 2)),
        };
        let cpu_lengths = IndexTensor::from_vec(&cpu, &[b], lengths).expect("lengths");
        let (outputs, saved) = attention_forward(&inputs, &cpu_lengths, &config).expect("forward");
        let upstream: Vec<Tensor> = (0..3).map(|i| chunk(&weights, i)).collect();
        let want = attention_backward(
            &inputs,
            &cpu_lengths,
            &config,
            &saved,
            &OutputGradients {
                id: Some(&upstream[0]),
                fused: Some(&upstream[1]),
                position: Some(&upstream[2]),
            },
        )
        .expect("backward");

        let concat = |parts: &[&Tensor]| -> Vec<f32> {
            parts
                .iter()
                .flat_map(|t| t.to_vec().expect("values"))
                .collect()
        };
        let want_out = concat(&[
            &outputs.id,
            outputs.fused.as_ref().expect("O_A"),
            outputs.position.as_ref().expect("O_P"),
        ]);
        assert!(relative_error(&values(&out), &want_out) < 1e-6, "outputs");
        let want_dq = concat(&[&want.score_pairs[0].query, &want.score_pairs[1].query]);
        let want_dk = concat(&[&want.score_pairs[0].key, &want.score_pairs[1].key]);
        let want_dv = concat(&[
            &want.id_values,
            want.fused_values.as_ref().expect("dV2"),
            want.position_values.as_ref().expect("dV3"),
        ]);
        for (name, var, want) in [
            ("dQ", &q, want_dq),
            ("dK", &k, want_dk),
            ("dV", &v, want_dv),
        ] {
            let got = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no {name}"));
            let error = relative_error(&values(got), &want);
            assert!(error < 1e-6, "{name}: {error:.2e}");
        }
    }

    #[test]
    fn bad_packing_is_a_candle_error_not_a_panic() {
        let dev = CandleDevice::Cpu;
        let q = candle_core::Tensor::zeros((4, 1, 2, 4), candle_core::DType::F32, &dev).expect("q");
        let result = q.apply_op3_no_bwd(
            &q,
            &q,
            &AsifAttention {
                lengths: vec![2],
                config: AttentionConfig {
                    heads: 1,
                    dropout: 0.0,
                    seed: 0,
                    precision: Precision::Fp32,
                },
            },
        );
        assert!(result.is_err(), "four score pairs");
    }
}
