//! Puts the build's git commit into `--version` (as `H5PAY_COMMIT`): the
//! variable itself when the build sets it (an image built from a context
//! without `.git`), else `git rev-parse`, else "unknown".

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=H5PAY_COMMIT");
    let commit = std::env::var("H5PAY_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=H5PAY_COMMIT={}", commit.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

fn git_commit() -> Option<String> {
    // Run again when HEAD moves: a checkout rewrites HEAD, a commit the ref
    // HEAD names (loose, or packed). Only existing paths are named: a
    // missing one would make cargo run this script on every build.
    let git_dir = PathBuf::from(git(&["rev-parse", "--git-dir"])?);
    let common = git(&["rev-parse", "--git-common-dir"]).map(PathBuf::from);
    let mut watched = vec![git_dir.join("HEAD")];
    if let Some(common) = &common {
        watched.push(common.join("packed-refs"));
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watched.push(common.join(head_ref));
        }
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    git(&["rev-parse", "--short=12", "HEAD"])
}
