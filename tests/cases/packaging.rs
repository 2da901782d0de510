//! Packaging: the systemd unit pairs (system and user) checked by systemd's own tools, their
//! hardening scores held under recorded thresholds, `packaging/install.sh` run into temporary
//! prefixes (stripping, debug files, dry runs), the gateway's sd_notify protocol, the external-mode
//! pair run the way systemd runs it (worker standalone with `--listen`, killed and started again)
//! without systemd itself, and the Prometheus rules (promtool) and Grafana dashboard checked
//! against a real gateway's `/metrics`.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use e2e::{Gateway, exclusive, http_agent, run_clawgate, wait_until};
use serde_json::{Value, json};

const GATEWAY: &str = "clawgate.service";
const WORKER: &str = "clawgate-usage-worker.service";

/// Highest `systemd-analyze security --offline=true` exposure accepted per (kind, unit); lower is
/// better, 10 is an unconfined root service. Measured with systemd 252 (Debian 12): system
/// gateway 1.3, system worker 0.3, user gateway 2.0, user worker 1.2 (user units score higher
/// because the analyzer counts them as root and the user manager cannot apply ProtectProc=,
/// ProtectControlGroups=, IPAddressDeny= and the like). The margin is 0.2, so dropping any of the
/// weighty settings (PrivateNetwork=, a syscall filter, ProtectSystem=, ...) fails this test.
const EXPOSURE_THRESHOLDS: [(Kind, &str, f64); 4] = [
    (Kind::System, GATEWAY, 1.5),
    (Kind::System, WORKER, 0.5),
    (Kind::User, GATEWAY, 2.2),
    (Kind::User, WORKER, 1.4),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    System,
    User,
}

impl Kind {
    fn unit_dir(self) -> PathBuf {
        match self {
            Kind::System => repo_root().join("packaging/systemd"),
            Kind::User => repo_root().join("packaging/systemd/user"),
        }
    }

    /// Where the shipped units expect the binaries; tests and install.sh rewrite it.
    fn shipped_bin_prefix(self) -> &'static str {
        match self {
            Kind::System => "/usr/local/bin/",
            Kind::User => "%h/.local/bin/",
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The directory holding the built binaries.
fn bin_dir() -> PathBuf {
    e2e::bin("clawgate").parent().expect("bin dir").to_path_buf()
}

/// `systemd-analyze` with a private HOME and runtime dir, so `--user` works without a user
/// manager and nothing reads the real user's configuration.
fn analyze(kind: Kind, sandbox: &Path, cwd: &Path) -> Command {
    let home = sandbox.join("home");
    let runtime = sandbox.join("xdg-runtime");
    for dir in [&home, &runtime] {
        fs::create_dir_all(dir).expect("sandbox dir");
    }
    fs::set_permissions(&runtime, fs::Permissions::from_mode(0o700)).expect("chmod runtime");
    let mut command = Command::new("systemd-analyze");
    if kind == Kind::User {
        command.arg("--user");
    }
    command
        .current_dir(cwd)
        .env("HOME", &home)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("XDG_CONFIG_HOME")
        .env("SYSTEMD_COLORS", "0")
        .env("SYSTEMD_PAGER", "")
        .stdin(Stdio::null());
    command
}

fn output(command: &mut Command) -> Output {
    command.output().unwrap_or_else(|e| {
        panic!("cannot run {command:?}: {e} (systemd-analyze comes with Debian's systemd package)")
    })
}

/// Copies a kind's units into `dir` with ExecStart pointing at the built binaries.
fn units_with_built_binaries(kind: Kind, dir: &Path) -> Vec<String> {
    fs::create_dir_all(dir).expect("unit dir");
    let bins = format!("{}/", bin_dir().display());
    let mut names = Vec::new();
    for name in [GATEWAY, WORKER] {
        let text = fs::read_to_string(kind.unit_dir().join(name)).expect("unit file");
        let rewritten = text.replace(kind.shipped_bin_prefix(), &bins);
        let exec = rewritten.lines().find(|l| l.starts_with("ExecStart=")).expect("ExecStart");
        assert!(exec.starts_with(&format!("ExecStart={bins}")), "{kind:?} {name}: {exec}");
        fs::write(dir.join(name), rewritten).expect("write unit");
        names.push(format!("./{name}"));
    }
    names
}

/// Runs `systemd-analyze verify` over `names` in `dir`; returns its combined, trimmed output.
fn verify(kind: Kind, sandbox: &Path, dir: &Path, names: &[String]) -> (bool, String) {
    let out = output(analyze(kind, sandbox, dir).args(["verify", "--man=no"]).args(names));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_owned())
}

#[test]
fn systemd_units_pass_analyze_verify_without_any_warning() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    for kind in [Kind::System, Kind::User] {
        let dir = tmp.path().join(format!("{kind:?}"));
        let names = units_with_built_binaries(kind, &dir);
        let (ok, text) = verify(kind, tmp.path(), &dir, &names);
        // verify exits 0 on "Unknown key" and most other warnings: any output at all fails.
        assert!(ok && text.is_empty(), "systemd-analyze verify of the {kind:?} units:\n{text}");
    }

    // The check itself must see warnings: a misspelt key has to show up.
    let dir = tmp.path().join("broken");
    let names = units_with_built_binaries(Kind::System, &dir);
    let worker = dir.join(WORKER);
    let text = fs::read_to_string(&worker).expect("unit") + "MemoryMaximum=1G\n";
    fs::write(&worker, text).expect("write");
    let (_, text) = verify(Kind::System, tmp.path(), &dir, &names);
    assert!(text.contains("Unknown key"), "verify did not flag an unknown key: {text:?}");
}

/// Shield mode's drop-in (`packaging/systemd/clawgate-shield.conf`), installed beside each kind's
/// units as `clawgate.service.d/shield.conf`, verifies clean; the check reads it (a misspelt key
/// in it is reported), and it sets what shield mode needs.
#[test]
fn the_shield_mode_drop_in_passes_analyze_verify() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let drop_in = repo_root().join("packaging/systemd/clawgate-shield.conf");
    let text = fs::read_to_string(&drop_in).expect("drop-in");
    for line in
        ["Environment=CLAWGATE_LISTEN=127.0.0.1:18789", "Environment=CLAWGATE_UPSTREAM=ws://127.0.0.1:18788"]
    {
        assert!(text.lines().any(|l| l == line), "{} lacks {line}", drop_in.display());
    }
    for kind in [Kind::System, Kind::User] {
        let dir = tmp.path().join(format!("{kind:?}"));
        let names = units_with_built_binaries(kind, &dir);
        fs::create_dir_all(dir.join("clawgate.service.d")).expect("drop-in dir");
        fs::write(dir.join("clawgate.service.d/shield.conf"), &text).expect("drop-in");
        let (ok, out) = verify(kind, tmp.path(), &dir, &names);
        assert!(
            ok && out.is_empty(),
            "systemd-analyze verify of the {kind:?} units with the shield drop-in:\n{out}"
        );
        fs::write(dir.join("clawgate.service.d/shield.conf"), format!("{text}ListenAddres=x\n"))
            .expect("drop-in");
        let (_, out) = verify(kind, tmp.path(), &dir, &names);
        assert!(
            out.contains("shield.conf") && out.contains("Unknown key"),
            "the drop-in was not read: {out:?}"
        );
    }
}

#[test]
fn systemd_security_exposure_is_within_the_recorded_thresholds() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut report = Vec::new();
    for (kind, unit, threshold) in EXPOSURE_THRESHOLDS {
        let dir = tmp.path().join(format!("{kind:?}"));
        if !dir.exists() {
            units_with_built_binaries(kind, &dir);
        }
        let out = output(analyze(kind, tmp.path(), &dir).args([
            "security",
            "--offline=true",
            "--no-pager",
            &format!("./{unit}"),
        ]));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let needle = format!("Overall exposure level for {unit}: ");
        let score: f64 = stdout
            .lines()
            .find_map(|l| l.split_once(&needle).map(|(_, rest)| rest.to_owned()))
            .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure score for {kind:?} {unit}:\n{stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        eprintln!("systemd-analyze security: {kind:?} {unit}: {score} (threshold {threshold})");
        report.push((kind, unit, score, threshold));
    }
    let over: Vec<_> = report.iter().filter(|(_, _, score, threshold)| score > threshold).collect();
    assert!(over.is_empty(), "exposure above threshold: {over:?}");
}

/// `[section] key=value` entries of a unit file, in order (comments and blanks skipped).
fn parse_unit(path: &Path) -> Vec<(String, String, String)> {
    let text = fs::read_to_string(path).expect("unit file");
    assert!(text.starts_with("# "), "{} must start with a comment saying what it is", path.display());
    let mut section = String::new();
    let mut entries = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("bad line {line:?}"));
            entries.push((section.clone(), key.to_owned(), value.to_owned()));
        }
    }
    entries
}

/// All values of `key` in `section`, split at whitespace (list settings may repeat).
fn values(unit: &[(String, String, String)], section: &str, key: &str) -> Vec<String> {
    unit.iter()
        .filter(|(s, k, _)| s == section && k == key)
        .flat_map(|(_, _, v)| v.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect()
}

fn one(unit: &[(String, String, String)], section: &str, key: &str) -> String {
    let found: Vec<_> = unit.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v).collect();
    assert_eq!(found.len(), 1, "[{section}] {key}= must be set exactly once, found {found:?}");
    found[0].clone()
}

fn bytes(size: &str) -> u64 {
    let (num, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit()).unwrap_or(size.len()));
    let mult = match unit {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("unexpected size unit {other:?} in {size}"),
    };
    num.parse::<u64>().expect("size") * mult
}

/// The value following `flag` in an ExecStart line.
fn flag_value(exec: &str, flag: &str) -> String {
    let words: Vec<_> = exec.split_whitespace().collect();
    let at = words.iter().position(|w| *w == flag).unwrap_or_else(|| panic!("{flag} missing from {exec}"));
    words.get(at + 1).expect("flag value").to_string()
}

#[test]
fn systemd_units_have_the_pair_shape_the_issue_requires() {
    for kind in [Kind::System, Kind::User] {
        let gateway = parse_unit(&kind.unit_dir().join(GATEWAY));
        let worker = parse_unit(&kind.unit_dir().join(WORKER));
        let ctx = format!("{kind:?} units");

        // The gateway: notify + watchdog, restarted on failure, never bound to the worker.
        assert_eq!(one(&gateway, "Service", "Type"), "notify", "{ctx}");
        let watchdog = one(&gateway, "Service", "WatchdogSec");
        assert!(watchdog.trim_end_matches('s').parse::<u64>().is_ok_and(|s| s > 0), "{ctx}: {watchdog}");
        assert_eq!(one(&gateway, "Service", "Restart"), "on-failure", "{ctx}");
        assert!(values(&gateway, "Unit", "Wants").contains(&WORKER.to_owned()), "{ctx}");
        assert!(values(&gateway, "Unit", "After").contains(&WORKER.to_owned()), "{ctx}");
        for key in ["Requires", "BindsTo", "Requisite"] {
            assert!(values(&gateway, "Unit", key).is_empty(), "{ctx}: the gateway must not use {key}=");
        }
        let gateway_exec = one(&gateway, "Service", "ExecStart");
        assert_eq!(flag_value(&gateway_exec, "--worker-mode"), "external", "{ctx}");

        // The worker: always restarted but not for config errors, capped, no network, part of the gateway.
        assert_eq!(one(&worker, "Service", "Restart"), "always", "{ctx}");
        assert!(values(&worker, "Service", "RestartPreventExitStatus").contains(&"78".to_owned()), "{ctx}");
        assert_eq!(values(&worker, "Unit", "PartOf"), [GATEWAY], "{ctx}");
        let high = bytes(&one(&worker, "Service", "MemoryHigh"));
        let max = bytes(&one(&worker, "Service", "MemoryMax"));
        assert!(high < max, "{ctx}: MemoryHigh must throttle before MemoryMax kills");
        // The worker refuses an over-budget job itself before the kernel steps in.
        let budget: u64 = values(&worker, "Service", "Environment")
            .iter()
            .find_map(|v| v.strip_prefix("CLAWGATE_WORKER_MEMORY_BUDGET=")?.parse().ok())
            .unwrap_or_else(|| {
                panic!("{ctx}: no CLAWGATE_WORKER_MEMORY_BUDGET= in the worker's Environment=")
            });
        assert!(budget < high && budget * 10 >= max * 7, "{ctx}: budget {budget} vs MemoryHigh {high}");
        assert!(
            one(&worker, "Service", "ExecStart").contains("--memory-budget ${CLAWGATE_WORKER_MEMORY_BUDGET}")
        );
        assert_eq!(one(&worker, "Service", "MemorySwapMax"), "0", "{ctx}");
        assert_eq!(one(&worker, "Service", "OOMPolicy"), "kill", "{ctx}");
        assert_eq!(one(&worker, "Service", "PrivateNetwork"), "yes", "{ctx}");
        assert_eq!(values(&worker, "Service", "RestrictAddressFamilies"), ["AF_UNIX"], "{ctx}");
        // An overrun every 10 s forever must never park the worker; a crash loop eventually does.
        let interval: u64 = one(&worker, "Unit", "StartLimitIntervalSec").parse().expect("interval");
        let burst: u64 = one(&worker, "Unit", "StartLimitBurst").parse().expect("burst");
        assert!(
            interval > 0 && interval <= burst * 10,
            "{ctx}: start limit {burst} in {interval}s parks an occasional overrun"
        );

        // Both talk over one socket in the worker's private runtime directory.
        let socket = flag_value(&gateway_exec, "--worker-socket");
        assert_eq!(flag_value(&one(&worker, "Service", "ExecStart"), "--listen"), socket, "{ctx}");
        let runtime_dir = one(&worker, "Service", "RuntimeDirectory");
        assert_eq!(socket, format!("%t/{runtime_dir}/worker.sock"), "{ctx}");
        assert_eq!(one(&worker, "Service", "RuntimeDirectoryMode"), "0700", "{ctx}");

        for (name, unit) in [(GATEWAY, &gateway), (WORKER, &worker)] {
            for (key, value) in [("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("UMask", "0077")] {
                assert_eq!(one(unit, "Service", key), value, "{ctx}: {name}");
            }
            assert_eq!(one(unit, "Service", "EnvironmentFile"), "-%E/clawgate/clawgate.env", "{ctx}: {name}");
            if kind == Kind::User {
                // Settings a user manager refuses or ignores; verify does not say so.
                for key in [
                    "User",
                    "Group",
                    "ProtectProc",
                    "ProcSubset",
                    "ProtectControlGroups",
                    "RemoveIPC",
                    "DevicePolicy",
                    "IPAddressDeny",
                ] {
                    assert!(
                        values(unit, "Service", key).is_empty(),
                        "{ctx}: {name} sets {key}=, a system-only setting"
                    );
                }
            }
        }
    }
}

/// Every file and directory under `root`, relative, with its mode and (for files) its bytes.
fn tree(root: &Path) -> BTreeMap<PathBuf, (u32, Option<Vec<u8>>)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>) {
        for entry in fs::read_dir(dir).expect("read dir").flatten() {
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).expect("metadata");
            let rel = path.strip_prefix(root).expect("relative").to_path_buf();
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                out.insert(rel, (mode, None));
                walk(root, &path, out);
            } else {
                out.insert(rel, (mode, Some(fs::read(&path).expect("read"))));
            }
        }
    }
    let mut out = BTreeMap::new();
    if root.exists() {
        walk(root, root, &mut out);
    }
    out
}

/// Two tiny executables standing in for the binaries, so repeated installs copy bytes, not the
/// 100+ MB debug builds (the real ones are installed once, in the system-mode test).
fn fake_bins(dir: &Path) -> PathBuf {
    let bins = dir.join("fake-bin");
    fs::create_dir_all(&bins).expect("fake bin dir");
    for bin in ["clawgate", "clawgate-usage-worker"] {
        let path = bins.join(bin);
        fs::write(&path, format!("#!/bin/sh\necho {bin} stand-in\n")).expect("fake bin");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    bins
}

/// Runs install.sh with `HOME` = `home`, binaries from `from`; panics on failure, and when it
/// leaves anything in its `TMPDIR` (a private one beside `home`). No user manager is reachable
/// (`XDG_RUNTIME_DIR` points nowhere), so `systemctl --user` can never touch the real user's.
fn install_sh(home: &Path, from: &Path, args: &[&str]) -> String {
    let tmpdir = home.with_file_name("install-sh-tmp");
    fs::create_dir_all(&tmpdir).expect("TMPDIR");
    let out = Command::new("bash")
        .arg(repo_root().join("packaging/install.sh"))
        .args(args)
        .arg("--from")
        .arg(from)
        .env("HOME", home)
        .env("TMPDIR", &tmpdir)
        .env("XDG_RUNTIME_DIR", home.with_file_name("no-runtime-dir"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run install.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    assert!(tree(&tmpdir).is_empty(), "install.sh {args:?} left temp files: {:?}", tree(&tmpdir).keys());
    text
}

/// Names of the ELF sections of `path` (binutils' readelf).
fn elf_sections(path: &Path) -> Vec<String> {
    let out = Command::new("readelf").arg("-S").arg("-W").arg(path).output().expect("readelf (binutils)");
    assert!(out.status.success(), "readelf -S {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once("] ").map(|(_, rest)| rest.split_whitespace().next().unwrap_or("").to_owned())
        })
        .collect()
}

/// Whether `path` carries DWARF line tables or debug info (`.debug_gdb_scripts`, which Rust adds
/// and stripping keeps, is neither).
fn has_debug_info(path: &Path) -> bool {
    elf_sections(path)
        .iter()
        .any(|s| [".debug_info", ".debug_line", ".zdebug_info", ".zdebug_line"].contains(&s.as_str()))
}

/// `addr2line` for the gateway's `cli_status::read_env_file` in `binary`: file:line when its debug info is
/// found (in the binary or through its debuglink), `??` when not. The function is found in the
/// symbol table, which stripping debug info keeps.
fn addr2line_of_a_gateway_function(binary: &Path) -> String {
    let out = Command::new("nm").arg(binary).output().expect("nm (binutils)");
    let symbols = String::from_utf8_lossy(&out.stdout);
    let address = symbols
        .lines()
        .find(|l| l.contains("cli_status") && l.contains("read_env_file"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no gateway::cli_status::read_env_file symbol in {}", binary.display()))
        .to_owned();
    let out = Command::new("addr2line")
        .arg("-e")
        .arg(binary)
        .arg(format!("0x{address}"))
        .output()
        .expect("addr2line");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn mode_of(tree: &BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>, path: &str) -> u32 {
    tree.get(Path::new(path)).unwrap_or_else(|| panic!("{path} not installed; have {:?}", tree.keys())).0
}

fn text_of(tree: &BTreeMap<PathBuf, (u32, Option<Vec<u8>>)>, path: &str) -> String {
    let bytes = tree.get(Path::new(path)).and_then(|(_, b)| b.clone()).expect(path);
    String::from_utf8(bytes).expect("utf-8")
}

/// Install twice (same tree), keep an edited environment file across a reinstall and an
/// uninstall, then `--uninstall --purge` leaves `root` exactly as it was before.
fn install_round_trip(root: &Path, home: &Path, from: &Path, args: &[&str], env_file: &str) {
    let before = tree(root);
    let first = install_sh(home, from, args);
    assert!(first.contains("Next steps"), "{first}");
    let installed = tree(root);
    install_sh(home, from, args);
    assert_eq!(tree(root), installed, "a second install must change nothing");

    let env_path = root.join(env_file);
    let edited = fs::read_to_string(&env_path).expect("env file") + "CLAWGATE_TOKEN=edited\n";
    fs::write(&env_path, &edited).expect("edit env");
    let again = install_sh(home, from, args);
    assert!(again.contains("kept"), "{again}");
    assert_eq!(
        fs::read_to_string(&env_path).expect("env"),
        edited,
        "reinstall must keep the operator's env file"
    );

    let mut uninstall: Vec<&str> = args.to_vec();
    uninstall.push("--uninstall");
    install_sh(home, from, &uninstall);
    assert_eq!(
        fs::read_to_string(&env_path).expect("env kept"),
        edited,
        "a changed env file survives --uninstall"
    );
    uninstall.push("--purge");
    install_sh(home, from, &uninstall);
    assert_eq!(tree(root), before, "--uninstall --purge must leave nothing behind");
    // Uninstalling again is a no-op.
    install_sh(home, from, &uninstall);
}

#[test]
fn install_sh_system_mode_into_a_destdir_installs_reinstalls_and_uninstalls_cleanly() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let root = tmp.path().join("root");
    fs::create_dir_all(&home).expect("home");
    fs::create_dir_all(&root).expect("root");
    let root_arg = root.to_str().expect("utf-8");
    let fake = fake_bins(tmp.path());
    let args = [
        "--system",
        "--destdir",
        root_arg,
        "--service-user",
        "clawgate-test",
        "--openclaw-state-dir",
        "/srv/openclaw",
    ];

    // The real (debug) binaries, installed stripped with their debug info kept beside them.
    let mut with_symbols = args.to_vec();
    with_symbols.push("--debug-symbols");
    let output = install_sh(&home, &bin_dir(), &with_symbols);
    let bins = root.join("usr/local/bin");
    for bin in ["clawgate", "clawgate-usage-worker"] {
        let (built, installed) = (bin_dir().join(bin), bins.join(bin));
        assert!(has_debug_info(&built), "{bin}: the test needs a build with debug info");
        assert!(!has_debug_info(&installed), "{bin} was installed with its debug info");
        assert!(elf_sections(&installed).contains(&".gnu_debuglink".to_owned()), "{bin}: no debuglink");
        let debug_file = bins.join(format!(".debug/{bin}.debug"));
        assert!(has_debug_info(&debug_file), "{}", debug_file.display());
        assert_eq!(fs::metadata(&debug_file).expect("debug file").permissions().mode() & 0o777, 0o644);
        let (built_size, installed_size) =
            (fs::metadata(&built).expect("built").len(), fs::metadata(&installed).expect("installed").len());
        assert!(installed_size * 2 < built_size, "{bin}: {installed_size} bytes installed of {built_size}");
        // The messages name the staged path and both sizes.
        let line = output
            .lines()
            .find(|l| l.starts_with(&format!("installed {root_arg}/usr/local/bin/{bin} (")))
            .unwrap_or_else(|| panic!("no line for {bin}:\n{output}"));
        assert!(line.contains("MiB → ") && line.contains(".debug"), "{line}");
        let out = Command::new(&installed).arg("--help").output().expect("run the installed binary");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && help.contains("Usage"), "{bin} --help after stripping: {help}");
    }
    // The separate file is found through the link: line tables, not just names.
    let clawgate = bins.join("clawgate");
    let located = addr2line_of_a_gateway_function(&clawgate);
    assert!(located.contains("gateway/src/cli_status.rs:"), "addr2line with the debug file: {located}");
    fs::rename(bins.join(".debug"), root.join("debug-aside")).expect("move the debug files aside");
    let located = addr2line_of_a_gateway_function(&clawgate);
    assert!(located.starts_with("??"), "addr2line without the debug file: {located}");
    fs::rename(root.join("debug-aside"), bins.join(".debug")).expect("move back");
    install_sh(&home, &fake, &["--system", "--destdir", root_arg, "--uninstall", "--purge"]);
    assert!(tree(&root).is_empty(), "left behind: {:?}", tree(&root).keys());

    // Without --debug-symbols the debug info is dropped.
    install_sh(&home, &bin_dir(), &args);
    let t = tree(&root);
    for bin in ["clawgate", "clawgate-usage-worker"] {
        let path = format!("usr/local/bin/{bin}");
        assert_eq!(mode_of(&t, &path), 0o755, "{path}");
        assert!(!has_debug_info(&root.join(&path)), "{path} has debug info");
    }
    assert!(!bins.join(".debug").exists(), "debug files without --debug-symbols");
    for shipped in ["prometheus/clawgate.rules.yml", "grafana/clawgate.json"] {
        let path = format!("usr/local/share/clawgate/{shipped}");
        assert_eq!(mode_of(&t, &path), 0o644, "{path}");
        assert_eq!(
            text_of(&t, &path),
            fs::read_to_string(repo_root().join("packaging").join(shipped)).expect("src")
        );
    }
    for unit in [GATEWAY, WORKER] {
        let path = format!("etc/systemd/system/{unit}");
        assert_eq!(mode_of(&t, &path), 0o644, "{path}");
        let text = text_of(&t, &path);
        assert!(text.contains("ExecStart=/usr/local/bin/clawgate"), "{text}");
        assert!(text.contains("\nUser=clawgate-test\n"), "{text}");
        assert!(!text.contains(root_arg), "the destdir must not leak into {path}");
    }
    assert_eq!(mode_of(&t, "etc/clawgate"), 0o700);
    assert_eq!(mode_of(&t, "etc/clawgate/clawgate.env"), 0o600);
    assert!(text_of(&t, "etc/clawgate/clawgate.env").contains("\nOPENCLAW_STATE_DIR=/srv/openclaw\n"));
    assert_eq!(mode_of(&t, "usr/local/share/doc/clawgate/ops/README.md"), 0o644);
    let docs = fs::read_dir(repo_root().join("docs/ops")).expect("docs/ops").count();
    let installed_docs = t.keys().filter(|p| p.starts_with("usr/local/share/doc/clawgate/ops")).count() - 1;
    assert_eq!(installed_docs, docs, "every docs/ops page is installed");
    install_sh(&home, &fake, &["--system", "--destdir", root_arg, "--uninstall", "--purge"]);
    assert!(tree(&root).is_empty(), "left behind: {:?}", tree(&root).keys());

    // A custom prefix moves the binaries and the units' ExecStart with them.
    install_sh(&home, &fake, &["--system", "--destdir", root_arg, "--prefix", "/opt/clawgate"]);
    let unit = fs::read_to_string(root.join("etc/systemd/system").join(GATEWAY)).expect("unit");
    assert!(unit.contains("ExecStart=/opt/clawgate/bin/clawgate serve"), "{unit}");
    assert!(unit.contains("Documentation=file:///opt/clawgate/share/doc/clawgate/ops/README.md"), "{unit}");
    assert!(root.join("opt/clawgate/bin/clawgate-usage-worker").exists());
    install_sh(
        &home,
        &fake,
        &["--system", "--destdir", root_arg, "--prefix", "/opt/clawgate", "--uninstall"],
    );
    assert!(tree(&root).is_empty(), "left behind: {:?}", tree(&root).keys());

    install_round_trip(
        &root,
        &home,
        &fake,
        &["--system", "--destdir", root_arg],
        "etc/clawgate/clawgate.env",
    );
    assert!(tree(&home).is_empty(), "system mode must not touch HOME: {:?}", tree(&home).keys());
}

#[test]
fn install_sh_user_mode_into_a_fake_home_installs_verifies_and_uninstalls_cleanly() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    fs::create_dir_all(&home).expect("home");
    let args = ["--user", "--no-systemctl"];
    let fake = fake_bins(tmp.path());

    install_sh(&home, &fake, &args);
    let t = tree(&home);
    for bin in ["clawgate", "clawgate-usage-worker"] {
        assert_eq!(mode_of(&t, &format!(".local/bin/{bin}")), 0o755);
    }
    for unit in [GATEWAY, WORKER] {
        let path = format!(".config/systemd/user/{unit}");
        assert_eq!(mode_of(&t, &path), 0o644);
        assert!(text_of(&t, &path).contains("ExecStart=%h/.local/bin/clawgate"), "{path}");
    }
    assert_eq!(mode_of(&t, ".config/clawgate"), 0o700);
    assert_eq!(mode_of(&t, ".config/clawgate/clawgate.env"), 0o600);
    assert_eq!(mode_of(&t, ".local/share/doc/clawgate/ops/README.md"), 0o644);

    // The installed units, as installed (ExecStart=%h/... resolves into this HOME), verify clean.
    let unit_dir = home.join(".config/systemd/user");
    let sandbox = tmp.path().join("analyze");
    let mut command = analyze(Kind::User, &sandbox, &unit_dir);
    command.env("HOME", &home);
    let out = output(command.args(["verify", "--man=no", GATEWAY, WORKER]));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.trim().is_empty(), "installed user units:\n{text}");

    let mut uninstall = args.to_vec();
    uninstall.extend(["--uninstall", "--purge"]);
    install_sh(&home, &fake, &uninstall);
    assert!(tree(&home).is_empty(), "left behind: {:?}", tree(&home).keys());

    // A prefix outside HOME gets absolute ExecStart paths.
    let prefix = tmp.path().join("opt");
    let prefix_arg = prefix.to_str().expect("utf-8");
    install_sh(&home, &fake, &["--user", "--no-systemctl", "--prefix", prefix_arg]);
    let unit = fs::read_to_string(unit_dir.join(WORKER)).expect("unit");
    assert!(unit.contains(&format!("ExecStart={prefix_arg}/bin/clawgate-usage-worker --listen")), "{unit}");
    install_sh(&home, &fake, &["--user", "--no-systemctl", "--prefix", prefix_arg, "--uninstall"]);
    assert!(tree(&home).is_empty() && tree(&prefix).is_empty(), "left behind");

    install_round_trip(&home, &home, &fake, &args, ".config/clawgate/clawgate.env");
}

/// The path each `installed`/`wrote`/`kept`/`removed` line (or its `would ...` form) names.
fn announced_paths(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| {
            let rest = [
                "installed ",
                "wrote ",
                "kept ",
                "removed ",
                "would install ",
                "would write ",
                "would keep ",
                "would remove ",
            ]
            .iter()
            .find_map(|verb| line.strip_prefix(verb))?;
            rest.split_whitespace().next().map(str::to_owned)
        })
        .collect()
}

#[test]
fn install_sh_dry_run_changes_nothing_and_every_message_names_what_it_touches() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("home");
    let root = tmp.path().join("root");
    fs::create_dir_all(&home).expect("home");
    fs::create_dir_all(&root).expect("root");
    let root_arg = root.to_str().expect("utf-8");
    let fake = fake_bins(tmp.path());
    let system = ["--system", "--destdir", root_arg];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        system.iter().copied().chain(extra.iter().copied()).collect()
    };

    // Into an empty tree: every step announced with its staged path; nothing written, not even a
    // temp file (install_sh checks TMPDIR).
    let plan = install_sh(&home, &fake, &with(&["--dry-run"]));
    assert!(tree(&root).is_empty() && tree(&home).is_empty(), "a dry run wrote {:?}", tree(&root).keys());
    assert!(plan.starts_with("Dry run: nothing is changed."), "{plan}");
    let planned = announced_paths(&plan);
    for path in [
        "usr/local/bin/clawgate",
        "usr/local/bin/clawgate-usage-worker",
        "etc/systemd/system/clawgate.service",
        "etc/systemd/system/clawgate-usage-worker.service",
        "etc/clawgate/clawgate.env",
        "usr/local/share/clawgate/prometheus/clawgate.rules.yml",
        "usr/local/share/clawgate/grafana/clawgate.json",
        "usr/local/share/clawgate/install-manifest",
    ] {
        assert!(
            planned.contains(&format!("{root_arg}/{path}")),
            "the dry run does not mention {path}:\n{plan}"
        );
    }
    assert!(
        plan.contains("skipped   systemctl daemon-reload: --destdir stages files for another machine"),
        "{plan}"
    );

    // The real run does what the plan said, and names the same staged paths.
    let done = install_sh(&home, &fake, &system);
    let installed = tree(&root);
    let done_paths = announced_paths(&done);
    assert!(done_paths.len() >= 7, "{done}");
    for path in &done_paths {
        assert!(path.starts_with(root_arg), "a --destdir message names {path}, not the staged path:\n{done}");
        assert!(root.join(path.strip_prefix(root_arg).unwrap().trim_start_matches('/')).exists(), "{path}");
    }
    assert!(done.contains("skipped   systemctl daemon-reload: --destdir"), "{done}");

    // Over the installed tree: a preview of the upgrade that keeps the env file and changes nothing.
    let upgrade = install_sh(&home, &fake, &with(&["--dry-run"]));
    assert_eq!(tree(&root), installed, "a dry-run upgrade changed the tree");
    assert!(upgrade.contains(&format!("would keep {root_arg}/etc/clawgate/clawgate.env ")), "{upgrade}");
    // And of the uninstall.
    let removal = install_sh(&home, &fake, &with(&["--uninstall", "--purge", "--dry-run"]));
    assert_eq!(tree(&root), installed, "a dry-run uninstall changed the tree");
    let to_remove = announced_paths(&removal);
    assert!(to_remove.contains(&format!("{root_arg}/usr/local/bin/clawgate")), "{removal}");
    install_sh(&home, &fake, &with(&["--uninstall", "--purge"]));
    assert!(tree(&root).is_empty(), "left behind: {:?}", tree(&root).keys());
    for path in to_remove {
        assert!(!Path::new(&path).exists(), "{path} was announced as removed but is still there");
    }

    // Without --destdir and --no-systemctl, with no user manager to talk to: daemon-reload is
    // skipped, and the output says why.
    let user = install_sh(&home, &fake, &["--user"]);
    let skipped = user
        .lines()
        .find(|l| l.starts_with("skipped   systemctl --user daemon-reload: "))
        .unwrap_or_else(|| panic!("daemon-reload skipped silently:\n{user}"));
    assert!(skipped.contains("user manager") || skipped.contains("systemctl not found"), "{skipped}");
    let user_paths = announced_paths(&user);
    assert!(user_paths.contains(&home.join(".local/bin/clawgate").display().to_string()), "{user}");
    let gone = install_sh(&home, &fake, &["--user", "--no-systemctl", "--uninstall", "--purge"]);
    assert!(gone.contains("skipped   systemctl --user daemon-reload: --no-systemctl"), "{gone}");
    assert!(tree(&home).is_empty(), "left behind: {:?}", tree(&home).keys());
}

/// Reads datagrams from `socket` until one contains `want` or `deadline` passes.
fn expect_notification(socket: &UnixDatagram, want: &str, deadline: Duration, seen: &mut Vec<String>) {
    let end = Instant::now() + deadline;
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        socket
            .set_read_timeout(Some(
                end.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)),
            ))
            .expect("timeout");
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = message.lines().any(|l| l == want);
                seen.push(message);
                if found {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break;
            }
            Err(e) => panic!("recv: {e}"),
        }
    }
    panic!("no {want} within {deadline:?}; received {seen:?}");
}

#[test]
fn gateway_sends_ready_watchdog_and_stopping_to_notify_socket() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    fs::create_dir_all(&store).expect("store");
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    let notify_env = notify_path.to_str().expect("utf-8");
    // 300 ms: pings every 150 ms, quick to observe.
    let gateway = Gateway::start(
        tmp.path(),
        &store,
        &[],
        &[("NOTIFY_SOCKET", notify_env), ("WATCHDOG_USEC", "300000")],
    );

    let mut seen = Vec::new();
    expect_notification(&notify, "READY=1", Duration::from_secs(10), &mut seen);
    let after_ready = seen.len();
    expect_notification(&notify, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    expect_notification(&notify, "WATCHDOG=1", Duration::from_secs(5), &mut seen);
    assert!(seen[..after_ready].iter().all(|m| !m.contains("WATCHDOG=1")), "a ping before READY=1: {seen:?}");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(gateway.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    expect_notification(&notify, "STOPPING=1", Duration::from_secs(10), &mut seen);
}

/// A system unit's `ExecStart=` as systemd would run it: `%t` is `runtime`, `${VAR}` and `$VAR`
/// expand from the unit's `Environment=` (unset ones vanish, as `$CLAWGATE_OPTS` does with an
/// empty environment file) and the binary is the built one. Returns (binary, arguments).
fn unit_exec(unit: &str, runtime: &Path) -> (PathBuf, Vec<String>) {
    let parsed = parse_unit(&Kind::System.unit_dir().join(unit));
    let env: BTreeMap<String, String> = values(&parsed, "Service", "Environment")
        .iter()
        .filter_map(|v| v.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect();
    let exec = one(&parsed, "Service", "ExecStart");
    let mut words = exec.split_whitespace();
    let binary =
        words.next().expect("binary").strip_prefix(Kind::System.shipped_bin_prefix()).expect("bin path");
    let args = words
        .filter_map(|w| {
            let name = w.strip_prefix("${").and_then(|w| w.strip_suffix('}')).or_else(|| w.strip_prefix('$'));
            match name {
                Some(name) => env.get(name).cloned(),
                None => Some(w.replace("%t", runtime.to_str().expect("utf-8"))),
            }
        })
        .collect();
    (e2e::bin(binary), args)
}

/// The worker as `clawgate-usage-worker.service` runs it, with `OPENCLAW_STATE_DIR` as the
/// environment file sets it; killed on drop.
struct ExternalWorker(e2e::Reaped);

impl ExternalWorker {
    fn start(runtime: &Path, store: &Path, log: &Path) -> ExternalWorker {
        let (binary, args) = unit_exec(WORKER, runtime);
        let log = fs::OpenOptions::new().create(true).append(true).open(log).expect("worker log");
        let child = Command::new(binary)
            .args(args)
            .env("OPENCLAW_STATE_DIR", store)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn worker");
        ExternalWorker(e2e::Reaped(child))
    }

    /// SIGKILL, as the kernel's OOM killer inside the unit's cgroup would, and reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn probe_health(base: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<(u64, Vec<String>)> {
    std::thread::spawn(move || {
        let agent = http_agent(Duration::from_secs(2));
        let (mut count, mut failures) = (0u64, Vec::new());
        let end = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < end {
            match agent.get(format!("{base}/healthz")).call() {
                Ok(r) if r.status().as_u16() == 200 => {}
                Ok(r) => failures.push(format!("status {}", r.status())),
                Err(e) => failures.push(e.to_string()),
            }
            count += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
        (count, failures)
    })
}

#[test]
fn external_worker_killed_and_restarted_as_systemd_would_never_fails_health() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let (code, stdout, stderr) = run_clawgate(&[
        "demo",
        "--out",
        store.to_str().expect("utf-8"),
        "--agents",
        "2",
        "--sessions",
        "3",
        "--messages",
        "4",
        "--seed",
        "11",
    ]);
    assert_eq!(code, 0, "clawgate demo: {stdout}{stderr}");
    let manifest: Value =
        serde_json::from_str(&fs::read_to_string(store.join("clawgate-demo.json")).expect("manifest"))
            .expect("json");
    let want_tokens = manifest["totals"]["totalTokens"].as_u64().expect("totalTokens");

    // The units' own command lines, with %t (the runtime dir) in the test's temp dir.
    let runtime = tmp.path().join("run");
    let socket = runtime.join("clawgate-worker/worker.sock");
    let worker_log = tmp.path().join("worker.log");
    let mut worker = ExternalWorker::start(&runtime, &store, &worker_log);
    let (binary, mut args) = unit_exec(GATEWAY, &runtime);
    assert_eq!(binary, e2e::bin("clawgate"));
    assert_eq!(args.remove(0), "serve");
    assert!(args.contains(&socket.to_str().expect("utf-8").to_owned()), "{args:?}");
    // The outage below lasts about 3 s (a 2 s request waited out, then systemd's RestartSec=1s),
    // in which the gateway's reconnect attempts (100 ms doubling, ±20%) can pass the default 5
    // restarts and park it for a minute, longer than the test waits: how the gateway reconnects
    // is what is tested here, not when it gives up (the supervisor's own tests pin that).
    args.extend(["--request-timeout", "2s", "--worker-max-restarts", "50"].map(str::to_owned));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let gateway = Gateway::start(tmp.path(), &store, &args, &[]);
    // Each phase asks a query no earlier phase asked (`limit` differs), so no cached answer can
    // stand in for the worker's.
    let query = |limit: u32| json!({"agentScope": "all", "range": "all", "limit": limit});
    let usage_tokens = |gateway: &Gateway, limit: u32| {
        let (code, body) = gateway.call("sessions.usage", &query(limit));
        (code == 200).then(|| body["payload"]["totals"]["totalTokens"].as_u64()).flatten()
    };
    let tokens = wait_until(Duration::from_secs(30), || usage_tokens(&gateway, 1000));
    let worker_text = || fs::read_to_string(&worker_log).unwrap_or_default();
    assert_eq!(tokens, Some(want_tokens), "first answer; worker log:\n{}", worker_text());
    // The gateway connected to our worker and spawned none of its own.
    let status = gateway.status();
    assert_eq!(status["worker"]["mode"], "external", "{status}");
    assert_eq!(status["worker"]["pid"].as_u64(), Some(u64::from(worker.0.id())), "{status}");
    let mode = fs::metadata(&socket).expect("socket").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the worker socket must be 0600");

    let stop = Arc::new(AtomicBool::new(false));
    let prober = probe_health(gateway.base.clone(), Arc::clone(&stop));
    wait_until(Duration::from_millis(300), || None::<()>);
    worker.kill();
    // While nothing listens, a new query fails retryably within --request-timeout; health does
    // not notice.
    let (code, body) = gateway.call("sessions.usage", &query(999));
    assert!(matches!(code, 429 | 503), "{code} {body}");
    assert_eq!(body["error"]["code"], "UNAVAILABLE", "{body}");
    assert_eq!(body["error"]["retryable"], true, "{body}");
    // RestartSec=1s, then systemd starts the same command line again.
    std::thread::sleep(Duration::from_secs(1));
    let second = ExternalWorker::start(&runtime, &store, &worker_log);
    let tokens = wait_until(Duration::from_secs(30), || usage_tokens(&gateway, 998));
    assert_eq!(tokens, Some(want_tokens), "answer after the restart; worker log:\n{}", worker_text());
    assert_eq!(gateway.status()["worker"]["pid"].as_u64(), Some(u64::from(second.0.id())));
    wait_until(Duration::from_millis(300), || None::<()>);
    stop.store(true, Ordering::Relaxed);
    let (count, failures) = prober.join().expect("prober");
    assert!(count >= 30, "only {count} health probes ran");
    assert!(failures.is_empty(), "health failed while the external worker restarted: {failures:?}");
}

#[test]
fn worker_exit_codes_match_the_units_restart_prevent_exit_status() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let socket = tmp.path().join("run/worker.sock");
    // A missing state dir is a configuration error: 78, which the unit does not restart.
    let status = Command::new(e2e::bin("clawgate-usage-worker"))
        .arg("--listen")
        .arg(&socket)
        .arg("--state-dir")
        .arg(tmp.path().join("missing"))
        .stderr(Stdio::null())
        .status()
        .expect("run worker");
    assert_eq!(status.code(), Some(78));
    // No state dir given: OpenClaw's default (~/.openclaw) is used; missing, it is 78 too.
    let status = Command::new(e2e::bin("clawgate-usage-worker"))
        .arg("--listen")
        .arg(&socket)
        .env_remove("OPENCLAW_STATE_DIR")
        .env_remove("OPENCLAW_HOME")
        .env("HOME", tmp.path())
        .stderr(Stdio::null())
        .status()
        .expect("run worker");
    assert_eq!(status.code(), Some(78));
    // A bad command line is a usage error: 2.
    let status = Command::new(e2e::bin("clawgate-usage-worker"))
        .args(["--listen", "x", "--no-such-flag"])
        .stderr(Stdio::null())
        .status()
        .expect("run worker");
    assert_eq!(status.code(), Some(2));
    let unit = parse_unit(&Kind::System.unit_dir().join(WORKER));
    assert_eq!(values(&unit, "Service", "RestartPreventExitStatus"), ["2", "78"]);
}

/// The long flags a `--help` output lists (hidden ones are not listed, so not required).
fn help_flags(binary: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(e2e::bin(binary)).args(args).arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{binary} {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        // Option lines only (`-x, --flag` or `--flag`), not prose that mentions a flag.
        .filter(|line| line.trim_start().starts_with('-'))
        .filter_map(|line| {
            let flag = line.trim_start().split([' ', ',', '=']).find(|w| w.starts_with("--"))?;
            (flag != "--help" && flag != "--version").then(|| flag.to_owned())
        })
        .collect()
}

#[test]
fn every_flag_of_serve_status_and_the_worker_is_in_the_configuration_doc() {
    let doc = fs::read_to_string(repo_root().join("docs/ops/configuration.md")).expect("configuration.md");
    let (_, commands, _) = run_clawgate(&["--help"]);
    let mut flags = help_flags("clawgate", &["serve"]);
    if commands.lines().any(|l| l.trim_start().starts_with("status ")) {
        flags.extend(help_flags("clawgate", &["status"]));
    }
    flags.extend(help_flags("clawgate-usage-worker", &[]));
    assert!(flags.len() > 10, "{flags:?}");
    let missing: Vec<_> = flags.iter().filter(|f| !doc.contains(&format!("`{f}"))).collect();
    assert!(missing.is_empty(), "docs/ops/configuration.md does not document {missing:?}");
    // `clawgate report` has its own page.
    let doc = fs::read_to_string(repo_root().join("docs/ops/report.md")).expect("report.md");
    let flags = help_flags("clawgate", &["report"]);
    assert!(flags.len() > 10, "{flags:?}");
    let missing: Vec<_> = flags.iter().filter(|f| !doc.contains(&format!("`{f}"))).collect();
    assert!(missing.is_empty(), "docs/ops/report.md does not document {missing:?}");
}

// ---- Prometheus rules and the Grafana dashboard -------------------------------------------------

/// Labels Prometheus attaches to every scraped series, whatever the values.
const TARGET_LABELS: [&str; 2] = ["instance", "job"];

/// `promtool` from PATH. Missing, the caller's test is skipped with a message, except in CI
/// (`CI` set), where scripts/install-test-deps.sh installs it and a skip would hide a broken step.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("promtool"))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI: scripts/install-test-deps.sh installs it"
        );
        eprintln!("SKIPPED: promtool is not installed (scripts/install-test-deps.sh installs it)");
    }
    found
}

/// Runs promtool; returns (success, stdout + stderr).
fn run_promtool(promtool: &Path, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .expect("run promtool");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn prometheus_dir() -> PathBuf {
    repo_root().join("packaging/prometheus")
}

/// The unit-test files for the rules, as paths relative to `prometheus_dir()`.
fn rule_test_files() -> Vec<String> {
    let mut files: Vec<String> = fs::read_dir(prometheus_dir().join("tests"))
        .expect("packaging/prometheus/tests")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yml"))
        .map(|name| format!("tests/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no rule tests in packaging/prometheus/tests");
    files
}

/// `expr:` values of a rules file, single-line or `|` / `>-` blocks.
fn rule_exprs(rules: &str) -> Vec<String> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut exprs = Vec::new();
    for (at, line) in lines.iter().enumerate() {
        let Some(value) = line.trim_start().strip_prefix("expr:") else { continue };
        let value = value.trim();
        if !matches!(value, "|" | "|-" | ">" | ">-") {
            exprs.push(value.to_owned());
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        let block: Vec<&str> = lines[at + 1..]
            .iter()
            .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
            .map(|l| l.trim())
            .collect();
        exprs.push(block.join(" "));
    }
    exprs
}

#[test]
fn prometheus_rules_pass_promtool_check_and_their_own_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let dir = prometheus_dir();
    let (ok, text) = run_promtool(&promtool, &["check", "rules", "clawgate.rules.yml"], &dir);
    assert!(ok, "promtool check rules:\n{text}");
    let tests = rule_test_files();
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let (ok, text) = run_promtool(&promtool, &args, &dir);
    assert!(ok, "promtool test rules:\n{text}");

    // Every alert has a fixture where it fires and one where it stays quiet.
    let rules = fs::read_to_string(dir.join("clawgate.rules.yml")).expect("rules");
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert!(alerts.len() >= 6, "{alerts:?}");
    let fixtures: String =
        tests.iter().map(|t| fs::read_to_string(dir.join(t)).expect("rule test")).collect();
    let fixture_lines: Vec<&str> = fixtures.lines().map(str::trim).collect();
    for alert in &alerts {
        let cases: Vec<&str> = fixture_lines
            .windows(2)
            .filter(|w| w[0] == format!("alertname: {alert}"))
            .map(|w| w[1])
            .collect();
        assert!(cases.contains(&"exp_alerts: []"), "{alert}: no fixture where it stays quiet");
        assert!(cases.contains(&"exp_alerts:"), "{alert}: no fixture where it fires");
    }

    // The fixtures have teeth: each of these changes to the rules must fail them.
    let mutations = [
        (
            "up{job=\"clawgate\"} == 0\n        for: 2m",
            "up{job=\"clawgate\"} == 0\n        for: 0m",
            "ClawgateDown without its delay",
        ),
        ("[15m])) >= 3", "[15m])) >= 4", "a restart threshold one higher"),
        (
            "unless clawgate_spend_usd{period=\"month\"} > clawgate_budget_usd{period=\"month\"}",
            "",
            "the forecast alert not giving way to the exceeded one",
        ),
        (
            "clawgate_spend_usd{period=\"day\"} > clawgate_budget_usd{period=\"day\"}",
            "clawgate_spend_usd{period=\"day\"} >= clawgate_budget_usd{period=\"day\"}",
            "a budget met counted as exceeded",
        ),
        ("[5m]) == 1", "[1m]) == 1", "a failed worker forgotten within a minute"),
    ];
    let tmp = tempfile::tempdir().expect("tempdir");
    fs::create_dir_all(tmp.path().join("tests")).expect("tests dir");
    for test in &tests {
        fs::copy(dir.join(test), tmp.path().join(test)).expect("copy rule test");
    }
    for (from, to, what) in mutations {
        assert_eq!(
            rules.matches(from).count(),
            1,
            "mutation {what:?}: {from:?} must occur once in the rules"
        );
        fs::write(tmp.path().join("clawgate.rules.yml"), rules.replace(from, to)).expect("write mutant");
        let (ok, text) = run_promtool(&promtool, &args, tmp.path());
        assert!(!ok, "the rule tests pass with {what}: they do not test it\n{text}");
    }
}

/// A vector selector in a PromQL expression: metric name and matchers (label, operator, value).
#[derive(Debug)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// Words that are PromQL syntax, not metric names, when not followed by `(`.
const PROMQL_WORDS: [&str; 24] = [
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "group_left",
    "group_right",
    "by",
    "without",
    "on",
    "ignoring",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
];

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Index just past the string literal that starts at `at`.
fn skip_string(s: &[u8], at: usize) -> usize {
    let quote = s[at];
    let mut i = at + 1;
    while i < s.len() && s[i] != quote {
        i += if s[i] == b'\\' { 2 } else { 1 };
    }
    i + 1
}

/// Index just past the bracket that closes the one at `at`.
fn skip_group(s: &[u8], at: usize) -> usize {
    let (open, close) = (s[at], if s[at] == b'(' { b')' } else { b']' });
    let mut depth = 0;
    let mut i = at;
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => {
                i = skip_string(s, i);
                continue;
            }
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    s.len()
}

/// The matchers of the `{...}` at `at` and the index just past it.
fn matchers(expr: &str, at: usize) -> (Vec<(String, String, String)>, usize) {
    let s = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = at + 1;
    loop {
        while i < s.len() && (s[i].is_ascii_whitespace() || s[i] == b',') {
            i += 1;
        }
        if i >= s.len() || s[i] == b'}' {
            return (out, i + 1);
        }
        let start = i;
        while i < s.len() && is_ident(s[i]) {
            i += 1;
        }
        let label = expr[start..i].to_owned();
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        let op_start = i;
        while i < s.len() && matches!(s[i], b'=' | b'!' | b'~') {
            i += 1;
        }
        let op = expr[op_start..i].to_owned();
        while i < s.len() && s[i].is_ascii_whitespace() {
            i += 1;
        }
        assert!(i < s.len() && matches!(s[i], b'"' | b'\'' | b'`'), "bad matcher for {label:?} in {expr}");
        let end = skip_string(s, i);
        out.push((label, op, expr[i + 1..end - 1].to_owned()));
        i = end;
    }
}

/// Every vector selector in `expr`: enough PromQL to check names, not to evaluate it (strings,
/// ranges, numbers, durations, Grafana variables and grouping label lists are skipped).
fn selectors(expr: &str) -> Vec<Selector> {
    let s = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'"' | b'\'' | b'`' => i = skip_string(s, i),
            b'[' => i = skip_group(s, i),
            b'{' => {
                let (matchers, end) = matchers(expr, i);
                out.push(Selector { metric: String::new(), matchers });
                i = end;
            }
            b'$' => {
                i += 1;
                while i < s.len() && (is_ident(s[i]) || s[i] == b'{' || s[i] == b'}') {
                    i += 1;
                }
            }
            b if b.is_ascii_digit() || b == b'.' => {
                while i < s.len() && (is_ident(s[i]) || s[i] == b'.') {
                    i += 1;
                }
            }
            b if is_ident(b) => {
                let start = i;
                while i < s.len() && is_ident(s[i]) {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut next = i;
                while next < s.len() && s[next].is_ascii_whitespace() {
                    next += 1;
                }
                let followed_by = s.get(next).copied();
                if ["by", "without", "on", "ignoring", "group_left", "group_right"].contains(&word) {
                    if followed_by == Some(b'(') {
                        i = skip_group(s, next);
                    }
                } else if followed_by == Some(b'(') || PROMQL_WORDS.contains(&word) {
                    // A function or an operator.
                } else if followed_by == Some(b'{') {
                    let (matchers, end) = matchers(expr, next);
                    out.push(Selector { metric: word.to_owned(), matchers });
                    i = end;
                } else {
                    out.push(Selector { metric: word.to_owned(), matchers: Vec::new() });
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn promql_scanner_finds_metrics_and_matchers_and_skips_the_rest() {
    let found = selectors(
        r#"sum by (agent, type) (rate(m_total{instance=~"$instance",by="agent"}[$__rate_interval])) * 3600
           > on (instance) group_left other:rule offset 1h unless absent(up{job='x'}) and 1e3 < bool inf"#,
    );
    let names: Vec<_> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["m_total", "other:rule", "up"]);
    assert_eq!(
        found[0].matchers,
        [
            ("instance".to_owned(), "=~".to_owned(), "$instance".to_owned()),
            ("by".to_owned(), "=".to_owned(), "agent".to_owned())
        ]
    );
    assert_eq!(found[2].matchers, [("job".to_owned(), "=".to_owned(), "x".to_owned())]);
}

/// metric → label → values seen (an empty set: any value).
type Exposed = BTreeMap<String, BTreeMap<String, std::collections::BTreeSet<String>>>;

/// What a gateway's `/metrics` text exposes: every family (with histogram series), and the
/// labels and values of every sample.
fn exposed_metrics(text: &str) -> Exposed {
    let mut exposed = Exposed::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (name, kind) = (words.next().expect("name"), words.next().expect("kind"));
            exposed.entry(name.to_owned()).or_default();
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    exposed.entry(format!("{name}{suffix}")).or_default();
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name_end = line.find(['{', ' ']).expect("sample line");
            let labels = exposed.entry(line[..name_end].to_owned()).or_default();
            if line[name_end..].starts_with('{') {
                for (label, _, value) in matchers(line, name_end).0 {
                    labels.entry(label).or_default().insert(value);
                }
            }
        }
    }
    exposed
}

/// Problems with the selectors of `expr` against what is exposed: unknown metrics, labels a
/// metric does not have, and `label="value"` matchers on values it never takes.
fn check_expr(expr: &str, exposed: &Exposed, problems: &mut Vec<String>) {
    for selector in selectors(expr) {
        let Some(labels) = exposed.get(&selector.metric) else {
            problems.push(format!("unknown metric {:?} in {expr}", selector.metric));
            continue;
        };
        for (label, op, value) in &selector.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            match labels.get(label) {
                None => problems.push(format!("{} has no label {label:?} (in {expr})", selector.metric)),
                Some(values) if op == "=" && !values.is_empty() && !values.contains(value) => problems.push(
                    format!("{}{{{label}}} is never {value:?}, only {values:?} (in {expr})", selector.metric),
                ),
                Some(_) => {}
            }
        }
    }
}

/// Every `expr` string anywhere in a dashboard, with the title of the panel it belongs to.
fn dashboard_exprs(value: &Value, panel: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            let title = map.get("title").and_then(Value::as_str).unwrap_or(panel);
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Value::String(expr)) => out.push((title.to_owned(), expr.clone())),
                    _ => dashboard_exprs(v, title, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, panel, out)),
        _ => {}
    }
}

#[test]
fn grafana_dashboard_and_alert_rules_use_only_metrics_a_real_gateway_exposes() {
    let _lock = exclusive();
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let store_arg = store.to_str().expect("utf-8");
    let (code, stdout, stderr) = run_clawgate(&[
        "demo",
        "--out",
        store_arg,
        "--agents",
        "2",
        "--sessions",
        "3",
        "--messages",
        "4",
        "--seed",
        "5",
    ]);
    assert_eq!(code, 0, "clawgate demo: {stdout}{stderr}");
    // Budgets for both periods, all agents and one, so every budget family has samples.
    let budgets = [
        "--budget",
        "day=50",
        "--budget",
        "month=900",
        "--budget",
        "main:month=300",
        "--budget-interval",
        "500ms",
    ];
    let gateway = Gateway::start(tmp.path(), &store, &budgets, &[]);
    let agent = http_agent(Duration::from_secs(10));
    let scrape = || {
        let mut res = agent.get(gateway.url("/metrics")).call().expect("GET /metrics");
        assert_eq!(res.status().as_u16(), 200);
        res.body_mut().read_to_string().expect("metrics body")
    };
    // A worker restart, so the restart counter has a sample and its labels can be checked too.
    let worker = gateway.ready_worker_pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(worker as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("SIGKILL worker");
    let text = wait_until(Duration::from_secs(30), || {
        let text = scrape();
        (text.contains("clawgate_worker_restarts_total{")
            && text.contains("clawgate_usage_cost_usd_total{by=\"model\"")
            && text.contains("clawgate_usage_tokens_total{by=\"agent\"")
            && text.contains("clawgate_spend_usd{period=\"day\"")
            && text.contains("clawgate_spend_forecast_usd{period=\"month\""))
        .then_some(text)
    })
    .unwrap_or_else(|| panic!("no restart, usage or spend figures in /metrics:\n{}", scrape()));

    let mut exposed = exposed_metrics(&text);
    assert!(exposed.len() > 20, "{exposed:?}");
    // The contract of docs/ops/alerts.md, as the gateway exposes it: every worker state has
    // a series (the one it is in is 1), every period and agent of a budget.
    let values = |metric: &str, label: &str| -> Vec<String> {
        exposed
            .get(metric)
            .and_then(|l| l.get(label))
            .map(|v| v.iter().cloned().collect())
            .unwrap_or_default()
    };
    assert_eq!(
        values("clawgate_worker_state", "state"),
        ["backoff", "busy", "failed", "handshaking", "ready", "spawning", "stopped"]
    );
    for metric in ["clawgate_budget_usd", "clawgate_spend_usd"] {
        assert_eq!(values(metric, "period"), ["day", "month"], "{metric}");
        assert_eq!(values(metric, "agent"), ["all", "main"], "{metric}");
    }
    assert_eq!(values("clawgate_spend_forecast_usd", "period"), ["month"]);
    exposed.entry("up".to_owned()).or_default();

    let mut problems = Vec::new();
    let rules = fs::read_to_string(prometheus_dir().join("clawgate.rules.yml")).expect("rules");
    let rule_exprs = rule_exprs(&rules);
    assert!(rule_exprs.len() >= 6, "{rule_exprs:?}");
    for expr in &rule_exprs {
        check_expr(expr, &exposed, &mut problems);
    }

    let dashboard: Value = serde_json::from_str(
        &fs::read_to_string(repo_root().join("packaging/grafana/clawgate.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard["panels"], "", &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (panel, expr) in &exprs {
        check_expr(expr, &exposed, &mut problems);
        // The instance selector applies everywhere.
        for selector in selectors(expr) {
            let filtered =
                selector.matchers.iter().any(|(l, op, v)| l == "instance" && op == "=~" && v == "$instance");
            if !filtered {
                problems.push(format!("{panel:?}: {} is not filtered by $instance", selector.metric));
            }
        }
    }
    // What the dashboard must show.
    for metric in [
        "clawgate_budget_usd",
        "clawgate_spend_usd",
        "clawgate_spend_forecast_usd",
        "clawgate_usage_cost_usd_total",
        "clawgate_usage_tokens_total",
        "clawgate_worker_state",
        "clawgate_worker_restarts_total",
        "clawgate_runtime_lag_p99_seconds",
        "clawgate_rss_bytes",
        "up",
    ] {
        if !exprs.iter().any(|(_, e)| selectors(e).iter().any(|s| s.metric == metric)) {
            problems.push(format!("no panel shows {metric}"));
        }
    }

    // Variables: a Prometheus data source, and the instance selector from a real metric's labels.
    let variables = dashboard["templating"]["list"].as_array().expect("templating.list");
    let variable =
        |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
    assert_eq!(variable("datasource")["type"], "datasource");
    assert_eq!(variable("datasource")["query"], "prometheus");
    let instance = variable("instance");
    assert_eq!(instance["multi"], true, "{instance}");
    let query = instance["definition"].as_str().expect("definition");
    assert_eq!(instance["query"]["query"], query, "{instance}");
    let args =
        query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(...)");
    let (metric, label) = args.rsplit_once(',').expect("label_values(metric, label)");
    check_expr(metric, &exposed, &mut problems);
    if label.trim() != "instance" {
        problems.push(format!("$instance comes from label {label:?}"));
    }
    let mut datasources = Vec::new();
    dashboard_datasources(&dashboard["panels"], &mut datasources);
    if let Some(bad) = datasources.iter().find(|d| d["uid"] != "${datasource}") {
        problems.push(format!("a panel or target does not use $datasource: {bad}"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));

    // promtool parses every dashboard query (with Grafana's variables filled in).
    let Some(promtool) = promtool() else { return };
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        let expr = expr.replace("$__rate_interval", "5m").replace("$instance", ".*");
        rules.push_str(&format!("      - record: dashboard:{i}\n        expr: {}\n", Value::String(expr)));
    }
    fs::write(tmp.path().join("dashboard.rules.yml"), rules).expect("write");
    let (ok, text) = run_promtool(&promtool, &["check", "rules", "dashboard.rules.yml"], tmp.path());
    assert!(ok, "a dashboard query does not parse:\n{text}");
}

/// Every `datasource` object of the panels and their targets.
fn dashboard_datasources<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                if key == "datasource" {
                    out.push(v);
                } else {
                    dashboard_datasources(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_datasources(v, out)),
        _ => {}
    }
}
