//! `hm` — the HyperMesh command-line client (see the `hm_cli` crate).

use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match hm_cli::run(std::env::args_os(), &mut stdout) {
        Ok(()) => ExitCode::SUCCESS,
        Err(hm_cli::CliError::Usage(error)) => error.exit(),
        Err(error) => {
            eprintln!("hm: {error}");
            ExitCode::from(1)
        }
    }
}
