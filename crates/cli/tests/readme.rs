//! The README's commands as a test. Every shell block the README marks with a
//! `<!-- tested … -->` line runs literally, in README order, as one bash script
//! (`set -euo pipefail`) in one fresh directory outside the repository, with the
//! defaults — data in the relative `./storage`, no `MLX_HUB_*` variables — as a newcomer
//! runs them from a clone with the binary built.
//!
//! What stands in for that clone: `target/release/mlx-hub` is the binary this test build
//! made (no second, release build), and `scripts/` and `examples/` are links to the
//! repository's. Three rules, and nothing else is rewritten:
//! - `cargo run --release -p mlx-hub -- ARGS` runs that binary with ARGS, `cargo build`
//!   has nothing left to do, `cargo test` is what runs this test (skipped) — a `cargo`
//!   first on the script's `PATH`;
//! - a command that serves in the foreground (`serve`, or `quickstart` without
//!   `--no-serve`, not sent to the background with `&`) runs until `/health` answers on
//!   port 8000, then gets SIGTERM and must exit with status 0;
//! - the script as a whole gets 25 minutes.
//!
//! Then it checks what the commands answered (the chat reply, the trained version's
//! lineage) and that the data landed in the fresh directory's `./storage`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PORT: u16 = 8000;
const LIMIT: Duration = Duration::from_secs(25 * 60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bodies of the README's shell blocks marked as tested, in order.
fn tested_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if !line.trim_start().starts_with("<!-- tested") {
            continue;
        }
        let fence = lines.next().unwrap_or_default();
        assert_eq!(
            fence.trim(),
            "```sh",
            "a tested block must follow its marker"
        );
        let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push(body.join("\n"));
    }
    blocks
}

/// Joins `\`-continued lines, so each item is one command line.
fn command_lines(block: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// A command that serves in the foreground (see the module's rules).
fn serves_in_foreground(line: &str) -> bool {
    let code = line.split(" #").next().unwrap_or_default();
    let words: Vec<&str> = code.split_whitespace().collect();
    let runs_hub = |i: usize| {
        i > 0
            && (words[i - 1] == "$mlx" || words[i - 1].ends_with("mlx-hub") || words[i - 1] == "--")
    };
    let serving = words.iter().enumerate().any(|(i, w)| {
        runs_hub(i) && (*w == "serve" || (*w == "quickstart" && !words.contains(&"--no-serve")))
    });
    serving && !words.contains(&"&") && !code.trim_end().ends_with('&')
}

/// `cargo` as the README's commands meet it (first on `PATH`): `run` execs the built
/// binary (so a backgrounded `cargo run` is the server itself), `build` and `test` have
/// nothing left to do.
fn cargo_shim(bin: &Path) -> String {
    format!(
        r#"#!/usr/bin/env bash
case "$1" in
run) while [ "$1" != "--" ]; do shift; done; shift; exec '{bin}' "$@" ;;
build) echo "README test: cargo $* — built already ({bin})" ;;
test) echo "README test: cargo $* — this is it" ;;
*) echo "README test: unexpected cargo $*" >&2; exit 1 ;;
esac
"#,
        bin = bin.display()
    )
}

/// The script: the foreground-server rule as a shell function, then the blocks.
fn script(blocks: &[String]) -> String {
    let mut s = format!(
        r#"set -euo pipefail
exec 2>&1
readme_serve() {{
    "$@" &
    local pid=$!
    while ! curl -fs -o /dev/null localhost:{PORT}/health; do
        kill -0 "$pid" 2>/dev/null || {{ wait "$pid"; echo "README test: $* exited before serving" >&2; return 1; }}
        sleep 0.5
    done
    echo "README test: $* is serving; stopping it"
    kill -TERM "$pid"
    wait "$pid"
}}
"#
    );
    for (i, block) in blocks.iter().enumerate() {
        s.push_str(&format!("echo '=== README block {}'\n", i + 1));
        for line in command_lines(block) {
            if serves_in_foreground(&line) {
                s.push_str("readme_serve ");
            }
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}

fn port_free() -> bool {
    std::net::TcpListener::bind(("127.0.0.1", PORT)).is_ok()
}

#[test]
fn readme_blocks_split_into_commands_by_the_rules() {
    let blocks = tested_blocks(&std::fs::read_to_string(repo().join("README.md")).unwrap());
    assert_eq!(
        blocks.len(),
        3,
        "the run, first-session and quickstart blocks"
    );
    assert!(blocks[0].contains("cargo run --release -p mlx-hub -- serve"));
    assert!(blocks[0].contains("cargo test --workspace"));
    let foreground: Vec<String> = blocks
        .iter()
        .flat_map(|b| command_lines(b))
        .filter(|l| serves_in_foreground(l))
        .collect();
    assert_eq!(
        foreground.len(),
        3,
        "serve and quickstart at the top, quickstart in its section: {foreground:#?}"
    );
    assert!(!serves_in_foreground("$mlx serve & hub=$!"));
    assert!(!serves_in_foreground(
        "$mlx quickstart --no-serve   # the same"
    ));
    assert!(serves_in_foreground(
        "$mlx quickstart              # then serves"
    ));
}

#[test]
fn readme_commands_run_as_written() {
    let cached = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cache/mlx-hub/models/SmolLM2-135M-Instruct-Q4_1.gguf");
    let missing = if !cached.is_file() {
        Some(format!(
            "the SmolLM2 GGUF is not cached at {} (scripts/setup-test-deps.sh fetches it)",
            cached.display()
        ))
    } else if !port_free() {
        Some(format!(
            "port {PORT} is taken (the README's commands use it)"
        ))
    } else {
        None
    };
    if let Some(why) = missing {
        test_support::require::<()>("readme_commands_run_as_written", Err(why));
        return;
    }

    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let blocks = tested_blocks(&readme);
    let fresh = tempfile::tempdir().unwrap();
    let dir = fresh.path();
    std::fs::create_dir_all(dir.join("target/release")).unwrap();
    std::os::unix::fs::symlink(
        env!("CARGO_BIN_EXE_mlx-hub"),
        dir.join("target/release/mlx-hub"),
    )
    .unwrap();
    for d in ["scripts", "examples"] {
        std::os::unix::fs::symlink(repo().join(d).canonicalize().unwrap(), dir.join(d)).unwrap();
    }
    let text = script(&blocks);
    std::fs::write(dir.join("readme.sh"), &text).unwrap();
    let shims = tempfile::tempdir().unwrap();
    let cargo = shims.path().join("cargo");
    std::fs::write(&cargo, cargo_shim(Path::new(env!("CARGO_BIN_EXE_mlx-hub")))).unwrap();
    std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![shims.path().to_path_buf()];
    paths.extend(std::env::split_paths(&path));

    let mut cmd = Command::new("bash");
    cmd.arg("readme.sh")
        .current_dir(dir)
        .env("PATH", std::env::join_paths(paths).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if ["MLX_HUB_", "HF_", "OTEL_", "MLFLOW_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cmd.env_remove(&*k);
        }
    }
    // its own process group: everything the script started can be stopped at the end
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let pgid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("| {line}");
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    // `--`: a negative pid (the group) after options, else kill(1) may read it as -1
    let _ = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{pgid}")])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let output = reader.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("the README's commands ran past {LIMIT:?}"));
    assert!(
        status.success(),
        "the README's commands failed ({status}); the script was:\n{text}"
    );
    eprintln!("README commands: {:.0?}", started.elapsed());

    // what the commands answered
    for want in [
        "quickstart ready",                // the top block's quickstart served
        "\"aliases\":[\"production\"]",    // the registered version, over HTTP
        ": succeeded",                     // jobs submit --wait
        "\"format\":\"mlx-lora-adapter\"", // the trained version…
        "\"base_version\":{\"id\":",       // …and its lineage
        "\"object\":\"chat.completion\"",  // the chat reply from smollm2-lora
        "quickstart done",                 // --no-serve
    ] {
        assert!(output.contains(want), "{want:?} not in the output");
    }
    // the defaults: everything under the fresh directory's ./storage
    assert!(dir.join("storage/hub.db").is_file());
    assert!(dir.join("smollm2/config.json").is_file());
}
