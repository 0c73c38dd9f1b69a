//! Trains ASIF (or a baseline or ablation) and prints HR/NDCG@{10, 20}.
//!
//! `cargo run --release --example train` with no arguments generates the built-in synthetic
//! dataset into the system's temporary folder and trains a small ASIF on it on the CPU (or GPU 0
//! when usable) in under two minutes. `--help` lists every flag.
use std::path::PathBuf;
use std::process::ExitCode;

use asif_kernels::data::{Dataset, LoadConfig, SyntheticConfig};
use asif_kernels::model::{Fusion, HieGradient, ModelConfig, ModelKind, PoolingMode, RsaReduction};
use asif_kernels::train::{results_table, train, Outcome, RunOptions, TrainConfig};
use asif_kernels::{Device, Error};
use clap::{Parser, ValueEnum};

/// Train ASIF or a baseline on a RecBole dataset (or the built-in synthetic one) and report
/// HR@10/20 and NDCG@10/20 of the best-validation epoch on the test split (leave-one-out,
/// full ranking).
///
/// The defaults are a SMALL run so the no-argument run finishes in under two minutes on a CPU
/// core: 400 synthetic users, d = 32, 2 layers, 2 heads, n = 20, inner 32, lr 1e-3, batch 128,
/// 4 epochs (the CPU reference runs about 750 training samples per second at this size).
/// `--paper` switches to the paper's setting (spec §6: d 256, 3 layers, 4 heads, n 50, inner
/// 256, lr 1e-4, batch 2048, 200 epochs, patience 10); flags given after it still apply.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// Folder with RecBole atomic files `<NAME>.inter` and `<NAME>.item`. Without it, the
    /// built-in synthetic dataset is generated into the temporary folder.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Users of the built-in synthetic dataset (without --data-dir) [small: 400, paper: 1000].
    #[arg(long, value_name = "N")]
    synthetic_users: Option<usize>,
    /// Dataset name (file stem inside --data-dir).
    #[arg(long, value_name = "NAME", default_value = "ml-100k")]
    dataset: String,
    /// Token attributes of the .item file used as side information (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "class")]
    attributes: Vec<String>,
    /// k-core filter of users and items (RecBole's `[k,inf)`; 0 = off; ml-100k in the spec: 5).
    #[arg(long, default_value_t = 5)]
    kcore: usize,

    /// Model: sasrec, sasrec_f, nova, difsr, asif, asif_wo_rsa, asif_wo_hie, asif_wo_up, asif_wo_fa.
    #[arg(long, default_value = "asif", value_parser = parse_kind)]
    model: ModelKind,
    /// Fusion 𝓕 of item and attribute embeddings: sum, concat or gate (RecBole's VanillaAttention
    /// over the stacked embeddings).
    #[arg(long, default_value = "sum", value_parser = parse_fusion)]
    fusion: Fusion,
    /// Device: auto (GPU 0 if usable, else CPU), cpu or cuda.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    device: DeviceChoice,

    /// Use the paper's hyper-parameters (spec §6) as the starting point.
    #[arg(long)]
    paper: bool,
    /// Hidden size d [small: 32, paper: 256].
    #[arg(long)]
    hidden_size: Option<usize>,
    /// Heads h [small: 2, paper: 4].
    #[arg(long)]
    heads: Option<usize>,
    /// Layers L [small: 2, paper: 3].
    #[arg(long)]
    layers: Option<usize>,
    /// Window n (most recent items per sample, ≤ 64) [small: 20, paper: 50].
    #[arg(long)]
    max_len: Option<usize>,
    /// FFN inner size [small: 32, paper: 256].
    #[arg(long)]
    inner_size: Option<usize>,
    /// Input and hidden dropout [0.5].
    #[arg(long)]
    hidden_dropout: Option<f32>,
    /// Attention dropout [0.3].
    #[arg(long)]
    attention_dropout: Option<f32>,
    /// λ of L = L_ce + λ·L_co (RSA) [10].
    #[arg(long)]
    rsa_lambda: Option<f32>,
    /// RSA reduction over positions: mean (spec A8) or sum (eq. 9 literally) [mean].
    #[arg(long, value_enum)]
    rsa_reduction: Option<ReductionChoice>,
    /// RSA dedup (spec §3.4): positions whose items have identical attribute tokens are not
    /// negatives of each other in L_co (off: the paper's Y = I).
    #[arg(long)]
    rsa_dedup: bool,
    /// HIE bases r (≤ n, ≤ 32) [16].
    #[arg(long)]
    hie_rank: Option<usize>,
    /// HIE backward: Q constant (default, spec A7) or the full thin-QR backward.
    #[arg(long)]
    hie_full_qr: bool,
    /// Keep padding rows in HIE (spec A6's naive variant).
    #[arg(long)]
    hie_keep_padding: bool,
    /// Attribute pooling: sum or mean [sum].
    #[arg(long, value_enum)]
    pooling: Option<PoolingChoice>,
    /// Tokens kept per item and attribute [8].
    #[arg(long)]
    attribute_width: Option<usize>,
    /// DIF-SR's attribute embedding width d_a (a multiple of h) [64].
    #[arg(long)]
    attribute_hidden_size: Option<usize>,
    /// DIF-SR's λ_aap of L = L_ce + λ_aap Σ_j L_attr,j [10].
    #[arg(long)]
    aap_lambda: Option<f32>,

    /// Learning rate (Adam) [small: 1e-3, paper: 1e-4].
    #[arg(long)]
    lr: Option<f32>,
    /// Training batch size [small: 128, paper: 2048].
    #[arg(long)]
    batch_size: Option<usize>,
    /// Most epochs [small: 4, paper: 200].
    #[arg(long)]
    epochs: Option<usize>,
    /// Early stopping: epochs without a better validation NDCG@20 [10].
    #[arg(long)]
    patience: Option<usize>,
    /// Seed of initialisation, dropout and shuffling [2024].
    #[arg(long, default_value_t = 2024)]
    seed: u64,

    /// Write last.safetensors (resumable) and best.safetensors (weights) here after each epoch.
    #[arg(long, value_name = "DIR")]
    checkpoint_dir: Option<PathBuf>,
    /// Continue from <checkpoint-dir>/last.safetensors if it exists.
    #[arg(long, requires = "checkpoint_dir")]
    resume: bool,
    /// Results JSON (config, metrics, epoch times, device) [target/asif-results/<model>-<dataset>.json].
    #[arg(long, value_name = "FILE")]
    results: Option<PathBuf>,
    /// No progress line.
    #[arg(long)]
    quiet: bool,
    /// CPU threads [RAYON_NUM_THREADS, else every core]. Results do not depend on it.
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Train on at most N batches per epoch (timing runs; changes the results).
    #[arg(long, value_name = "N")]
    max_batches: Option<usize>,
    /// On a GPU, run each training step of repeated shapes as one CUDA graph launch (captured,
    /// the executable graph updated in place; docs/gpu.md). Same results; off by default until
    /// a GPU run measures it. Eager on the CPU.
    #[arg(long)]
    cuda_graph: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DeviceChoice {
    Auto,
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ReductionChoice {
    Mean,
    Sum,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PoolingChoice {
    Sum,
    Mean,
}

const SMALL_SYNTHETIC_USERS: usize = 400;

fn parse_kind(s: &str) -> Result<ModelKind, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn parse_fusion(s: &str) -> Result<Fusion, String> {
    s.parse().map_err(|e: Error| e.to_string())
}

fn configs(args: &Args) -> (ModelConfig, TrainConfig) {
    let (mut model, mut train) = if args.paper {
        (ModelConfig::default(), TrainConfig::default())
    } else {
        (
            ModelConfig {
                hidden_size: 32,
                heads: 2,
                layers: 2,
                max_len: 20,
                inner_size: 32,
                ..ModelConfig::default()
            },
            TrainConfig {
                learning_rate: 1e-3,
                batch_size: 128,
                epochs: 4,
                ..TrainConfig::default()
            },
        )
    };
    model.kind = args.model;
    model.fusion = args.fusion;
    model.seed = args.seed;
    train.seed = args.seed;
    macro_rules! set {
        ($target:expr, $value:expr) => {
            if let Some(v) = $value {
                $target = v;
            }
        };
    }
    set!(model.hidden_size, args.hidden_size);
    set!(model.heads, args.heads);
    set!(model.layers, args.layers);
    set!(model.max_len, args.max_len);
    set!(model.inner_size, args.inner_size);
    set!(model.hidden_dropout, args.hidden_dropout);
    set!(model.attention_dropout, args.attention_dropout);
    set!(model.rsa_lambda, args.rsa_lambda);
    set!(model.hie_rank, args.hie_rank);
    set!(model.attribute_width, args.attribute_width);
    set!(model.attribute_hidden_size, args.attribute_hidden_size);
    set!(model.attribute_prediction_lambda, args.aap_lambda);
    set!(
        model.rsa_reduction,
        args.rsa_reduction.map(|r| match r {
            ReductionChoice::Mean => RsaReduction::Mean,
            ReductionChoice::Sum => RsaReduction::Sum,
        })
    );
    set!(
        model.pooling,
        args.pooling.map(|p| match p {
            PoolingChoice::Sum => PoolingMode::Sum,
            PoolingChoice::Mean => PoolingMode::Mean,
        })
    );
    if args.hie_full_qr {
        model.hie_gradient = HieGradient::FullQr;
    }
    model.hie_keep_padding = args.hie_keep_padding;
    model.rsa_dedup = args.rsa_dedup;
    set!(train.learning_rate, args.lr);
    set!(train.batch_size, args.batch_size);
    set!(train.epochs, args.epochs);
    set!(train.patience, args.patience);
    (model, train)
}

fn run(args: &Args) -> Result<(), Error> {
    if let Some(threads) = args.threads {
        asif_kernels::parallel::set_threads(threads)?;
    }
    let (model_config, train_config) = configs(args);
    let dataset = match &args.data_dir {
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Config(format!(
                    "--data-dir {}: no such folder (it should hold {}.inter and {}.item in \
                     RecBole's atomic format, see docs/data.md)",
                    dir.display(),
                    args.dataset,
                    args.dataset
                )));
            }
            let mut cfg = LoadConfig::default().with_attributes(&args.attributes);
            if args.kcore > 0 {
                cfg = cfg.with_kcore(args.kcore);
            }
            Dataset::load_recbole(dir, &args.dataset, &cfg)?
        }
        None => {
            let users = args.synthetic_users.unwrap_or(if args.paper {
                1000
            } else {
                SMALL_SYNTHETIC_USERS
            });
            let synthetic = SyntheticConfig {
                n_users: users,
                ..SyntheticConfig::default()
            };
            let dir = std::env::temp_dir().join(format!("asif-kernels-synthetic-{users}"));
            Dataset::synthetic(&synthetic, &dir)?
        }
    };
    let device = match args.device {
        DeviceChoice::Auto => Device::best_available(),
        DeviceChoice::Cpu => Device::cpu(),
        DeviceChoice::Cuda => Device::cuda(0)?,
    };
    let results_path = args.results.clone().unwrap_or_else(|| {
        PathBuf::from("target/asif-results").join(format!(
            "{}-{}.json",
            model_config.kind,
            dataset.name()
        ))
    });
    if !args.quiet {
        eprintln!("{}", dataset.summary());
        eprintln!(
            "training {} on {} ({} threads; d {}, L {}, h {}, n {}, lr {}, batch {}, up to {} \
             epochs)",
            model_config.kind,
            device.name(),
            asif_kernels::parallel::threads(),
            model_config.hidden_size,
            model_config.layers,
            model_config.heads,
            model_config.max_len,
            train_config.learning_rate,
            train_config.batch_size,
            train_config.epochs
        );
    }
    let options = RunOptions {
        checkpoint_dir: args.checkpoint_dir.clone(),
        resume: args.resume,
        progress: !args.quiet,
        stop_after_epochs: None,
        results_path: Some(results_path.clone()),
        max_batches_per_epoch: args.max_batches,
        cuda_graph: args.cuda_graph,
    };
    match train(&dataset, &model_config, &train_config, &device, &options)? {
        Outcome::Finished(results) => {
            println!("{}", results_table(&results));
            println!("results written to {}", results_path.display());
        }
        Outcome::Interrupted { epochs_done } => {
            println!("stopped after epoch {epochs_done}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // Keep freed host buffers for reuse (glibc): the CPU path frees and reallocates megabytes per
    // op, and returning them to the kernel cost page faults on every step (docs/results.md).
    asif_kernels::parallel::keep_freed_host_memory();
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
