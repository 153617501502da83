//! `docs/ARCHITECTURE.md` keeps up with the code: it names every crate of the workspace and every
//! top-level module of each (a file `src/NAME.rs` or a directory `src/NAME/`), so a new module
//! cannot land without its line in the code map.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The paths of a `key = ["a", "b"]` line of the root manifest.
fn listed(manifest: &str, key: &str) -> Vec<std::path::PathBuf> {
    let list = manifest
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("a `{key}` line"));
    list.trim_matches(|c| c == '[' || c == ']')
        .split(',')
        .map(|m| root().join(m.trim().trim_matches('"')))
        .collect()
}

/// The workspace's packages and the crates kept out of it that have a `src/` (the Python
/// package's native module): `(name, directory)`, read from the manifests.
fn packages() -> Vec<(String, std::path::PathBuf)> {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut dirs = vec![root().to_path_buf()];
    dirs.extend(listed(&manifest, "members = "));
    dirs.extend(
        listed(&manifest, "exclude = ")
            .into_iter()
            .filter(|dir| dir.join("src").is_dir()),
    );
    dirs.into_iter()
        .map(|dir| {
            let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).expect("a manifest");
            let name = manifest
                .lines()
                .find_map(|l| l.strip_prefix("name = "))
                .expect("a package name")
                .trim_matches('"')
                .to_owned();
            (name, dir)
        })
        .collect()
}

/// The spans between backticks.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

#[test]
fn the_architecture_notes_name_every_crate_and_top_level_module() {
    let notes = std::fs::read_to_string(root().join("docs/ARCHITECTURE.md")).expect("read");
    let spans = code_spans(&notes);
    let mut missing = Vec::new();
    for (crate_name, dir) in packages() {
        if !spans.contains(&crate_name.as_str()) {
            missing.push(format!("the crate `{crate_name}`"));
        }
        for entry in std::fs::read_dir(dir.join("src")).expect("src/") {
            let path = entry.expect("entry").path();
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let module = if path.is_dir() {
                format!("{file}/")
            } else if file.ends_with(".rs") && file != "tests.rs" {
                file
            } else {
                continue;
            };
            // `src/cli/` of the root package is written with its `src/` prefix.
            let named = spans.iter().any(|s| {
                s.split([',', ' ']).any(|part| {
                    part.starts_with(&module) || part.starts_with(&format!("src/{module}"))
                })
            });
            if !named {
                missing.push(format!("{crate_name}'s module `{module}`"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md does not name {missing:#?}"
    );
}

/// The core is the protocol only: the simulator, the fuzz bodies and proptest live in
/// `tether-testkit` (`.ci/run` also checks `cargo tree -p tether-core` for proptest).
#[test]
fn the_core_exports_no_test_machinery() {
    let lib = std::fs::read_to_string(root().join("core/src/lib.rs")).expect("core/src/lib.rs");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';'))
        .collect();
    for machinery in ["fuzz", "sim", "testing"] {
        assert!(
            !modules.contains(&machinery),
            "tether_core exports `{machinery}`: {modules:?}"
        );
    }
    let manifest =
        std::fs::read_to_string(root().join("core/Cargo.toml")).expect("core/Cargo.toml");
    let normal = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] table");
    assert!(!normal.contains("proptest"), "proptest in {normal}");
    assert!(
        !manifest.contains("sim = "),
        "a `sim` feature in core/Cargo.toml"
    );
}
