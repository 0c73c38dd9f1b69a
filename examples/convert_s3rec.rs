//! Converts an S³-Rec data set (`<NAME>.txt` + `<NAME>_item2attributes.json`) to RecBole atomic
//! files (`<NAME>.inter`, `<NAME>.item` with a `categories:token_seq` column) and prints its
//! counts; see `docs/data.md`.
//!
//! ```sh
//! cargo run --release --example convert_s3rec -- ../shared/data/s3rec Beauty data/Beauty
//! cargo run --release --example train -- --data-dir data/Beauty --dataset Beauty --attributes categories
//! ```
use std::process::ExitCode;

use asif_kernels::data::{Dataset, S3Rec, S3RecFiles};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, name, output] = args.as_slice() else {
        eprintln!(
            "usage: convert_s3rec IN_DIR NAME OUT_DIR\n\
             reads IN_DIR/NAME.txt and IN_DIR/NAME_item2attributes.json (the S³-Rec format) and\n\
             writes OUT_DIR/NAME.inter and OUT_DIR/NAME.item (RecBole atomic files)"
        );
        return ExitCode::from(2);
    };
    let run = || -> Result<(), asif_kernels::data::DataError> {
        let data = S3Rec::read(&S3RecFiles::new(input, name))?;
        let files = data.write_recbole(output)?;
        println!(
            "{name}: {} users, {} items, {} interactions, {} attribute tokens",
            data.n_users(),
            data.n_items(),
            data.n_interactions(),
            data.n_attributes()
        );
        println!("wrote {} and", files.inter.display());
        if let Some(item) = &files.item {
            println!("      {}", item.display());
        }
        // Read them back through the RecBole reader, as training will.
        let ds = asif_kernels::data::load(&files, &S3Rec::load_config())?;
        println!("read back: {}", Dataset::summary(&ds));
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
