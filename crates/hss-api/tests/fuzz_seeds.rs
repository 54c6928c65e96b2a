//! Replays the page fuzz target's seeds (`fuzz/seeds/page`) and, when present,
//! its local corpus (`fuzz/corpus/page`) through the fuzz target's own checks
//! (`fuzz/fuzz_targets/checks.rs`, compiled in here), so every test run holds
//! the parser to what fuzzing found, without building libFuzzer.

#[path = "../../../fuzz/fuzz_targets/checks.rs"]
mod checks;

use std::path::Path;

fn inputs(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn the_fuzz_seeds_pass_the_fuzz_targets_checks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let seeds = inputs(&root.join("seeds/page"));
    assert!(!seeds.is_empty(), "no seeds in {}", root.display());
    for input in seeds.iter().chain(&inputs(&root.join("corpus/page"))) {
        let data = std::fs::read(input).unwrap();
        let replay = std::panic::catch_unwind(|| checks::check(&data));
        assert!(
            replay.is_ok(),
            "{} breaks the parser's promises",
            input.display()
        );
    }
}

#[test]
fn a_page_with_rows_and_stray_entries_and_a_non_page_pass_the_checks() {
    checks::check(br#"{"total_num": 1, "data_list": [{"id": 1}, 3]}"#);
    checks::check(b"not json");
}
