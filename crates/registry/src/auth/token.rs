//! Bearer tokens from a registry's token server: anonymous or basic-authenticated GET, or the
//! OAuth2 `refresh_token` POST for identity tokens; cached per host and scope set until expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use super::challenge::Challenge;
use super::credentials::{Credential, Found};
use crate::body::{read_capped, read_prefix, MAX_ERROR_BODY_BYTES, MAX_TOKEN_BYTES};
use crate::error::{describe_error_body, describe_transport, ErrorKind, RegistryError, Result};
use crate::transport::Deadline;

/// Token servers may omit `expires_in`; the spec says to assume 60 seconds.
const DEFAULT_TOKEN_LIFETIME: u64 = 60;
/// Renew a little before expiry so a token does not lapse in flight.
const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// A token cache keyed by host and the sorted scope set.
#[derive(Default)]
pub struct TokenCache {
    tokens: Mutex<HashMap<(String, String), (String, Instant)>>,
}

impl TokenCache {
    pub fn key(host: &str, scopes: &[String]) -> (String, String) {
        let mut sorted: Vec<&str> = scopes.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        sorted.dedup();
        (host.to_string(), sorted.join(" "))
    }

    pub fn get(&self, host: &str, scopes: &[String]) -> Option<String> {
        let tokens = self.tokens.lock().expect("token cache poisoned");
        let (token, expires) = tokens.get(&Self::key(host, scopes))?;
        (Instant::now() < *expires).then(|| token.clone())
    }

    pub fn put(&self, host: &str, scopes: &[String], token: String, lifetime: Duration) {
        let expires = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN);
        self.tokens
            .lock()
            .expect("token cache poisoned")
            .insert(Self::key(host, scopes), (token, expires));
    }
}

#[derive(serde::Deserialize)]
struct TokenAnswer {
    #[serde(default)]
    token: String,
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// Asks the token server named by `challenge` for a token covering `scopes`.
pub async fn fetch_token(
    operation: &str,
    http: &reqwest::Client,
    challenge: &Challenge,
    scopes: &[String],
    credential: Option<&Found>,
    no_credentials_note: &str,
    deadline: &Deadline,
) -> Result<(String, Duration)> {
    let realm = challenge.param("realm").ok_or_else(|| {
        RegistryError::new(
            operation,
            ErrorKind::Protocol,
            "the registry's Bearer challenge has no realm",
        )
    })?;
    let realm_url = reqwest::Url::parse(realm).map_err(|_| {
        RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!("the registry's token realm {realm:?} is not a URL"),
        )
    })?;
    let realm_host = realm_url.host_str().unwrap_or("?").to_string();
    let service = challenge.param("service").unwrap_or("");
    let request = match credential.map(|f| &f.credential) {
        Some(Credential::IdentityToken(refresh)) => {
            let scope = scopes.join(" ");
            let form = [
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh.as_str()),
                ("service", service),
                ("scope", scope.as_str()),
                ("client_id", "rbuild"),
            ];
            http.post(realm_url.clone()).form(&form)
        }
        other => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            if !service.is_empty() {
                query.push(("service", service));
            }
            for scope in scopes {
                query.push(("scope", scope));
            }
            let mut req = http.get(realm_url.clone()).query(&query);
            if let Some(Credential::Basic { username, password }) = other {
                req = req.header(
                    reqwest::header::AUTHORIZATION,
                    format!("Basic {}", BASE64.encode(format!("{username}:{password}"))),
                );
            }
            req
        }
    };
    let Some(remaining) = deadline.remaining() else {
        return Err(deadline.error(operation));
    };
    let response = request.timeout(remaining).send().await.map_err(|e| {
        if deadline.passed() {
            return deadline.error(&format!("{operation}: token server {realm_host}"));
        }
        RegistryError::new(
            operation,
            ErrorKind::Transport,
            format!("token server {realm_host}: {}", describe_transport(e)),
        )
    })?;
    let status = response.status();
    let body = if status.is_success() {
        read_capped(
            &format!("{operation}: token server {realm_host}"),
            response,
            "token answer",
            MAX_TOKEN_BYTES,
            deadline,
        )
        .await?
    } else {
        read_prefix(response, MAX_ERROR_BODY_BYTES).await
    };
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        let why = match credential {
            Some(found) => format!("credentials from {} were rejected", found.source),
            None => no_credentials_note.to_string(),
        };
        return Err(RegistryError::new(
            operation,
            ErrorKind::Unauthorized,
            format!(
                "unauthorized ({}): token server {realm_host} refused: {why}",
                status.as_u16()
            ),
        ));
    }
    if !status.is_success() {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!(
                "token server {realm_host} answered {}: {}",
                status.as_u16(),
                describe_error_body(&body)
            ),
        ));
    }
    let answer: TokenAnswer = serde_json::from_slice(&body).map_err(|e| {
        RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!("token server {realm_host} sent an unreadable answer: {e}"),
        )
    })?;
    let token = if answer.token.is_empty() {
        answer.access_token
    } else {
        answer.token
    };
    if token.is_empty() {
        return Err(RegistryError::new(
            operation,
            ErrorKind::Protocol,
            format!("token server {realm_host} sent no token"),
        ));
    }
    let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME));
    Ok((token, lifetime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_key_ignores_scope_order_and_expires() {
        let cache = TokenCache::default();
        let a = vec![
            "repository:b:pull".to_string(),
            "repository:a:pull,push".to_string(),
        ];
        let b = vec![
            "repository:a:pull,push".to_string(),
            "repository:b:pull".to_string(),
        ];
        cache.put("h", &a, "t1".into(), Duration::from_secs(300));
        assert_eq!(cache.get("h", &b).as_deref(), Some("t1"));
        assert_eq!(cache.get("other", &b), None);
        // A lifetime shorter than the margin is already expired.
        cache.put("h", &a, "t2".into(), Duration::from_secs(5));
        assert_eq!(cache.get("h", &a), None);
    }
}
