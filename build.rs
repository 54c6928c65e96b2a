//! Records what `--version` and `hss_swr_build_info` report about the build:
//! the git revision and branch, the build user and date, the rustc version
//! and the target platform.
//!
//! Each can be set from outside (a Docker build has no `.git`): the
//! environment variables `HSS_SWR_REVISION`, `HSS_SWR_BRANCH` and
//! `HSS_SWR_BUILD_USER`; the build date follows `SOURCE_DATE_EPOCH` (seconds
//! since 1970, for reproducible builds) and is the current time otherwise.
//! What cannot be found is `unknown`.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    // Run again when the checkout moves (HEAD, or the branch's ref: a commit,
    // a branch switch), wherever git keeps them (a worktree's .git is a file). Only
    // paths that exist are watched: a missing one would rerun this script,
    // and so rebuild the crate with a new build date, on every build.
    println!("cargo:rerun-if-changed=build.rs");
    let mut watched = Vec::new();
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        watched.push(std::path::Path::new(&dir).join("HEAD"));
    }
    if let Some(common) = git(&["rev-parse", "--git-common-dir"]) {
        let common = std::path::Path::new(&common);
        // The branch checked out (refs/heads/NAME); nothing when detached.
        if let Some(branch) =
            git(&["rev-parse", "--symbolic-full-name", "HEAD"]).filter(|r| r.starts_with("refs/"))
        {
            watched.push(common.join(branch));
        }
        watched.push(common.join("packed-refs"));
    }
    for path in watched.iter().filter(|p| p.exists()) {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    for var in [
        "HSS_SWR_REVISION",
        "HSS_SWR_BRANCH",
        "HSS_SWR_BUILD_USER",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let revision = from_env("HSS_SWR_REVISION")
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(unknown);
    let branch = from_env("HSS_SWR_BRANCH")
        .or_else(|| git(&["rev-parse", "--abbrev-ref", "HEAD"]))
        .unwrap_or_else(unknown);
    let build_user = from_env("HSS_SWR_BUILD_USER")
        .or_else(|| {
            let user = from_env("USER").or_else(|| from_env("USERNAME"))?;
            Some(match hostname() {
                Some(host) => format!("{user}@{host}"),
                None => user,
            })
        })
        .unwrap_or_else(unknown);
    let epoch = from_env("SOURCE_DATE_EPOCH")
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64)
        });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    // `rustc 1.95.0 (hash date)` -> `1.95.0`.
    let rust_version = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(unknown);
    let target = std::env::var("TARGET").unwrap_or_else(|_| unknown());
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_else(|_| unknown());
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| unknown());

    println!("cargo:rustc-env=HSS_SWR_REVISION={}", clean(&revision));
    println!("cargo:rustc-env=HSS_SWR_BRANCH={}", clean(&branch));
    println!("cargo:rustc-env=HSS_SWR_BUILD_USER={}", clean(&build_user));
    println!("cargo:rustc-env=HSS_SWR_BUILD_DATE={}", rfc3339(epoch));
    println!(
        "cargo:rustc-env=HSS_SWR_RUST_VERSION={}",
        clean(&rust_version)
    );
    println!("cargo:rustc-env=HSS_SWR_TARGET={}", clean(&target));
    println!(
        "cargo:rustc-env=HSS_SWR_PLATFORM={}/{}",
        clean(&os),
        clean(&go_arch(&arch))
    );
}

fn unknown() -> String {
    "unknown".to_string()
}

fn from_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn hostname() -> Option<String> {
    from_env("HOSTNAME")
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
}

/// One line of printable text, at most 128 characters (it becomes a label).
fn clean(value: &str) -> String {
    value
        .chars()
        .filter(|c| !c.is_control())
        .take(128)
        .collect()
}

/// The architecture as Go (and so Prometheus's `platform`) names it.
fn go_arch(arch: &str) -> String {
    match arch {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
    .to_string()
}

/// `epoch` (seconds since 1970, UTC) as `YYYY-MM-DDThh:mm:ssZ`.
fn rfc3339(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}
