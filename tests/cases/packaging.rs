//! Packaging: the systemd unit pairs (system and user) checked by systemd's own tools, their
//! hardening scores held under recorded thresholds, `packaging/install.sh` run into temporary
//! prefixes, the gateway's sd_notify protocol, and the external-mode pair run the way systemd
//! runs it (worker standalone with `--listen`, killed and started again) without systemd itself.

use std::{
    collections::BTreeMap,
    fs,
    os::unix::{fs::PermissionsExt as _, net::UnixDatagram},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
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

/// Runs install.sh with `HOME` = `home`, binaries from `from`; panics on failure.
fn install_sh(home: &Path, from: &Path, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(repo_root().join("packaging/install.sh"))
        .args(args)
        .arg("--from")
        .arg(from)
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .stdin(Stdio::null())
        .output()
        .expect("run install.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "install.sh {args:?} failed:\n{text}");
    text
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
    assert!(first.contains("Next steps:"), "{first}");
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

    install_sh(&home, &bin_dir(), &args);
    let t = tree(&root);
    for bin in ["clawgate", "clawgate-usage-worker"] {
        let path = format!("usr/local/bin/{bin}");
        assert_eq!(mode_of(&t, &path), 0o755, "{path}");
        assert_eq!(
            t[Path::new(&path)].1.as_deref(),
            Some(fs::read(bin_dir().join(bin)).expect("built").as_slice())
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
struct ExternalWorker(Child);

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
        ExternalWorker(child)
    }

    /// SIGKILL, as the kernel's OOM killer inside the unit's cgroup would, and reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for ExternalWorker {
    fn drop(&mut self) {
        self.kill();
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
    args.extend(["--request-timeout".to_owned(), "2s".to_owned()]);
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
}
