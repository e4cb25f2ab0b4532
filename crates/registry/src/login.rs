//! `login` (verify credentials against the registry, then store them) and `logout`.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};

use crate::auth::challenge::parse_challenges;
use crate::auth::credentials::{Credential, Found};
use crate::auth::token::fetch_token;
use crate::client::Client;
use crate::error::{ErrorKind, RegistryError, Result};
use crate::transport::{send_with_retries, RequestSpec};

impl Client {
    /// Checks `username`/`password` against `registry` (GET /v2/, answering its challenge)
    /// and stores them in config.json. Neither the password nor its encoding is logged.
    pub async fn login(&self, registry: &str, username: &str, password: &str) -> Result<()> {
        let operation = format!("login {registry}");
        let endpoint = self.endpoint(registry);
        let http = self.http_for(&operation, &endpoint.host)?;
        let url = format!("{}/v2/", endpoint.base_url());
        let spec = RequestSpec::new(Method::GET, url);
        let policy = &self.options().retry;
        let deadline = self.deadline_of(&spec);
        let probe = send_with_retries(&operation, &http, &spec, None, policy, &deadline).await?;
        let status = probe.status();
        if status == StatusCode::UNAUTHORIZED {
            let challenges: Vec<_> = probe
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(parse_challenges)
                .collect();
            let found = Found {
                credential: Credential::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                },
                source: "the given username and password".to_string(),
            };
            if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
                fetch_token(&operation, &http, bearer, &[], Some(&found), "", &deadline).await?;
            } else {
                let spec = spec.header(
                    AUTHORIZATION,
                    &format!("Basic {}", BASE64.encode(format!("{username}:{password}"))),
                );
                let answer =
                    send_with_retries(&operation, &http, &spec, None, policy, &deadline).await?;
                if !answer.status().is_success() {
                    return Err(RegistryError::new(
                        &operation,
                        ErrorKind::Unauthorized,
                        format!(
                            "unauthorized ({}): the registry refused the given username and password",
                            answer.status().as_u16()
                        ),
                    ));
                }
            }
        } else if !status.is_success() {
            return Err(self.status_error(&operation, probe).await);
        }
        self.options()
            .docker_config
            .store_basic(registry, username, password)
    }

    /// Removes stored credentials for `registry`; an error if there were none.
    pub fn logout(&self, registry: &str) -> Result<()> {
        let config = &self.options().docker_config;
        if config.remove(registry)? {
            Ok(())
        } else {
            Err(RegistryError::new(
                format!("logout {registry}"),
                ErrorKind::Config,
                format!(
                    "not logged in: no credentials for {registry} in {}",
                    config.path().display()
                ),
            ))
        }
    }
}
