//! Every code example a user can copy runs: each example in `examples/` is built and run with a
//! timeout and its output checked, and every `rust` block of `README.md` and `docs/*.md` is the
//! text of one of their files (a `<!-- example: examples/NAME.rs -->` line names it just above
//! the block). After editing an example, `TETHER_BLESS_DOCS=1 cargo test --test examples`
//! rewrites the blocks from the files.

mod cli_support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// The examples and what each must print.
const EXAMPLES: [&str; 3] = ["tokio", "smol", "drive_loop"];

const MARKER: &str = "<!-- example: ";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the examples once per test binary and returns their executables. `cargo test` has
/// built them already (it builds examples before running tests), so with the README's test
/// command (`--workspace --all-features`, the same flags as here) this only checks they are
/// fresh; run alone (`cargo test --test examples`) it builds them.
fn executables() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.current_dir(root());
        cargo.args([
            "build",
            "--workspace",
            "--all-features",
            "--message-format=json",
        ]);
        for name in EXAMPLES {
            cargo.args(["--example", name]);
        }
        let out = cargo.output().expect("run cargo build");
        assert!(
            out.status.success(),
            "building the examples failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut built = BTreeMap::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let target = &message["target"];
            if target["kind"][0] == "example" && message["executable"].is_string() {
                let name = target["name"].as_str().expect("a name").to_owned();
                let path = message["executable"].as_str().expect("a path").into();
                built.insert(name, path);
            }
        }
        built
    })
}

/// Runs an example to its end (60 s at most) and returns its stdout lines.
fn run_example(name: &str) -> Vec<String> {
    let path = executables()
        .get(name)
        .unwrap_or_else(|| panic!("example {name} was not built"));
    let mut process = cli_support::run(path, &[]);
    let status = process.wait_exit(Duration::from_secs(60));
    assert!(
        status.success(),
        "{name} failed ({status}): stdout {:#?} stderr {:#?}",
        process.out,
        process.err
    );
    process.out.clone()
}

/// The `text` field of a printed `#SEQ {payload}` line.
fn text_of(line: &str) -> String {
    let (_, json) = line.split_once(' ').expect("#seq payload");
    let json = json.trim_end_matches(" (replayed)");
    let payload: serde_json::Value = serde_json::from_str(json).expect("a JSON payload");
    payload["text"].as_str().expect("a text field").to_owned()
}

#[test]
fn the_tokio_example_prints_the_plain_answer_and_the_events_then_exits() {
    let out = run_example("tokio");
    assert_eq!(out.len(), 5, "{out:#?}");
    assert_eq!(out[0], "echo: hello");
    let texts: Vec<_> = out[1..4].iter().map(|l| text_of(l)).collect();
    assert_eq!(texts, ["event 1", "event 2", "event 3"]);
    assert_eq!(out[4], "closed: Requested");
}

#[test]
fn the_smol_example_prints_the_plain_answer_then_exits() {
    assert_eq!(run_example("smol"), ["echo: hello"]);
}

#[test]
fn the_drive_loop_example_replays_what_was_published_while_away() {
    let out = run_example("drive_loop");
    assert_eq!(out.len(), 7, "{out:#?}");
    let (live, replayed) = (&out[..3], &out[4..]);
    assert!(out[3].starts_with("-- link cut"), "{out:#?}");
    assert!(live.iter().all(|l| !l.ends_with("(replayed)")), "{out:#?}");
    assert!(
        replayed.iter().all(|l| l.ends_with("(replayed)")),
        "{out:#?}"
    );
    let texts: Vec<_> = live.iter().chain(replayed).map(|l| text_of(l)).collect();
    assert_eq!(texts, ["one", "two", "three", "four", "five", "six"]);
    let seqs: Vec<_> = live
        .iter()
        .chain(replayed)
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(seqs, ["#1", "#2", "#3", "#4", "#5", "#6"]);
}

#[test]
fn every_example_is_run_by_this_test() {
    // Cargo's examples: `examples/NAME.rs` and `examples/NAME/main.rs`.
    let mut found: Vec<String> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path())
        .filter_map(|path| match path.extension() {
            Some(ext) if ext == "rs" => Some(path.file_stem()?.to_string_lossy().into_owned()),
            None if path.join("main.rs").is_file() => {
                Some(path.file_name()?.to_string_lossy().into_owned())
            }
            _ => None,
        })
        .collect();
    found.sort();
    let mut run = EXAMPLES.map(str::to_owned).to_vec();
    run.sort();
    assert_eq!(
        found, run,
        "add the new example to EXAMPLES, with a test of its output"
    );
}

/// The markdown files whose code a user may copy: the READMEs (the workspace's and each
/// crate's) and `docs/*.md`.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md"), root().join("core/README.md")];
    for dir in ["adapters", "docs"] {
        let mut found: Vec<_> = std::fs::read_dir(root().join(dir))
            .expect("a directory")
            .map(|e| e.expect("entry").path())
            .map(|p| if p.is_dir() { p.join("README.md") } else { p })
            .filter(|p| p.extension().is_some_and(|e| e == "md") && p.is_file())
            .collect();
        found.sort();
        docs.extend(found);
    }
    docs
}

/// `text` with every ```rust block that follows a marker replaced by the named file; the
/// problems found (a rust block without a marker, an unknown file, a hidden or ignored block).
fn with_examples(text: &str) -> (String, Vec<String>) {
    let (mut out, mut problems) = (String::new(), Vec::new());
    let mut lines = text.split_inclusive('\n').enumerate().peekable();
    let mut wanted: Option<String> = None;
    while let Some((n, line)) = lines.next() {
        out.push_str(line);
        let trimmed = line.trim_end();
        if let Some(rest) = trimmed.strip_prefix(MARKER) {
            wanted = Some(rest.trim_end_matches("-->").trim().to_owned());
            continue;
        }
        if trimmed.starts_with("```rust") {
            if trimmed != "```rust" {
                problems.push(format!("line {}: `{trimmed}`: examples must run", n + 1));
            }
            let Some(file) = wanted.take() else {
                problems.push(format!(
                    "line {}: a rust block without `{MARKER}FILE -->`",
                    n + 1
                ));
                continue;
            };
            let Ok(code) = std::fs::read_to_string(root().join(&file)) else {
                problems.push(format!("line {}: no file {file}", n + 1));
                continue;
            };
            out.push_str(&code);
            // Skip the block's old text up to its closing fence.
            for (_, old) in lines.by_ref() {
                if old.trim_end() == "```" {
                    out.push_str(old);
                    break;
                }
            }
            continue;
        }
        wanted = None;
    }
    (out, problems)
}

#[test]
fn every_rust_block_of_the_readme_and_docs_is_an_example_file() {
    let bless = std::env::var_os("TETHER_BLESS_DOCS").is_some();
    let mut stale = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read");
        let (expected, problems) = with_examples(&text);
        assert!(problems.is_empty(), "{}: {problems:#?}", doc.display());
        if expected != text {
            if bless {
                std::fs::write(&doc, expected).expect("write");
            } else {
                stale.push(doc.display().to_string());
            }
        }
    }
    assert!(
        stale.is_empty(),
        "{stale:?} show an example that differs from its file: \
         run TETHER_BLESS_DOCS=1 cargo test --test examples"
    );
}
