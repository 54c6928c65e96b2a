//! The command line as users meet it: exit codes, one-line errors, `once`
//! writing its output atomically, and no secret in any output.

mod common;

use std::process::{Command, Output};

use common::*;
use hss_swr_exporter::simulator::Faults;

const BIN: &str = env!("CARGO_BIN_EXE_hss-swr-exporter");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("hss-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_typo_in_a_key_is_refused_with_one_line_naming_it() {
    let dir = temp_dir("typo");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        "credentials: {access_key: AK, secret_key: SECRETVALUE}\ntargets:\n  - regoin: cn-north-4\n    project_id: p\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config.file", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("targets[0].regoin: unknown field `regoin`"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRETVALUE"));
    assert!(!stderr.contains("panicked"));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn check_config_accepts_a_valid_file_and_refuses_a_missing_one() {
    let dir = temp_dir("ok");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        "credentials: {access_key: AK, secret_key: SK}\ntargets: [{region: cn-north-4, project_id: p, enterprise_project_ids: ['0', ep-a]}]\n",
    )
    .unwrap();
    let out = run(&["check-config", "--config.file", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "configuration OK: 1 target(s), 6 scope(s), budget 5/1m\n"
    );
    let out = run(&[
        "check-config",
        "--config.file",
        dir.join("nope.yml").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot read config file")
    );
    let out = run(&["check-config"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_exit_with_2() {
    assert_eq!(run(&["--log.level", "loud"]).status.code(), Some(2));
    assert_eq!(run(&["--no-such-flag"]).status.code(), Some(2));
    let out = run(&["--version"]);
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .starts_with(&format!("hss-swr-exporter {}", env!("CARGO_PKG_VERSION")))
    );
}

#[tokio::test]
async fn once_writes_the_exposition_and_reports_failed_scopes() {
    let sim = start_simulator(sim_config(800, 5)).await;
    let dir = temp_dir("once");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        config_yaml(
            &sim.endpoint,
            "",
            "    enterprise_project_ids: ['0', ep-secret]\n",
        ),
    )
    .unwrap();
    let output = dir.join("hss.prom");
    let args: Vec<String> = [
        "once",
        "--config.file",
        config.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--log.level",
        "debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let first = args.clone();
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&first).output().unwrap())
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exposition = Exposition::parse(&std::fs::read_to_string(&output).unwrap());
    let want = expected(&sim.sim.images(), "private_image", "0");
    assert_scope_matches(&exposition, "test", "0", "private_image", &want);
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        2,
        "no temporary file left behind"
    );

    sim.sim.set_faults(Faults {
        forbidden_eps: vec!["ep-secret".into()],
        ..Faults::default()
    });
    let out = tokio::task::spawn_blocking(move || Command::new(BIN).args(&args).output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a failed scope makes once fail");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("level=warn msg=\"lane run failed"),
        "{stderr}"
    );
    assert!(stderr.contains("HSS.0013"), "{stderr}");
    let exposition = Exposition::parse(&std::fs::read_to_string(&output).unwrap());
    assert_eq!(
        exposition.value(
            "hss_swr_up",
            &[
                ("enterprise_project_id", "ep-secret"),
                ("image_type", "shared_image"),
                ("lane", "sweep"),
            ]
        ),
        0.0
    );
    // The secret key never reaches logs or metrics, even at debug level.
    assert!(!stderr.contains(SK));
    assert!(!exposition.text.contains(SK));
    std::fs::remove_dir_all(dir).unwrap();
}
