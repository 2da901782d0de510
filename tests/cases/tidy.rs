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
    let missing: Vec<_> =
        files.iter().filter(|f| !std::fs::read_to_string(f).unwrap_or_default().starts_with("//!")).collect();
    assert!(missing.is_empty(), "files without a leading //! doc: {missing:?}");
}

#[test]
fn gateway_and_supervisor_never_depend_on_the_worker() {
    for krate in ["gateway", "supervisor", "ipc-proto"] {
        let deps = dependency_names(krate);
        assert!(
            !deps.iter().any(|d| d == "usage-worker"),
            "{krate} must reach the worker only through ipc-proto"
        );
    }
    let proto = dependency_names("ipc-proto");
    for local in ["supervisor", "gateway", "demo-store", "axum", "usage-worker"] {
        assert!(!proto.iter().any(|d| d == local), "ipc-proto must not depend on {local}");
    }
}

/// Names of every dependency (all dependency tables) in `<krate>/Cargo.toml`.
fn dependency_names(krate: &str) -> Vec<String> {
    let manifest = std::fs::read_to_string(repo_root().join(krate).join("Cargo.toml")).expect("manifest");
    let mut in_deps = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_deps = line.contains("dependencies");
        } else if in_deps {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().split('.').next().unwrap_or("").to_owned());
            }
        }
    }
    names
}
