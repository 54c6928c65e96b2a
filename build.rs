//! Records the git revision for `hss_swr_build_info` and `--version`.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    println!("cargo:rerun-if-env-changed=HSS_SWR_REVISION");
    if let Ok(revision) = std::env::var("HSS_SWR_REVISION") {
        println!("cargo:rustc-env=HSS_SWR_REVISION={revision}");
        return;
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    let revision = revision.unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=HSS_SWR_REVISION={revision}");
}
