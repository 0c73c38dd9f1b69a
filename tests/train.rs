//! The trainer (issue 8): a run reports metrics and writes its results and checkpoints; a
//! resumed run ends bit-identical to an uninterrupted one on the CPU; early stopping; bad
//! configurations and checkpoints are typed errors; the example's flags fail clearly.
use std::io::Write;
use std::path::{Path, PathBuf};

use asif_kernels::checkpoint::SafetensorsFile;
use asif_kernels::data::{Dataset, SyntheticConfig};
use asif_kernels::model::{data_shape, Model, ModelConfig, ModelKind};
use asif_kernels::train::{
    evaluate, results_table, train, Outcome, RunOptions, TrainConfig, TrainResults,
};
use asif_kernels::{Device, Error};

fn synthetic(dir: &Path) -> Dataset {
    let cfg = SyntheticConfig {
        n_users: 60,
        n_categories: 4,
        active_per_category: 6,
        churn_per_period: 1,
        n_periods: 6,
        min_len: 6,
        max_len: 12,
        ..SyntheticConfig::default()
    };
    Dataset::synthetic(&cfg, dir).unwrap()
}

fn tiny(kind: ModelKind) -> ModelConfig {
    ModelConfig {
        kind,
        hidden_size: 16,
        heads: 2,
        layers: 2,
        max_len: 8,
        inner_size: 16,
        hidden_dropout: 0.2,
        attention_dropout: 0.1,
        rsa_lambda: 1.0,
        hie_rank: 4,
        attribute_width: 2,
        seed: 11,
        ..ModelConfig::default()
    }
}

fn train_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        eval_batch_size: 32,
        learning_rate: 3e-3,
        patience: 10,
        seed: 5,
        ..TrainConfig::default()
    }
}

fn finished(outcome: Outcome) -> TrainResults {
    match outcome {
        Outcome::Finished(r) => *r,
        other => panic!("expected a finished run, got {other:?}"),
    }
}

fn options(dir: &Path) -> RunOptions {
    RunOptions {
        checkpoint_dir: Some(dir.to_path_buf()),
        resume: false,
        progress: false,
        stop_after_epochs: None,
        results_path: Some(dir.join("results.json")),
        max_batches_per_epoch: None,
        ..RunOptions::default()
    }
}

#[test]
fn a_run_reports_metrics_and_writes_results_and_checkpoints() {
    let data_dir = tempfile::tempdir().unwrap();
    let run_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    let config = tiny(ModelKind::Asif);
    let results = finished(
        train(
            &dataset,
            &config,
            &train_config(3),
            &Device::cpu(),
            &options(run_dir.path()),
        )
        .unwrap(),
    );
    assert_eq!(results.epochs.len(), 3);
    assert!((1..=3).contains(&results.best_epoch));
    for m in [results.best_valid, results.test] {
        for v in [m.hr10, m.ndcg10, m.hr20, m.ndcg20] {
            assert!((0.0..=1.0).contains(&v), "{m:?}");
        }
        assert!(m.hr10 <= m.hr20 && m.ndcg10 <= m.ndcg20 && m.ndcg20 <= m.hr20);
    }
    assert!(results.epochs.iter().all(|e| e.train_loss.is_finite()));
    assert_eq!(results.device, "cpu");
    let table = results_table(&results);
    assert!(
        table.contains("NDCG@20") && table.contains("| test"),
        "{table}"
    );

    // The JSON results file holds the same results.
    let json = std::fs::read_to_string(run_dir.path().join("results.json")).unwrap();
    let parsed: TrainResults = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, results);
    for key in [
        "\"model\"",
        "\"test\"",
        "\"seconds\"",
        "\"device\"",
        "\"ndcg20\"",
    ] {
        assert!(json.contains(key), "{key} missing from the results file");
    }

    // best.safetensors holds the best epoch's weights: loading them gives the test metrics.
    let mut model = Model::new(&config, &data_shape(&dataset), &Device::cpu()).unwrap();
    model
        .load_weights(&run_dir.path().join("best.safetensors"))
        .unwrap();
    let split = dataset.leave_one_out();
    let test = evaluate(&model, &dataset, &split.test, 32).unwrap();
    assert_eq!(test, results.test);
    // No temporary file is left behind.
    let leftovers: Vec<PathBuf> = std::fs::read_dir(run_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn tensors_of(path: &Path, model: &Model) -> Vec<Vec<u32>> {
    let file = SafetensorsFile::read(path).unwrap();
    let mut out = Vec::new();
    for p in model.parameters() {
        for name in [p.name.clone(), format!("best.{}", p.name)] {
            let values = file.tensor(&name, p.value.shape()).unwrap();
            out.push(values.iter().map(|v| v.to_bits()).collect());
        }
    }
    let total = model.n_scalars();
    for name in ["adam.first_moment", "adam.second_moment"] {
        let values = file.tensor(name, &[total]).unwrap();
        out.push(values.iter().map(|v| v.to_bits()).collect());
    }
    out
}

#[test]
fn the_graph_option_changes_no_number_of_a_run() {
    // Issue 20: with the option on, `train()` stages each batch into kept buffers
    // (`TrainStep::run_staged`), runs every step on Adam's step counter, updates the parameters
    // in place and copies on write after an epoch that kept the best weights. On the CPU device
    // the steps run eagerly: every loss, metric and checkpointed tensor (the best weights
    // included) equals the run with the option off.
    let data_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    let config = tiny(ModelKind::Asif);
    let cfg = train_config(4);
    let device = Device::cpu();
    let model = Model::new(&config, &data_shape(&dataset), &device).unwrap();
    let mut runs = Vec::new();
    for cuda_graph in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let results = finished(
            train(
                &dataset,
                &config,
                &cfg,
                &device,
                &RunOptions {
                    cuda_graph,
                    ..options(dir.path())
                },
            )
            .unwrap(),
        );
        let losses: Vec<u64> = results
            .epochs
            .iter()
            .map(|e| e.train_loss.to_bits())
            .collect();
        let valid: Vec<_> = results.epochs.iter().map(|e| e.valid).collect();
        let tensors = tensors_of(&dir.path().join("last.safetensors"), &model);
        runs.push((losses, valid, results.best_epoch, results.test, tensors));
    }
    let (off, on) = (&runs[0], &runs[1]);
    assert_eq!(off.0, on.0, "training losses");
    assert_eq!(off.1, on.1, "validation metrics");
    assert_eq!((off.2, off.3), (on.2, on.3), "best epoch and test metrics");
    assert!(
        off.4 == on.4,
        "checkpointed parameters, best weights or Adam state differ"
    );
}

#[test]
fn the_best_weights_survive_the_epochs_after_them() {
    // `train()` keeps the best epoch's weights as clones of the parameters; Adam then updates the
    // parameters in place, so those clones must be copied on write, not overwritten. After a run
    // whose best epoch is not its last, `last.safetensors`' `best.*` tensors (the clones, written
    // at the end) equal `best.safetensors` (written when the epoch was best), and the test
    // metrics are those of those weights.
    let data_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    let config = tiny(ModelKind::SasRec);
    let cfg = TrainConfig {
        learning_rate: 3e-2,
        ..train_config(6)
    };
    let device = Device::cpu();
    let dir = tempfile::tempdir().unwrap();
    let results = finished(train(&dataset, &config, &cfg, &device, &options(dir.path())).unwrap());
    eprintln!(
        "best epoch {} of {}",
        results.best_epoch,
        results.epochs.len()
    );
    assert!(
        results.best_epoch < results.epochs.len(),
        "the run should have epochs after its best one (best {} of {})",
        results.best_epoch,
        results.epochs.len()
    );
    let mut best = Model::new(&config, &data_shape(&dataset), &device).unwrap();
    best.load_weights(&dir.path().join("best.safetensors"))
        .unwrap();
    let last = SafetensorsFile::read(&dir.path().join("last.safetensors")).unwrap();
    for p in best.parameters() {
        let kept = last
            .tensor(&format!("best.{}", p.name), p.value.shape())
            .unwrap();
        assert!(
            kept == p.value.to_vec().unwrap(),
            "{}: the kept best weights changed after their epoch",
            p.name
        );
    }
    let split = dataset.leave_one_out();
    assert_eq!(
        evaluate(&best, &dataset, &split.test, 32).unwrap(),
        results.test
    );
}

#[test]
fn a_resumed_run_ends_bit_identical_to_an_uninterrupted_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    let config = tiny(ModelKind::Asif);
    let cfg = train_config(4);
    let device = Device::cpu();

    let straight_dir = tempfile::tempdir().unwrap();
    let straight = finished(
        train(
            &dataset,
            &config,
            &cfg,
            &device,
            &options(straight_dir.path()),
        )
        .unwrap(),
    );

    let resumed_dir = tempfile::tempdir().unwrap();
    let interrupted = train(
        &dataset,
        &config,
        &cfg,
        &device,
        &RunOptions {
            stop_after_epochs: Some(2),
            ..options(resumed_dir.path())
        },
    )
    .unwrap();
    assert_eq!(interrupted, Outcome::Interrupted { epochs_done: 2 });
    let resumed = finished(
        train(
            &dataset,
            &config,
            &cfg,
            &device,
            &RunOptions {
                resume: true,
                ..options(resumed_dir.path())
            },
        )
        .unwrap(),
    );

    assert_eq!(resumed.test, straight.test);
    assert_eq!(resumed.best_valid, straight.best_valid);
    assert_eq!(resumed.best_epoch, straight.best_epoch);
    assert_eq!(resumed.epochs.len(), straight.epochs.len());
    for (a, b) in resumed.epochs.iter().zip(&straight.epochs) {
        assert_eq!(
            a.train_loss.to_bits(),
            b.train_loss.to_bits(),
            "epoch {}",
            a.epoch
        );
        assert_eq!(a.valid, b.valid, "epoch {}", a.epoch);
    }
    let model = Model::new(&config, &data_shape(&dataset), &device).unwrap();
    let a = tensors_of(&straight_dir.path().join("last.safetensors"), &model);
    let b = tensors_of(&resumed_dir.path().join("last.safetensors"), &model);
    assert!(a == b, "parameters or Adam state differ after resuming");

    // Resuming a checkpoint of another model configuration is refused.
    let other = ModelConfig {
        hidden_dropout: 0.3,
        ..config.clone()
    };
    let err = train(
        &dataset,
        &other,
        &cfg,
        &device,
        &RunOptions {
            resume: true,
            ..options(resumed_dir.path())
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
}

#[test]
fn early_stopping_and_bad_configurations() {
    let data_dir = tempfile::tempdir().unwrap();
    let dataset = synthetic(data_dir.path());
    let device = Device::cpu();
    // A learning rate too small to change the ranking: no epoch beats the first, so patience 1
    // stops after epoch 2 and the best epoch is 1.
    let results = finished(
        train(
            &dataset,
            &tiny(ModelKind::SasRec),
            &TrainConfig {
                learning_rate: 1e-12,
                patience: 1,
                ..train_config(6)
            },
            &device,
            &RunOptions::default(),
        )
        .unwrap(),
    );
    assert_eq!(results.epochs.len(), 2);
    assert!(results.stopped_early);
    assert_eq!(results.best_epoch, 1);

    for bad in [
        TrainConfig {
            batch_size: 0,
            ..train_config(1)
        },
        TrainConfig {
            patience: 0,
            ..train_config(1)
        },
        TrainConfig {
            learning_rate: -1.0,
            ..train_config(1)
        },
    ] {
        let err = train(
            &dataset,
            &tiny(ModelKind::Asif),
            &bad,
            &device,
            &RunOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    // A corrupt checkpoint is a typed error, not a panic.
    let run_dir = tempfile::tempdir().unwrap();
    std::fs::write(run_dir.path().join("last.safetensors"), b"not a checkpoint").unwrap();
    let err = train(
        &dataset,
        &tiny(ModelKind::Asif),
        &train_config(1),
        &device,
        &RunOptions {
            resume: true,
            ..options(run_dir.path())
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::Checkpoint { .. }), "{err}");
}

/// The example binary, built by `cargo test` beside the test binaries (`target/<profile>/
/// examples/train`); `None` when only this test target was built.
fn example_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir
        .join("examples")
        .join(format!("train{}", std::env::consts::EXE_SUFFIX));
    path.exists().then_some(path)
}

#[test]
fn the_example_rejects_bad_flags_and_missing_data_clearly() {
    let Some(binary) = example_binary() else {
        // Straight to stderr (libtest does not capture it), like tests/common's skip lines.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the example's flag errors: examples/train is not built (run the whole \
             `cargo test`)"
        );
        return;
    };
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&binary)
            .args(args)
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (status, stderr) = run(&["--no-such-flag"]);
    assert!(!status.success());
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (status, stderr) = run(&["--model", "bert4rec"]);
    assert!(!status.success());
    assert!(stderr.contains("asif_wo_rsa"), "{stderr}");

    let (status, stderr) = run(&["--data-dir", "/no/such/folder", "--quiet"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("no such folder"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let (status, stderr) = run(&["--fusion", "mlp"]);
    assert!(!status.success());
    assert!(stderr.contains("sum, concat or gate"), "{stderr}");

    // The fusion gate and RSA dedup train end to end (a very small run).
    let results = tempfile::tempdir().unwrap();
    let results_file = results.path().join("gate.json");
    let (status, stderr) = run(&[
        "--fusion",
        "gate",
        "--rsa-dedup",
        "--synthetic-users",
        "60",
        "--hidden-size",
        "8",
        "--layers",
        "1",
        "--max-len",
        "8",
        "--inner-size",
        "8",
        "--hie-rank",
        "4",
        "--batch-size",
        "64",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--results",
        results_file.to_str().unwrap(),
    ]);
    assert!(status.success(), "{stderr}");
    let json = std::fs::read_to_string(&results_file).unwrap();
    assert!(json.contains("\"fusion\": \"gate\""), "{json}");
    assert!(json.contains("\"rsa_dedup\": true"), "{json}");

    let (status, stdout) = {
        let out = std::process::Command::new(&binary)
            .arg("--help")
            .output()
            .unwrap();
        (
            out.status,
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(status.success());
    for flag in [
        "--data-dir",
        "--model",
        "--rsa-lambda",
        "--hie-rank",
        "--device",
        "--paper",
        "--fusion",
        "--rsa-dedup",
    ] {
        assert!(stdout.contains(flag), "--help lacks {flag}");
    }
}
