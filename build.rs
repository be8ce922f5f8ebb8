fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/proxrt/v1/admin.proto");
    tonic_prost_build::configure().compile_protos(&["proto/proxrt/v1/admin.proto"], &["proto"])?;
    git_commit();
    Ok(())
}

/// `PROXRT_GIT_COMMIT` for the build-info metric: taken from the environment (a package
/// built from a tarball), else from git when building a checkout, else left unset.
fn git_commit() {
    println!("cargo:rerun-if-env-changed=PROXRT_GIT_COMMIT");
    if let Ok(c) = std::env::var("PROXRT_GIT_COMMIT") {
        println!("cargo:rustc-env=PROXRT_GIT_COMMIT={c}");
        return;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_owned())
    };
    let Some(commit) = git(&["rev-parse", "--short=12", "HEAD"]) else {
        return;
    };
    // HEAD's reflog changes on every commit, checkout and reset (also in a worktree).
    if let Some(log) = git(&["rev-parse", "--git-path", "logs/HEAD"]) {
        if std::path::Path::new(&log).exists() {
            println!("cargo:rerun-if-changed={log}");
        }
    }
    // No "-dirty": edits do not rerun this script, so it would be stale either way.
    println!("cargo:rustc-env=PROXRT_GIT_COMMIT={commit}");
}
