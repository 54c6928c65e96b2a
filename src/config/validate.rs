//! From the raw file schema to the validated [`Config`]: defaults applied,
//! every value checked, secret files read.
//!
//! Place in the data flow: the last step of `config`. [`RawConfig::validate`]
//! fills in the defaults (the `DEFAULT_*` constants and the endpoint tables of
//! `mod.rs`), checks ranges, durations, URLs, names and which credentials go
//! together, and reads `*_file` secrets relative to the config file's
//! directory. Each refusal is a [`ConfigError::Invalid`] that names the key
//! (`targets[0].credentials.secret_key`) and the reason, never a secret.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::schema::{DurationValue, RawConfig, RawCredentials, RawIam, RawTarget};
use super::*;

impl DurationValue {
    fn resolve(&self, key: &str) -> Result<Duration, ConfigError> {
        match self {
            Self::Number(0) => Ok(Duration::ZERO),
            Self::Number(n) => Err(ConfigError::invalid(
                key,
                format!("{n} has no unit; write a duration such as {n}s or {n}m"),
            )),
            Self::Text(text) => humantime::parse_duration(text.trim()).map_err(|e| {
                ConfigError::invalid(
                    key,
                    format!("{text:?} is not a duration (like 30s or 5m): {e}"),
                )
            }),
        }
    }
}

fn duration_or(
    value: &Option<DurationValue>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.as_ref().map_or(Ok(default), |v| v.resolve(key))
}

fn positive(value: Duration, key: &str) -> Result<Duration, ConfigError> {
    if value.is_zero() {
        Err(ConfigError::invalid(key, "must be longer than 0"))
    } else {
        Ok(value)
    }
}

fn resolve_path(base_dir: &Path, value: &str) -> PathBuf {
    let path = Path::new(value);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

fn read_secret_file(base_dir: &Path, value: &str, key: &str) -> Result<Secret, ConfigError> {
    let path = resolve_path(base_dir, value);
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let secret = text.trim_end_matches(['\r', '\n']).to_string();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(secret))
}

fn parse_url(value: &str, key: &str) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| ConfigError::invalid(key, format!("{value:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::invalid(
            key,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        ));
    }
    Ok(url)
}

impl RawCredentials {
    fn validate(&self, key: &str, base_dir: &Path) -> Result<CredentialsConfig, ConfigError> {
        let aksk = self.access_key.is_some()
            || self.secret_key.is_some()
            || self.secret_key_file.is_some()
            || self.security_token.is_some()
            || self.security_token_file.is_some();
        let kinds = [
            aksk,
            self.token_file.is_some(),
            self.iam.is_some(),
            self.metadata.is_some(),
        ];
        if kinds.iter().filter(|k| **k).count() > 1 {
            return Err(ConfigError::invalid(
                key,
                "choose one kind of credentials: access_key/secret_key, token_file, iam or metadata",
            ));
        }
        if let Some(iam) = &self.iam {
            return iam.validate(&format!("{key}.iam"), base_dir);
        }
        if let Some(metadata) = &self.metadata {
            let endpoint = metadata
                .endpoint
                .as_deref()
                .unwrap_or(crate::hss::auth::metadata::DEFAULT_ENDPOINT);
            return Ok(CredentialsConfig::Metadata {
                endpoint: parse_url(endpoint, &format!("{key}.metadata.endpoint"))?,
            });
        }
        match (&self.token_file, aksk) {
            (Some(_), true) => Err(ConfigError::invalid(
                key,
                "token_file and access_key/secret_key are exclusive; choose one",
            )),
            (Some(path), false) => {
                if path.trim().is_empty() {
                    return Err(ConfigError::invalid(
                        format!("{key}.token_file"),
                        "is empty",
                    ));
                }
                let path = resolve_path(base_dir, path);
                std::fs::metadata(&path).map_err(|e| {
                    ConfigError::invalid(
                        format!("{key}.token_file"),
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?;
                Ok(CredentialsConfig::TokenFile { path })
            }
            (None, false) => Err(ConfigError::invalid(
                key,
                "no credentials: set access_key and secret_key (or secret_key_file), token_file, iam or metadata",
            )),
            (None, true) => {
                let access_key = match self.access_key.as_deref().map(str::trim) {
                    Some(ak) if !ak.is_empty() => ak.to_string(),
                    _ => {
                        return Err(ConfigError::invalid(
                            format!("{key}.access_key"),
                            "is required with secret_key and must not be empty",
                        ));
                    }
                };
                let secret_key = match (&self.secret_key, &self.secret_key_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            key,
                            "secret_key and secret_key_file are exclusive; choose one",
                        ));
                    }
                    (Some(sk), None) if !sk.is_empty() => Secret::new(sk.clone()),
                    (Some(_), None) => {
                        return Err(ConfigError::invalid(
                            format!("{key}.secret_key"),
                            "is empty",
                        ));
                    }
                    (None, Some(file)) => {
                        read_secret_file(base_dir, file, &format!("{key}.secret_key_file"))?
                    }
                    (None, None) => {
                        return Err(ConfigError::invalid(
                            format!("{key}.secret_key"),
                            "is required with access_key (or set secret_key_file)",
                        ));
                    }
                };
                let security_token = match (&self.security_token, &self.security_token_file) {
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            key,
                            "security_token and security_token_file are exclusive; choose one",
                        ));
                    }
                    (Some(token), None) if !token.is_empty() => Some(Secret::new(token.clone())),
                    (Some(_), None) => None,
                    (None, Some(file)) => Some(read_secret_file(
                        base_dir,
                        file,
                        &format!("{key}.security_token_file"),
                    )?),
                    (None, None) => None,
                };
                Ok(CredentialsConfig::AkSk {
                    access_key,
                    secret_key,
                    security_token,
                })
            }
        }
    }
}

impl RawIam {
    fn validate(&self, key: &str, base_dir: &Path) -> Result<CredentialsConfig, ConfigError> {
        let required = |value: &Option<String>, name: &str| match value.as_deref().map(str::trim) {
            Some(v) if !v.is_empty() => Ok(v.to_string()),
            _ => Err(ConfigError::invalid(
                format!("{key}.{name}"),
                "is required for IAM tokens",
            )),
        };
        let domain_name = required(&self.domain_name, "domain_name")?;
        let user_name = required(&self.user_name, "user_name")?;
        let password = match (&self.password, &self.password_file) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    key,
                    "password and password_file are exclusive; choose one",
                ));
            }
            (Some(p), None) if !p.is_empty() => Secret::new(p.clone()),
            (Some(_), None) => {
                return Err(ConfigError::invalid(format!("{key}.password"), "is empty"));
            }
            (None, Some(file)) => {
                read_secret_file(base_dir, file, &format!("{key}.password_file"))?
            }
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.password"),
                    "is required for IAM tokens (or set password_file)",
                ));
            }
        };
        Ok(CredentialsConfig::Iam {
            domain_name,
            user_name,
            password,
        })
    }
}

impl RawConfig {
    /// Applies defaults and checks every value.
    pub fn validate(self, base_dir: &Path) -> Result<Config, ConfigError> {
        let api_rate_limit = match &self.api_rate_limit {
            Some(DurationValue::Text(text)) => text
                .parse()
                .map_err(|reason| ConfigError::invalid("api_rate_limit", reason))?,
            Some(DurationValue::Number(n)) => {
                return Err(ConfigError::invalid(
                    "api_rate_limit",
                    format!("{n} is not of the form CALLS/WINDOW, like 5/1m"),
                ));
            }
            None => DEFAULT_API_RATE_LIMIT,
        };
        let malicious_interval = duration_or(
            &self.malicious_interval,
            "malicious_interval",
            DEFAULT_MALICIOUS_INTERVAL,
        )?;
        let poll_interval = positive(
            duration_or(&self.poll_interval, "poll_interval", DEFAULT_POLL_INTERVAL)?,
            "poll_interval",
        )?;
        let changes_interval = duration_or(
            &self.changes_interval,
            "changes_interval",
            DEFAULT_CHANGES_INTERVAL,
        )?;
        let changes_overlap = duration_or(
            &self.changes_overlap,
            "changes_overlap",
            DEFAULT_CHANGES_OVERLAP,
        )?;
        if changes_overlap > Duration::from_secs(24 * 3600) {
            return Err(ConfigError::invalid(
                "changes_overlap",
                "must be at most 24h: every round asks again for everything changed within it",
            ));
        }
        let request_timeout = positive(
            duration_or(
                &self.request_timeout,
                "request_timeout",
                DEFAULT_REQUEST_TIMEOUT,
            )?,
            "request_timeout",
        )?;
        let stale_after = positive(
            duration_or(&self.stale_after, "stale_after", DEFAULT_STALE_AFTER)?,
            "stale_after",
        )?;
        let page_size = self.page_size.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&page_size) {
            return Err(ConfigError::invalid(
                "page_size",
                format!("{page_size} is outside 1..={MAX_PAGE_SIZE}, the range the API accepts"),
            ));
        }
        let concurrency = self.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
        if concurrency == 0 {
            return Err(ConfigError::invalid("concurrency", "must be at least 1"));
        }
        let max_retries = self.max_retries.unwrap_or(DEFAULT_MAX_RETRIES);
        if max_retries > 20 {
            return Err(ConfigError::invalid(
                "max_retries",
                format!("{max_retries} is more than 20; every retry spends the call budget"),
            ));
        }
        let max_response_bytes = self
            .max_response_bytes
            .unwrap_or(DEFAULT_MAX_RESPONSE_BYTES);
        if max_response_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_response_bytes",
                "must be at least 1024 bytes",
            ));
        }
        let max_namespaces = self.max_namespaces.unwrap_or(DEFAULT_MAX_NAMESPACES);
        if !(1..=MAX_MAX_NAMESPACES).contains(&max_namespaces) {
            return Err(ConfigError::invalid(
                "max_namespaces",
                format!("{max_namespaces} is outside 1..={MAX_MAX_NAMESPACES}"),
            ));
        }
        let state_file = self
            .state_file
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .map(|s| resolve_path(base_dir, s));

        let Some(raw_targets) = self.targets else {
            return Err(ConfigError::invalid(
                "targets",
                "at least one target is required",
            ));
        };
        if raw_targets.is_empty() {
            return Err(ConfigError::invalid(
                "targets",
                "at least one target is required",
            ));
        }
        let mut targets = Vec::with_capacity(raw_targets.len());
        let mut names = BTreeSet::new();
        for (i, raw) in raw_targets.into_iter().enumerate() {
            let key = format!("targets[{i}]");
            let target = raw.validate(&key, base_dir, self.credentials.as_ref())?;
            if !names.insert(target.name.clone()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    format!(
                        "target name {:?} is used twice; names must be unique",
                        target.name
                    ),
                ));
            }
            targets.push(target);
        }

        Ok(Config {
            api_rate_limit,
            malicious_interval,
            poll_interval,
            changes_interval,
            changes_overlap,
            request_timeout,
            page_size,
            concurrency,
            max_retries,
            stale_after,
            image_metrics: self.image_metrics.unwrap_or(false),
            max_image_series: self.max_image_series.unwrap_or(DEFAULT_MAX_IMAGE_SERIES),
            max_namespaces,
            state_file,
            max_response_bytes,
            targets,
        })
    }
}

fn non_empty(value: Option<&str>, key: &str) -> Result<Option<String>, ConfigError> {
    match value.map(str::trim) {
        Some("") => Err(ConfigError::invalid(key, "must not be empty")),
        Some(v) => Ok(Some(v.to_string())),
        None => Ok(None),
    }
}

impl RawTarget {
    fn validate(
        self,
        key: &str,
        base_dir: &Path,
        default_credentials: Option<&RawCredentials>,
    ) -> Result<Target, ConfigError> {
        let region =
            non_empty(self.region.as_deref(), &format!("{key}.region"))?.ok_or_else(|| {
                ConfigError::invalid(format!("{key}.region"), "is required, e.g. cn-north-4")
            })?;
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                format!("{key}.region"),
                format!("{region:?} is not a region id such as cn-north-4"),
            ));
        }
        let name = non_empty(self.name.as_deref(), &format!("{key}.name"))?
            .unwrap_or_else(|| region.clone());
        let project_id = non_empty(self.project_id.as_deref(), &format!("{key}.project_id"))?;
        if let Some(project_id) = &project_id
            && !project_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::invalid(
                format!("{key}.project_id"),
                format!("{project_id:?} is not a project id"),
            ));
        }
        let endpoint = parse_url(
            self.endpoint
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| default_endpoint(&region))
                .as_str(),
            &format!("{key}.endpoint"),
        )?;
        let iam_endpoint = parse_url(
            self.iam_endpoint
                .as_deref()
                .map(str::to_string)
                .unwrap_or_else(|| default_iam_endpoint(&region))
                .as_str(),
            &format!("{key}.iam_endpoint"),
        )?;

        let enterprise_project_ids = match self.enterprise_project_ids {
            None => vec![ALL_GRANTED_EPS.to_string()],
            Some(ids) if ids.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{key}.enterprise_project_ids"),
                    "must list at least one enterprise project (0 is the default one)",
                ));
            }
            Some(ids) => {
                let mut seen = BTreeSet::new();
                let mut out = Vec::with_capacity(ids.len());
                for (j, id) in ids.into_iter().enumerate() {
                    let k = format!("{key}.enterprise_project_ids[{j}]");
                    let id = id.trim().to_string();
                    if id.is_empty() || id.len() > 256 {
                        return Err(ConfigError::invalid(k, "must be 1 to 256 characters"));
                    }
                    if !seen.insert(id.clone()) {
                        return Err(ConfigError::invalid(k, format!("{id:?} is listed twice")));
                    }
                    out.push(id);
                }
                out
            }
        };

        let api = match self.api.as_deref() {
            None => ListingApi::default(),
            Some(text) => text
                .trim()
                .parse()
                .map_err(|reason| ConfigError::invalid(format!("{key}.api"), reason))?,
        };
        let image_types = match self.image_types {
            None => vec![ImageType::Private, ImageType::Shared, ImageType::Instance],
            Some(types) if types.is_empty() => {
                return Err(ConfigError::invalid(
                    format!("{key}.image_types"),
                    "must list at least one image type",
                ));
            }
            Some(types) => {
                let mut out: Vec<ImageType> = Vec::with_capacity(types.len());
                for (j, t) in types.iter().enumerate() {
                    let k = format!("{key}.image_types[{j}]");
                    let parsed: ImageType =
                        t.trim().parse().map_err(|r| ConfigError::invalid(&k, r))?;
                    if !api.lists(parsed) {
                        let hint = match api {
                            ListingApi::SwrRepository => {
                                "; set `api: registry-images` in the target to list Harbor and JFrog registries"
                            }
                            ListingApi::RegistryImages => {
                                "; the registry-images API does not list local images"
                            }
                        };
                        return Err(ConfigError::invalid(
                            k,
                            format!("{parsed} is not listed by the {api} API{hint}"),
                        ));
                    }
                    if out.contains(&parsed) {
                        return Err(ConfigError::invalid(k, format!("{t:?} is listed twice")));
                    }
                    out.push(parsed);
                }
                out
            }
        };

        let credentials = match (&self.credentials, default_credentials) {
            (Some(own), _) => own.validate(&format!("{key}.credentials"), base_dir)?,
            (None, Some(shared)) => shared.validate("credentials", base_dir)?,
            (None, None) => {
                return Err(ConfigError::invalid(
                    format!("{key}.credentials"),
                    "no credentials: set credentials at the top level or in the target",
                ));
            }
        };

        Ok(Target {
            name,
            region,
            project_id,
            endpoint,
            iam_endpoint,
            enterprise_project_ids,
            image_types,
            latest_version_only: self.latest_version_only.unwrap_or(false),
            api,
            credentials,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{MINIMAL, env, error, parse};

    #[test]
    fn bad_values_name_the_key_and_reason() {
        let cases = [
            ("page_size: 201", "page_size: 201 is outside 1..=200"),
            ("page_size: -1", "page_size: invalid value"),
            ("api_rate_limit: 5", "api_rate_limit: 5 is not of the form"),
            (
                "api_rate_limit: 5 per minute",
                "api_rate_limit: \"5 per minute\" is not of the form",
            ),
            (
                "api_rate_limit: 0/1m",
                "api_rate_limit: the number of calls",
            ),
            (
                "poll_interval: 5 minutes please",
                "poll_interval: \"5 minutes please\" is not a duration",
            ),
            ("poll_interval: 300", "poll_interval: 300 has no unit"),
            ("poll_interval: 0", "poll_interval: must be longer than 0"),
            ("concurrency: 0", "concurrency: must be at least 1"),
            (
                "image_metrics: maybe",
                "image_metrics: expected a boolean, found a string",
            ),
        ];
        for (line, expected) in cases {
            let text = format!("{line}\n{MINIMAL}");
            let message = error(&text);
            assert!(message.starts_with(expected), "{line}: got {message}");
        }
    }

    #[test]
    fn target_errors_name_the_target() {
        let base = "credentials: {access_key: a, secret_key: b}\ntargets:\n";
        let cases = [
            ("  - project_id: p\n", "targets[0].region: is required"),
            (
                "  - {region: r, project_id: 'a/b'}\n",
                "targets[0].project_id: \"a/b\" is not a project id",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, harbour]}\n",
                "targets[0].image_types[1]: unknown image type \"harbour\"",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, harbor]}\n",
                "targets[0].image_types[1]: harbor is not listed by the swr-repository API; set `api: registry-images`",
            ),
            (
                "  - {region: r, project_id: p, api: registry-images, image_types: [local_image]}\n",
                "targets[0].image_types[0]: local_image is not listed by the registry-images API",
            ),
            (
                "  - {region: r, project_id: p, api: registries}\n",
                "targets[0].api: unknown API \"registries\"; expected swr-repository or registry-images",
            ),
            (
                "  - {region: r, project_id: p, image_types: [private_image, private_image]}\n",
                "targets[0].image_types[1]: \"private_image\" is listed twice",
            ),
            (
                "  - {region: r, project_id: p, endpoint: 'ftp://x'}\n",
                "targets[0].endpoint: \"ftp://x\" must be an http",
            ),
            (
                "  - {region: r, project_id: p}\n  - {region: r, project_id: q}\n",
                "targets[1].name: target name \"r\" is used twice",
            ),
            (
                "  - {region: r, project_id: p, enterprise_project_ids: []}\n",
                "targets[0].enterprise_project_ids: must list at least one",
            ),
        ];
        for (targets, expected) in cases {
            let message = error(&format!("{base}{targets}"));
            assert!(message.starts_with(expected), "got {message}");
        }
        assert!(
            error("credentials: {access_key: a, secret_key: b}\n")
                .starts_with("targets: at least one")
        );
        assert!(error("").starts_with("targets:"));
    }

    #[test]
    fn credential_errors_never_show_secrets() {
        let message = error(
            "credentials: {access_key: AK, secret_key: SUPERSECRET, token_file: /x}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.contains("choose one kind of credentials"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let message = error(
            "credentials: {secret_key: SUPERSECRET}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.starts_with("credentials.access_key: is required"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let message = error("targets: [{region: r, project_id: p}]\n");
        assert!(
            message.starts_with("targets[0].credentials: no credentials"),
            "{message}"
        );
        let message = error(
            "credentials: {iam: {domain_name: d, password: SUPERSECRET}}\ntargets: [{region: r, project_id: p}]\n",
        );
        assert!(
            message.starts_with("credentials.iam.user_name: is required for IAM tokens"),
            "{message}"
        );
        assert!(!message.contains("SUPERSECRET"));
        let config = parse("credentials: {access_key: AK, secret_key: SUPERSECRET}\ntargets: [{region: r, project_id: p}]\n").unwrap();
        assert!(!format!("{config:?}").contains("SUPERSECRET"));
    }

    #[test]
    fn the_successor_api_lists_harbor_and_jfrog() {
        let config = parse(
            "credentials: {access_key: a, secret_key: b}\ntargets:\n  - {region: r, project_id: p, api: registry-images, image_types: [private_image, harbor, jfrog]}\n  - {name: old, region: r, project_id: p}\n",
        )
        .unwrap();
        assert_eq!(config.targets[0].api, ListingApi::RegistryImages);
        assert_eq!(
            config.targets[0].image_types,
            vec![ImageType::Private, ImageType::Harbor, ImageType::Jfrog]
        );
        assert_eq!(
            config.targets[1].api,
            ListingApi::SwrRepository,
            "the default"
        );
    }

    #[test]
    fn iam_and_metadata_credentials_are_read() {
        let config = parse(
            "credentials: {iam: {domain_name: acct, user_name: exporter, password: pw}}\n\
             targets:\n  - {region: cn-north-4}\n  - {name: b, region: cn-north-4, credentials: {metadata: {}}}\n  \
             - {name: c, region: cn-north-4, credentials: {metadata: {endpoint: 'http://127.0.0.1:1'}}}\n",
        )
        .unwrap();
        assert_eq!(
            config.targets[0].credentials,
            CredentialsConfig::Iam {
                domain_name: "acct".into(),
                user_name: "exporter".into(),
                password: Secret::new("pw"),
            }
        );
        assert_eq!(config.targets[0].project_id, None, "looked up through IAM");
        assert_eq!(
            config.targets[1].credentials,
            CredentialsConfig::Metadata {
                endpoint: Url::parse("http://169.254.169.254").unwrap()
            }
        );
        assert_eq!(
            config.targets[2].credentials,
            CredentialsConfig::Metadata {
                endpoint: Url::parse("http://127.0.0.1:1").unwrap()
            }
        );
        let message =
            error("credentials: {iam: {domain_name: a, user_name: b}}\ntargets: [{region: r}]\n");
        assert!(
            message.starts_with("credentials.iam.password: is required"),
            "{message}"
        );
        let message = error(
            "credentials: {iam: {domain_name: a, user_name: b, password: c, pasword: d}}\ntargets: [{region: r}]\n",
        );
        assert!(
            message.starts_with("credentials.iam.pasword: unknown field"),
            "{message}"
        );
    }

    #[test]
    fn secret_files_are_read_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("hss-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sk"), "from-file\n").unwrap();
        std::fs::write(dir.join("token"), "tok").unwrap();
        let text = "credentials: {access_key: AK, secret_key_file: sk}\ntargets:\n  - {region: r, project_id: p}\n  - {region: s, project_id: p, credentials: {token_file: token}}\n";
        let config = Config::parse(text, &dir.join("config.yml"), &env).unwrap();
        match &config.targets[0].credentials {
            CredentialsConfig::AkSk { secret_key, .. } => {
                assert_eq!(secret_key.expose(), "from-file")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(
            config.targets[1].credentials,
            CredentialsConfig::TokenFile {
                path: dir.join("token")
            }
        );
        let message = Config::parse(
            "credentials: {access_key: AK, secret_key_file: nope}\ntargets: [{region: r, project_id: p}]\n",
            &dir.join("config.yml"),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(
            message.starts_with("credentials.secret_key_file: cannot read"),
            "{message}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn max_namespaces_defaults_and_bounds() {
        assert_eq!(parse(MINIMAL).unwrap().max_namespaces, 20_000);
        for n in [1, 1_000_000] {
            let config = parse(&format!("max_namespaces: {n}\n{MINIMAL}")).unwrap();
            assert_eq!(config.max_namespaces, n);
        }
        for (line, expected) in [
            (
                "max_namespaces: 0",
                "max_namespaces: 0 is outside 1..=1000000",
            ),
            (
                "max_namespaces: 1000001",
                "max_namespaces: 1000001 is outside 1..=1000000",
            ),
            ("max_namespaces: -3", "max_namespaces: invalid value"),
        ] {
            let message = error(&format!("{line}\n{MINIMAL}"));
            assert!(message.starts_with(expected), "{line}: got {message}");
        }
    }
}
