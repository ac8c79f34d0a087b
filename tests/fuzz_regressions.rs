//! Every input a fuzz target once failed on, pinned in `testdata/fuzz-regressions/<target>/`,
//! through the very body the fuzzer runs (`fuzz/fuzz_targets/common.rs`): regressions are
//! ordinary tests, no nightly or cargo-fuzz needed.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::Path;

#[test]
fn every_pinned_fuzz_finding_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/fuzz-regressions");
    let mut ran = 0;
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        let target = dir.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            dir.is_dir() && common::TARGETS.contains(&target.as_str()),
            "{}: expected a directory named after a fuzz target ({:?})",
            dir.display(),
            common::TARGETS
        );
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let data = std::fs::read(&file).unwrap();
            eprintln!("{target}: {}", file.display());
            common::run_target(&target, &data);
            ran += 1;
        }
    }
    assert!(ran > 0, "no pinned findings under {}", root.display());
}
