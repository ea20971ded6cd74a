//! `deploy/check-manifests`: every YAML/JSON under deploy/compose and deploy/k8s parses and names
//! only images, binaries, environment variables, ports and metrics the project has.

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let problems = bench::manifests::check(&root);
    if problems.is_empty() {
        println!("deploy manifests: ok");
        return;
    }
    for p in &problems {
        eprintln!("{p}");
    }
    eprintln!("deploy manifests: {} problem(s)", problems.len());
    std::process::exit(1);
}
