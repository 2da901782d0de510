//! Repository rules that must hold for the architecture to stay what ARCHITECTURE.md says.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') && name != "node_modules" {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    rust_files(&repo_root(), &mut files);
    assert!(files.len() > 10);
    let missing: Vec<_> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).unwrap_or_default().starts_with("//!"))
        .collect();
    assert!(missing.is_empty(), "files without a leading //! doc: {missing:?}");
}

#[test]
fn gateway_and_supervisor_never_depend_on_the_worker() {
    for krate in ["gateway", "supervisor", "ipc-proto"] {
        let manifest = std::fs::read_to_string(repo_root().join(krate).join("Cargo.toml")).expect("manifest");
        assert!(!manifest.contains("usage-worker"), "{krate} must reach the worker only through ipc-proto");
    }
    let proto = std::fs::read_to_string(repo_root().join("ipc-proto/Cargo.toml")).expect("manifest");
    for local in ["supervisor", "gateway", "demo-store", "axum"] {
        assert!(!proto.contains(local), "ipc-proto must not depend on {local}");
    }
}
