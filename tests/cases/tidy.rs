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

/// Names of every dependency `krate` declares, in any table (normal, dev, build, target
/// specific, `[dependencies.x]` or inline), as `cargo metadata` reports them: the package names,
/// so a renamed dependency is still caught.
fn dependency_names(krate: &str) -> Vec<String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .output()
        .expect("run cargo metadata");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let package = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .find(|p| p["name"] == krate)
        .unwrap_or_else(|| panic!("{krate} is not a workspace member"));
    let names: Vec<String> = package["dependencies"]
        .as_array()
        .expect("dependencies")
        .iter()
        .filter_map(|d| d["name"].as_str().map(str::to_owned))
        .collect();
    assert!(!names.is_empty(), "{krate} declares no dependencies?");
    names
}

#[test]
fn dependency_names_come_from_every_table() {
    // `tokio` is a normal dependency of the supervisor, `tempfile` a dev-dependency.
    let deps = dependency_names("supervisor");
    for name in ["tokio", "ipc-proto", "tempfile"] {
        assert!(deps.iter().any(|d| d == name), "{name} missing from {deps:?}");
    }
}
