//! `cargo xtask <task>`: project chores that are neither a service nor a benchmark.
//!
//!   check-manifests   every YAML/JSON under deploy/compose and deploy/k8s parses and names only
//!                     images, binaries, environment variables, ports and metrics the project has
//!                     (`deploy/check-manifests` runs it).

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask check-manifests";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["check-manifests"] => check_manifests(),
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check_manifests() -> ExitCode {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = xtask::manifests::check(&root);
    if problems.is_empty() {
        println!("deploy manifests: ok");
        return ExitCode::SUCCESS;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("deploy manifests: {} problem(s)", problems.len());
    ExitCode::FAILURE
}
