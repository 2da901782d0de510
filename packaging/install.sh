#!/usr/bin/env bash
# Installs (or uninstalls) clawgate: the two binaries (debug info stripped), the systemd unit
# pair, an environment file, the operator docs and the Prometheus rules and Grafana dashboard.
# Idempotent: running it again upgrades binaries, units and docs and keeps the environment file.
# Every path it creates is recorded in a manifest, so --uninstall removes exactly that and nothing
# else. --dry-run prints all of it and changes nothing. See docs/ops/install.md.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: install.sh (--system | --user) [options]
       install.sh (--system | --user) --uninstall [--purge] [options]

Modes:
  --system              system units in /etc/systemd/system, config /etc/clawgate/clawgate.env,
                        binaries in PREFIX/bin (default PREFIX /usr/local); run as root
  --user                user units in ~/.config/systemd/user, config ~/.config/clawgate/clawgate.env,
                        binaries in PREFIX/bin (default PREFIX ~/.local); for `systemctl --user`

Options:
  --prefix DIR          installation prefix (binaries in DIR/bin, docs in DIR/share/doc/clawgate)
  --destdir DIR         stage everything under DIR (packaging, tests); implies --no-systemctl
  --from DIR            where the built clawgate and clawgate-usage-worker are
                        [default: ../target/release beside this script, else ./bin beside it]
  --service-user NAME   (system) the user both services run as: the one that owns the OpenClaw
                        state dir [default: openclaw]
  --openclaw-state-dir DIR
                        OPENCLAW_STATE_DIR written into a new environment file
                        [default: the service user's ~/.openclaw (system); ~/.openclaw (user)]
  --no-systemctl        do not run systemctl (daemon-reload, disable on uninstall) or verify
  --debug-symbols       keep the binaries' debug info (when built with it) in BINDIR/.debug/NAME.debug,
                        where backtraces and gdb find it; without it the debug info is dropped
  --dry-run             print what would be done, change nothing (no root needed)
  --uninstall           remove what a previous install with the same mode, prefix and destdir put
                        there; an environment file you changed is kept unless --purge
  --purge               with --uninstall: remove the environment file even if changed
  -h, --help            this text
EOF
}

die() { echo "install.sh: $*" >&2; exit 2; }

mode="" prefix="" destdir="" from="" service_user="openclaw" state_dir=""
uninstall=0 purge=0 dry_run=0 debug_symbols=0 no_systemctl_flag=0
while [ $# -gt 0 ]; do
  case "$1" in
    --system) mode=system ;;
    --user) mode=user ;;
    --prefix) prefix="${2:?--prefix needs a value}"; shift ;;
    --destdir) destdir="${2:?--destdir needs a value}"; shift ;;
    --from) from="${2:?--from needs a value}"; shift ;;
    --service-user) service_user="${2:?--service-user needs a value}"; shift ;;
    --openclaw-state-dir) state_dir="${2:?--openclaw-state-dir needs a value}"; shift ;;
    --no-systemctl) no_systemctl_flag=1 ;;
    --debug-symbols) debug_symbols=1 ;;
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --purge) purge=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[ -n "$mode" ] || { usage >&2; die "choose --system or --user"; }
[ "$purge" = 0 ] || [ "$uninstall" = 1 ] || die "--purge only goes with --uninstall"
[ -z "$destdir" ] || destdir="${destdir%/}"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if [ "$mode" = system ]; then
  : "${prefix:=/usr/local}"
  unit_dir=/etc/systemd/system
  conf_dir=/etc/clawgate
  unit_src="$here/systemd"
  systemctl=(systemctl)
else
  [ -n "${HOME:-}" ] || die "--user needs \$HOME"
  : "${prefix:=$HOME/.local}"
  config_home="${XDG_CONFIG_HOME:-$HOME/.config}"
  unit_dir="$config_home/systemd/user"
  conf_dir="$config_home/clawgate"
  unit_src="$here/systemd/user"
  systemctl=(systemctl --user)
fi
case "$prefix" in /*) ;; *) die "--prefix must be absolute: $prefix" ;; esac
if [ "$mode" = system ] && [ -z "$destdir" ] && [ "$dry_run" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "--system writes to /etc and $prefix: run it as root (sudo), or stage it with --destdir"
fi
prefix="${prefix%/}"
bin_dir="$prefix/bin"
doc_dir="$prefix/share/doc/clawgate"
share_dir="$prefix/share/clawgate"
manifest="$share_dir/install-manifest"
units=(clawgate.service clawgate-usage-worker.service)
binaries=(clawgate clawgate-usage-worker)

# Why systemctl cannot or must not run here; empty when it can talk to a running manager of this kind.
systemctl_skip_reason() {
  if [ -n "$destdir" ]; then
    echo "--destdir stages files for another machine; run it there once they are in place"
  elif [ "$no_systemctl_flag" = 1 ]; then
    echo "--no-systemctl"
  elif ! command -v systemctl >/dev/null 2>&1; then
    echo "systemctl not found: is this a systemd machine?"
  elif [ "$mode" = system ] && [ ! -d /run/systemd/system ]; then
    echo "systemd is not running here (no /run/systemd/system)"
  elif [ "$mode" = user ] && ! "${systemctl[@]}" show-environment >/dev/null 2>&1; then
    echo "no systemd user manager answers (log in through a session, or: loginctl enable-linger \"\$USER\")"
  fi
}

# Runs a systemctl command line, or says why it does not (never silently); in a dry run, says it would.
run_systemctl() { # ARGS...
  local reason
  reason="$(systemctl_skip_reason)"
  if [ -n "$reason" ]; then
    echo "skipped   ${systemctl[*]} $*: $reason"
    return 1
  fi
  if [ "$dry_run" = 1 ]; then
    echo "would run ${systemctl[*]} $*"
    return 1
  fi
  "${systemctl[@]}" "$@"
}

# A path as this run touches it: under --destdir, the staged path.
shown() { echo "$destdir$1"; }

# Paths in the manifest are real paths (without DESTDIR): "file PATH SHA256" or "dir PATH".
created_dirs=()
installed_files=()
declare -A made_dir=()

# mkdir -p that remembers which directories it created, for a clean uninstall.
make_dir() {
  local dir="$1" missing=() d
  d="$dir"
  # (In a dry run nothing is created, so the same directory can come up again: count it once.)
  while [ -n "$d" ] && [ "$d" != / ] && [ ! -d "$destdir$d" ] && [ -z "${made_dir[$d]:-}" ]; do
    missing=("$d" "${missing[@]}")
    made_dir[$d]=1
    d="$(dirname "$d")"
  done
  [ "$dry_run" = 1 ] || mkdir -p "$destdir$dir"
  created_dirs+=("${missing[@]}")
}

put_file() { # MODE SOURCE DEST
  make_dir "$(dirname "$3")"
  installed_files+=("$3")
  [ "$dry_run" = 0 ] || return 0
  # Through a temp file and rename, so a running binary is never overwritten in place.
  local tmp
  tmp="$(mktemp "$destdir$3.XXXXXX")"
  cat "$2" >"$tmp"
  chmod "$1" "$tmp"
  mv -f "$tmp" "$destdir$3"
}

mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

is_elf() { [ "$(head -c 4 "$1" | od -An -c | tr -d ' \n')" = '177ELF' ]; }

# Line tables or debug info (not .debug_gdb_scripts, which stripping keeps). grep without -q: an
# early exit would kill readelf with SIGPIPE, and pipefail would say "no".
has_debug_info() { readelf -S -W "$1" 2>/dev/null | grep -E '\] \.z?debug_(info|line) ' >/dev/null; }

# "VERB PATH [DETAIL]" with VERB in the past tense, or as a plan in a dry run; PATH as staged.
say() { # VERB PATH [DETAIL]
  local verb="$1"
  if [ "$dry_run" = 1 ]; then
    case "$verb" in
      installed) verb="would install" ;; wrote) verb="would write" ;; kept) verb="would keep" ;;
      removed) verb="would remove" ;;
    esac
  fi
  printf '%-9s %s%s\n' "$verb" "$(shown "$2")" "${3:+ ($3)}"
}

# Installs a binary without its debug info (the symbol table stays, so backtraces still name
# functions); with --debug-symbols the debug info goes to BINDIR/.debug/NAME.debug, linked from the
# binary by .gnu_debuglink, where Rust's backtraces, gdb and addr2line look for it.
put_binary() { # SOURCE DEST
  local src="$1" dest="$2" name debug_file
  name="$(basename "$dest")"
  debug_file="$bin_dir/.debug/$name.debug"
  if ! is_elf "$src"; then
    put_file 0755 "$src" "$dest"
    say installed "$dest" "not an ELF file: copied as is"
  elif ! command -v objcopy >/dev/null 2>&1 || ! command -v readelf >/dev/null 2>&1; then
    put_file 0755 "$src" "$dest"
    say installed "$dest" "$(mib "$src"), NOT stripped: objcopy/readelf missing (Debian: binutils)"
  elif ! has_debug_info "$src"; then
    put_file 0755 "$src" "$dest"
    say installed "$dest" "$(mib "$src"), built without debug info"
  elif [ "$dry_run" = 1 ]; then
    put_file 0755 "$src" "$dest"
    if [ "$debug_symbols" = 1 ]; then
      put_file 0644 "$src" "$debug_file"
      say installed "$dest" "$(mib "$src") as built; debug info moved to $(shown "$debug_file")"
    else
      say installed "$dest" "$(mib "$src") as built; debug info stripped"
    fi
  else
    mkdir -p "$tmp/strip"
    if [ "$debug_symbols" = 1 ]; then
      # The link records the debug file's name and CRC: name it as installed.
      objcopy --only-keep-debug "$src" "$tmp/strip/$name.debug"
      objcopy --strip-debug --add-gnu-debuglink="$tmp/strip/$name.debug" "$src" "$tmp/strip/$name"
      put_file 0755 "$tmp/strip/$name" "$dest"
      put_file 0644 "$tmp/strip/$name.debug" "$debug_file"
      say installed "$dest" "$(mib "$src") → $(mib "$tmp/strip/$name"); debug info in $(shown "$debug_file")"
    else
      objcopy --strip-debug "$src" "$tmp/strip/$name"
      put_file 0755 "$tmp/strip/$name" "$dest"
      say installed "$dest" "$(mib "$src") → $(mib "$tmp/strip/$name"), debug info stripped"
    fi
  fi
}

# Units as shipped name /usr/local/bin (system) or %h/.local/bin (user) and the docs beside them;
# point them at this prefix and user.
render_unit() {
  local src="$1" default_prefix group
  if [ "$mode" = system ]; then default_prefix=/usr/local; else default_prefix='%h/.local'; fi
  local target_prefix="$prefix"
  [ "$mode" = user ] && [ "$prefix" = "$HOME/.local" ] && target_prefix='%h/.local'
  group="$(id -gn "$service_user" 2>/dev/null || echo "$service_user")"
  sed -e "s|$default_prefix/bin/|$target_prefix/bin/|g" \
      -e "s|$default_prefix/share/doc/clawgate/|$target_prefix/share/doc/clawgate/|g" \
      -e "s|^User=openclaw\$|User=$service_user|" \
      -e "s|^Group=openclaw\$|Group=$group|" "$src"
}

render_env() {
  local dir="$state_dir"
  if [ -z "$dir" ] && [ "$mode" = system ]; then
    local home
    home="$(getent passwd "$service_user" 2>/dev/null | cut -d: -f6 || true)"
    dir="${home:-/home/$service_user}/.openclaw"
  fi
  if [ -n "$dir" ]; then
    sed -e "s|^#OPENCLAW_STATE_DIR=.*|OPENCLAW_STATE_DIR=$dir|" "$here/clawgate.env"
  else
    cat "$here/clawgate.env"
  fi
}

sha() { sha256sum "$1" | cut -d' ' -f1; }

read_manifest() { # prints lines of the existing manifest, if any
  if [ -f "$destdir$manifest" ]; then cat "$destdir$manifest"; fi
}

do_install() {
  if [ -z "$from" ]; then
    for candidate in "$repo/target/release" "$here/bin"; do
      if [ -x "$candidate/clawgate" ] && [ -x "$candidate/clawgate-usage-worker" ]; then from="$candidate"; break; fi
    done
    [ -n "$from" ] || die "no built binaries found: run 'cargo build --release --workspace --bins' or pass --from DIR"
  fi
  for b in "${binaries[@]}"; do [ -x "$from/$b" ] || die "$from/$b is missing or not executable"; done
  [ "$dry_run" = 0 ] || echo "Dry run: nothing is changed."
  [ -z "$destdir" ] || echo "Staging under $destdir (the units and the environment file name the real paths)."

  # A dry run writes nothing at all, not even temp files: it renders to stdout only when asked.
  tmp=""
  if [ "$dry_run" = 0 ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
  fi
  for b in "${binaries[@]}"; do put_binary "$from/$b" "$bin_dir/$b"; done
  for u in "${units[@]}"; do
    if [ "$dry_run" = 0 ]; then
      render_unit "$unit_src/$u" >"$tmp/$u"
      put_file 0644 "$tmp/$u" "$unit_dir/$u"
    else
      put_file 0644 "$unit_src/$u" "$unit_dir/$u"
    fi
    say installed "$unit_dir/$u"
  done
  local n_docs=0
  for doc in "$repo"/docs/ops/*.md; do
    [ -f "$doc" ] && put_file 0644 "$doc" "$doc_dir/ops/$(basename "$doc")" && n_docs=$((n_docs + 1))
  done
  put_file 0644 "$here/clawgate.env" "$doc_dir/clawgate.env.example"
  # Shield mode's drop-in, to copy into clawgate.service.d/ (docs/ops/shield.md).
  put_file 0644 "$here/systemd/clawgate-shield.conf" "$doc_dir/clawgate-shield.conf"
  say installed "$doc_dir/" "$n_docs pages in ops/, clawgate.env.example, clawgate-shield.conf"
  # For the Prometheus and Grafana that watch this host (docs/ops/fleet.md, docs/ops/alerts.md).
  put_file 0644 "$here/prometheus/clawgate.rules.yml" "$share_dir/prometheus/clawgate.rules.yml"
  say installed "$share_dir/prometheus/clawgate.rules.yml"
  put_file 0644 "$here/grafana/clawgate.json" "$share_dir/grafana/clawgate.json"
  say installed "$share_dir/grafana/clawgate.json"

  # The environment file is the operator's: written once, never overwritten.
  local env_file="$conf_dir/clawgate.env" env_sha=""
  if [ -e "$destdir$env_file" ]; then
    say kept "$env_file" "yours; the current template is $(shown "$doc_dir/clawgate.env.example")"
    env_sha="$(read_manifest | awk -v p="$env_file" '$1 == "file" && $2 == p { print $3 }')"
  elif [ "$dry_run" = 1 ]; then
    make_dir "$conf_dir"
    say wrote "$env_file" "0600, in a 0700 directory"
  else
    render_env >"$tmp/clawgate.env"
    make_dir "$conf_dir"
    chmod 0700 "$destdir$conf_dir"
    put_file 0600 "$tmp/clawgate.env" "$env_file"
    env_sha="$(sha "$destdir$env_file")"
    say wrote "$env_file"
  fi

  # Merge with the previous manifest: directories created by an earlier run stay ours.
  make_dir "$(dirname "$manifest")"
  if [ "$dry_run" = 1 ]; then
    say wrote "$manifest" "$((${#installed_files[@]} + 1)) files, ${#created_dirs[@]} new directories"
  else
    {
      read_manifest | awk '$1 == "dir"'
      for d in "${created_dirs[@]}"; do echo "dir $d"; done
      for f in "${installed_files[@]}"; do
        [ "$f" = "$env_file" ] || echo "file $f"
      done
      # An env file kept from before is listed only if an install of ours wrote it.
      [ -z "$env_sha" ] || echo "file $env_file $env_sha"
      echo "file $manifest"
    } | awk '!seen[$1 " " $2]++' >"$tmp/manifest"
    cat "$tmp/manifest" >"$destdir$manifest"
    chmod 0644 "$destdir$manifest"
  fi

  if run_systemctl daemon-reload; then
    if command -v systemd-analyze >/dev/null 2>&1; then
      local analyze=(systemd-analyze)
      [ "$mode" = user ] && analyze+=(--user)
      (cd "$unit_dir" && "${analyze[@]}" verify --man=no "${units[@]}") ||
        echo "warning: systemd-analyze verify reported problems with the units above" >&2
    fi
  fi
  next_steps
}

next_steps() {
  local sc="${systemctl[*]}" sudo=""
  [ "$mode" = system ] && sudo="sudo "
  echo
  if [ -n "$destdir" ]; then
    echo "Next steps, once the tree under $destdir is in place on the target machine:"
  else
    echo "Next steps:"
  fi
  if [ "$mode" = system ] && ! id "$service_user" >/dev/null 2>&1; then
    echo "  - The service user '$service_user' does not exist. Run the services as the user that owns"
    echo "    the OpenClaw state dir (reinstall with --service-user NAME), or create one that can read it."
  fi
  echo "  1. Review $conf_dir/clawgate.env: OPENCLAW_STATE_DIR, CLAWGATE_LISTEN, CLAWGATE_TOKEN."
  echo "  2. ${sudo}$sc daemon-reload && ${sudo}$sc enable --now clawgate.service"
  echo "     (the gateway pulls in clawgate-usage-worker.service; after an upgrade:"
  echo "     ${sudo}$sc restart clawgate.service, which restarts the worker too)"
  if [ "$mode" = user ]; then
    echo "  3. To keep it running when you are logged out: loginctl enable-linger \"\$USER\""
  fi
  echo "  Check: curl -s http://127.0.0.1:18790/healthz; $sc status clawgate.service clawgate-usage-worker.service"
  echo "  Docs:  $doc_dir/ops/README.md; alerts and dashboard: $share_dir/{prometheus,grafana}/"
}

do_uninstall() {
  [ "$dry_run" = 0 ] || echo "Dry run: nothing is changed."
  if [ ! -f "$destdir$manifest" ]; then
    echo "nothing to uninstall: no manifest at $(shown "$manifest") (same --$mode, --prefix and --destdir as the install?)"
    return 0
  fi
  run_systemctl disable --now "${units[@]}" 2>/dev/null || true
  local kind path hash dirs=() kept=()
  while read -r kind path hash; do
    case "$kind" in
      file)
        [ "$path" = "$manifest" ] && continue
        [ -e "$destdir$path" ] || continue
        if [ -n "$hash" ] && [ "$purge" = 0 ] && [ "$(sha "$destdir$path")" != "$hash" ]; then
          say kept "$path" "changed since install; --uninstall --purge removes it"
          kept+=("file $path $hash")
          continue
        fi
        [ "$dry_run" = 1 ] || rm -f "$destdir$path"
        say removed "$path"
        ;;
      dir) dirs+=("$path") ;;
    esac
  done < <(read_manifest)
  if [ "$dry_run" = 1 ]; then
    say removed "$manifest" "and the directories the install created, once empty"
    run_systemctl daemon-reload || true
    return 0
  fi
  if [ "${#kept[@]}" -gt 0 ]; then
    # Remember what was kept (and the directories around it) for a later --purge.
    { printf '%s\n' "${kept[@]}"; printf 'dir %s\n' "${dirs[@]}"; echo "file $manifest"; } >"$destdir$manifest.new"
    mv -f "$destdir$manifest.new" "$destdir$manifest"
  else
    rm -f "$destdir$manifest"
  fi
  # Deepest first; only directories we created, and only once empty.
  local d
  while read -r d; do
    if [ -n "$d" ]; then rmdir "$destdir$d" 2>/dev/null || true; fi
  done < <(printf '%s\n' "${dirs[@]}" "$(dirname "$manifest")" | awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
  run_systemctl daemon-reload || true
  echo "clawgate uninstalled ($mode)."
}

if [ "$uninstall" = 1 ]; then do_uninstall; else do_install; fi
