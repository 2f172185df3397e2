//! The workspace's two exceptions to "no unsafe code": the lint is `deny` rather than `forbid`
//! so that proxy/src/heap_trim.rs can call `malloc_trim` and proxy/src/listener/defer_accept.rs can
//! set `TCP_DEFER_ACCEPT` (no safe wrapper on stable Rust). Any other file that allows it, or
//! writes an `unsafe` block, fails here.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy();
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
fn memory_rs_and_defer_accept_rs_are_the_only_files_with_unsafe_code() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 50, "found only {} files", files.len());
    let allowed = [
        root.join("proxy/src/heap_trim.rs"),
        root.join("proxy/src/listener/defer_accept.rs"),
    ];
    // Spelled apart so that this file does not match itself.
    let markers = [
        concat!("allow(", "unsafe_code)"),
        concat!("unsafe", " {"),
        concat!("unsafe", " fn"),
        concat!("unsafe", " impl"),
    ];
    let mut offenders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let found: Vec<_> = markers.iter().filter(|m| text.contains(*m)).collect();
        if allowed.contains(file) {
            assert_eq!(found.len(), 2, "{}: one allow, one block", file.display());
        } else if !found.is_empty() {
            offenders.push(format!("{}: {found:?}", file.display()));
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}
