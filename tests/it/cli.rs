//! The command line as users meet it: exit codes, one-line errors, `once`
//! writing its output atomically, and no secret in any output.

use std::process::{Command, Output};

use crate::common::*;
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
}

/// `--version` as the Prometheus tools print it: name, version, branch and
/// revision on the first line, then the build and the platform.
#[test]
fn version_is_printed_in_the_prometheus_form() {
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 5, "{stdout}");
    let first = format!(
        "hss-swr-exporter, version {} (branch: ",
        env!("CARGO_PKG_VERSION")
    );
    assert!(lines[0].starts_with(&first), "{stdout}");
    assert!(
        lines[0].contains(", revision: ") && lines[0].ends_with(')'),
        "{stdout}"
    );
    for (line, label) in
        lines[1..]
            .iter()
            .zip(["build user:", "build date:", "rust version:", "platform:"])
    {
        assert!(line.starts_with(&format!("  {label}")), "{stdout}");
    }
    let date = lines[2].trim_start_matches("  build date:").trim();
    assert!(
        date.len() == 20 && date.ends_with('Z') && date.as_bytes()[10] == b'T',
        "build date in RFC 3339 (UTC): {date}"
    );
    assert!(lines[3].contains("rustc 1."), "{stdout}");
    assert!(
        lines[4]
            .trim_start_matches("  platform:")
            .trim()
            .contains('/'),
        "{stdout}"
    );
    assert!(out.stderr.is_empty());
}

fn help_of(args: &[&str]) -> String {
    let out = run(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// Each command's `--help` lists its own flags: the daemon's web flags are
/// not offered by `once`, `check-config` or `simulate`.
#[test]
fn each_command_lists_only_its_own_flags() {
    let daemon = help_of(&["--help"]);
    for flag in [
        "--config.file",
        "--web.listen-address",
        "--web.telemetry-path",
        "--web.config.file",
        "--web.enable-lifecycle",
        "--web.max-connections",
        "--log.level",
        "--log.format",
        "--version",
    ] {
        assert!(
            daemon.contains(flag),
            "daemon --help lacks {flag}:\n{daemon}"
        );
    }
    for command in ["once", "check-config"] {
        let help = help_of(&[command, "--help"]);
        assert!(!help.contains("--web."), "{command} --help:\n{help}");
        for flag in ["--config.file", "--log.level", "--log.format"] {
            assert!(
                help.contains(flag),
                "{command} --help lacks {flag}:\n{help}"
            );
        }
    }
    assert!(help_of(&["once", "--help"]).contains("--output"));
    let simulate = help_of(&["simulate", "--help"]);
    assert!(!simulate.contains("--web."), "{simulate}");
    assert!(!simulate.contains("--config.file"), "{simulate}");
    assert!(simulate.contains("--listen"), "{simulate}");
    let demo = help_of(&["demo", "--help"]);
    assert!(demo.contains("--web.listen-address"), "{demo}");
    assert!(demo.contains("--web.config.file"), "{demo}");
    assert!(!demo.contains("--web.enable-lifecycle"), "{demo}");
    assert!(!demo.contains("--config.file"), "{demo}");
}

/// A daemon flag given to a command that has no use for it is refused
/// (exit 2) instead of being ignored; flags a command does have may still
/// be written before its name, as earlier releases allowed.
#[test]
fn a_daemon_flag_on_another_command_is_refused() {
    for args in [
        &["once", "--web.listen-address", ":9999"][..],
        &["--web.enable-lifecycle", "check-config"],
        &["--web.max-connections=4", "once"],
        &["simulate", "--config.file", "x.yml"],
        &["demo", "--web.enable-lifecycle"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        // Before the command's name, the exporter's message; after it,
        // clap's own.
        assert!(
            stderr.contains("is not a flag of `") || stderr.contains("unexpected argument"),
            "{args:?}: {stderr}"
        );
        let flag = args.iter().find(|a| a.starts_with("--")).unwrap();
        let flag = flag.split('=').next().unwrap();
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let dir = temp_dir("before");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        "credentials: {access_key: AK, secret_key: SK}\ntargets: [{region: cn-north-4, project_id: p}]\n",
    )
    .unwrap();
    let out = run(&["--config.file", path.to_str().unwrap(), "check-config"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// An invalid configuration at start is logged as one line in the chosen
/// `--log.format`, with level and message, and the exit code stays 2: for
/// the daemon and for the commands alike.
#[test]
fn a_fatal_configuration_error_follows_the_log_format() {
    let dir = temp_dir("fatal");
    let path = dir.join("config.yml");
    std::fs::write(
        &path,
        "credentials: {access_key: AK, secret_key: SECRETVALUE}\ntargets:\n  - regoin: cn-north-4\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let daemon = [
        "--config.file",
        config,
        "--web.listen-address",
        "127.0.0.1:0",
    ];
    let check = ["check-config", "--config.file", config];
    for args in [&daemon[..], &check[..]] {
        let json: Vec<&str> = args.iter().copied().chain(["--log.format=json"]).collect();
        let out = run(&json);
        assert_eq!(out.status.code(), Some(2), "{json:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        let line: serde_json::Value = serde_json::from_str(stderr.trim_end())
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {stderr}"));
        assert_eq!(line["level"], "error", "{stderr}");
        assert_eq!(line["msg"], "invalid configuration", "{stderr}");
        assert!(
            line["error"]
                .as_str()
                .unwrap()
                .contains("targets[0].regoin: unknown field `regoin`"),
            "{stderr}"
        );
        assert_eq!(line["file"], config, "{stderr}");
        assert!(line["ts"].is_string(), "{stderr}");
        assert!(!stderr.contains("SECRETVALUE"));

        let logfmt: Vec<&str> = args
            .iter()
            .copied()
            .chain(["--log.format=logfmt"])
            .collect();
        let out = run(&logfmt);
        assert_eq!(out.status.code(), Some(2), "{logfmt:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("ts="), "{stderr}");
        assert!(
            stderr.contains(" level=error msg=\"invalid configuration\" "),
            "{stderr}"
        );
        assert!(
            stderr.contains("error=\"targets[0].regoin: unknown field `regoin`"),
            "{stderr}"
        );
    }
    // No --config.file, and an invalid web configuration: logged the same way.
    let out = run(&["--log.format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let line: serde_json::Value = serde_json::from_str(stderr.trim_end()).unwrap();
    assert_eq!(line["level"], "error");
    assert_eq!(line["msg"], "--config.file is required");
    let web = dir.join("web.yml");
    std::fs::write(&web, "tls_server_config: {cert_file: a.pem}\n").unwrap();
    let out = run(&[
        "--config.file",
        config,
        "--web.config.file",
        web.to_str().unwrap(),
        "--log.format=json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let line: serde_json::Value = serde_json::from_str(stderr.trim_end()).unwrap();
    assert_eq!(line["msg"], "invalid web configuration", "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
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
    // The lanes' intervals (defaults 5m and 1m) and the build are exported.
    assert_eq!(
        exposition.value("hss_swr_poll_interval_seconds", &[("lane", "sweep")]),
        300.0
    );
    assert_eq!(
        exposition.value("hss_swr_poll_interval_seconds", &[("lane", "malicious")]),
        60.0
    );
    assert_eq!(
        exposition.value(
            "hss_swr_build_info",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("rustversion", env!("HSS_SWR_RUST_VERSION")),
                ("target", env!("HSS_SWR_TARGET")),
                ("branch", env!("HSS_SWR_BRANCH")),
                ("revision", env!("HSS_SWR_REVISION")),
            ]
        ),
        1.0
    );
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// One daemon with every credential kind the simulator can check, at debug
/// level: no secret appears in any log line, `/status`, `/metrics` or the
/// landing page; and SIGHUP reloads the configuration file.
#[tokio::test]
async fn no_secret_reaches_any_output_and_sighup_reloads() {
    use hss_swr_exporter::simulator::IamUser;
    const IAM_PASSWORD: &str = "iam-password-SECRET-1";
    const STATIC_TOKEN: &str = "static-token-SECRET-2";
    let mut config = sim_config(600, 3);
    config.iam_users = vec![IamUser::new("acme", "exporter", IAM_PASSWORD)];
    config.tokens = vec![STATIC_TOKEN.to_string()];
    let sim = start_simulator(config).await;
    let dir = temp_dir("secrets");
    std::fs::write(dir.join("token"), format!("{STATIC_TOKEN}\n")).unwrap();
    let config_path = dir.join("config.yml");
    let yaml = |with_token_target: bool| {
        let mut text = format!(
            "api_rate_limit: 1000/1s\nmalicious_interval: 300ms\npoll_interval: {poll}\n\
             credentials: {{access_key: {AK}, secret_key: {SK}}}\ntargets:\n\
             - {{name: aksk, region: cn-north-4, project_id: {PROJECT}, endpoint: '{e}', image_types: [private_image]}}\n\
             - {{name: iam, region: cn-north-4, endpoint: '{e}', iam_endpoint: '{e}', image_types: [shared_image],\n   \
                credentials: {{iam: {{domain_name: acme, user_name: exporter, password: {IAM_PASSWORD}}}}}}}\n",
            e = sim.endpoint,
            poll = if with_token_target { "1s" } else { "2s" },
        );
        if with_token_target {
            text.push_str(&format!(
                "- {{name: token, region: cn-north-4, project_id: {PROJECT}, endpoint: '{}', image_types: [instance_image],\n   \
                 credentials: {{token_file: {}}}}}\n",
                sim.endpoint,
                dir.join("token").display()
            ));
        }
        text
    };
    std::fs::write(&config_path, yaml(true)).unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "--config.file",
            config_path.to_str().unwrap(),
            "--web.listen-address",
            &format!("127.0.0.1:{port}"),
            "--log.level",
            "debug",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let url = format!("http://127.0.0.1:{port}");
    let client = http();
    let mut ready = false;
    for _ in 0..600 {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status() == 200
        {
            ready = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let mut bodies = Vec::new();
    for path in ["/status", "/metrics", "/"] {
        bodies.push(
            client
                .get(format!("{url}{path}"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        );
    }
    // SIGHUP: the token target goes away.
    std::fs::write(&config_path, yaml(false)).unwrap();
    signal(pid, "HUP");
    let mut reloaded = false;
    for _ in 0..300 {
        let status: serde_json::Value = client
            .get(format!("{url}/status"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["scopes"].as_array().unwrap().len() == 2 {
            reloaded = true;
            bodies.push(status.to_string());
            bodies.push(
                client
                    .get(format!("{url}/metrics"))
                    .send()
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap(),
            );
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    signal(pid, "TERM");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(ready, "the daemon became ready:\n{stderr}");
    assert!(reloaded, "SIGHUP reloaded the configuration:\n{stderr}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "SIGTERM ends the daemon cleanly"
    );
    assert!(
        stderr.contains("configuration reloaded: 2 target(s), 2 scope(s)"),
        "{stderr}"
    );
    assert!(stderr.lines().count() > 10, "debug logging produced lines");
    // The lanes' intervals follow the configuration: poll_interval 1s, then
    // 2s after the reload.
    let interval = |body: &str, lane: &str| {
        Exposition::parse(body).value("hss_swr_poll_interval_seconds", &[("lane", lane)])
    };
    assert_eq!(interval(&bodies[1], "sweep"), 1.0);
    assert_eq!(interval(&bodies[1], "malicious"), 0.3);
    assert_eq!(interval(&bodies[4], "sweep"), 2.0);
    assert_eq!(interval(&bodies[4], "malicious"), 0.3);
    for secret in [SK, IAM_PASSWORD, STATIC_TOKEN] {
        assert!(!stderr.contains(secret), "a log line shows a secret");
        for body in &bodies {
            assert!(!body.contains(secret), "an endpoint shows a secret");
        }
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_invalid_web_config_is_refused_at_start() {
    let dir = temp_dir("webcfg");
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        "credentials: {access_key: AK, secret_key: SK}\ntargets: [{region: cn-north-4, project_id: p}]\n",
    )
    .unwrap();
    let web = dir.join("web.yml");
    std::fs::write(
        &web,
        "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
    )
    .unwrap();
    let out = run(&[
        "--config.file",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
        "--web.listen-address",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("invalid web configuration"), "{stderr}");
    assert!(stderr.contains("tls_server_config.cert_file"), "{stderr}");
    std::fs::write(&web, "basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n").unwrap();
    let out = run(&[
        "--config.file",
        config.to_str().unwrap(),
        "--web.config.file",
        web.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}
