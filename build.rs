//! Records the git commit the binary was built from, for `rollbackd --version`. Outside a git
//! checkout (a source tarball, an image build) it says `unknown`, unless `ROLLBACKD_COMMIT` is set.

fn main() {
    println!("cargo:rerun-if-env-changed=ROLLBACKD_COMMIT");
    // An image build has no .git: it passes the commit in.
    if let Ok(commit) = std::env::var("ROLLBACKD_COMMIT")
        && !commit.trim().is_empty()
    {
        println!("cargo:rustc-env=ROLLBACKD_COMMIT={}", commit.trim());
        return;
    }
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=ROLLBACKD_COMMIT={commit}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs/heads");
}
