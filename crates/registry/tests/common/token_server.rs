//! A token server for the registry's `auth: token:` mode: checks Basic credentials (or a
//! refresh token on POST) and issues ES256 JWTs with an `x5c` header holding a self-signed
//! certificate that the registry trusts through `rootcertbundle`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

use super::http::{read_request, write_response};

pub const SERVICE: &str = "test-registry";
pub const ISSUER: &str = "test-issuer";

pub struct TokenServer {
    pub port: u16,
    pub cert_pem: String,
    /// How many tokens were issued (to check caching).
    pub issued: Arc<AtomicUsize>,
    /// The scopes of each token request, in order.
    pub requests: Arc<Mutex<Vec<Vec<String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl TokenServer {
    /// Accepts `user`/`password` with Basic, and `refresh_token` on the OAuth2 POST.
    pub async fn start(user: &str, password: &str, refresh_token: &str) -> TokenServer {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap();
        let params = rcgen::CertificateParams::new(vec!["token-issuer".to_string()]).unwrap();
        let cert = params.self_signed(&rc_key).unwrap();
        let signer = Arc::new(Signer {
            key,
            cert_der: cert.der().to_vec(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issued = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let expected_basic = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let refresh_token = refresh_token.to_string();
        let (issued2, requests2) = (issued.clone(), requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let signer = signer.clone();
                let expected_basic = expected_basic.clone();
                let refresh_token = refresh_token.clone();
                let (issued, requests) = (issued2.clone(), requests2.clone());
                tokio::spawn(async move {
                    let Some(req) = read_request(&mut stream).await else {
                        return;
                    };
                    let (params, authorized) = if req.method == "POST" {
                        let form = parse_query(&String::from_utf8_lossy(&req.body));
                        let ok = form
                            .iter()
                            .any(|(k, v)| k == "grant_type" && v == "refresh_token")
                            && form
                                .iter()
                                .any(|(k, v)| k == "refresh_token" && *v == refresh_token);
                        let scopes: Vec<(String, String)> = form
                            .iter()
                            .filter(|(k, _)| k == "scope")
                            .flat_map(|(_, v)| {
                                v.split(' ')
                                    .map(|s| ("scope".to_string(), s.to_string()))
                                    .collect::<Vec<_>>()
                            })
                            .chain(form.iter().filter(|(k, _)| k == "service").cloned())
                            .collect();
                        (scopes, ok)
                    } else {
                        let query = req.target.split_once('?').map(|(_, q)| q).unwrap_or("");
                        (
                            parse_query(query),
                            req.header("authorization") == Some(expected_basic.as_str()),
                        )
                    };
                    if !authorized {
                        write_response(
                            &mut stream,
                            401,
                            &[],
                            br#"{"details":"bad credentials"}"#,
                            29,
                        )
                        .await;
                        return;
                    }
                    let scopes: Vec<String> = params
                        .iter()
                        .filter(|(k, _)| k == "scope")
                        .map(|(_, v)| v.clone())
                        .filter(|s| !s.is_empty())
                        .collect();
                    requests.lock().unwrap().push(scopes.clone());
                    issued.fetch_add(1, Ordering::SeqCst);
                    let token = signer.token(&scopes);
                    let body = serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
                    let headers = [("Content-Type".to_string(), "application/json".to_string())];
                    write_response(&mut stream, 200, &headers, body.as_bytes(), body.len()).await;
                });
            }
        });
        TokenServer {
            port,
            cert_pem: cert.pem(),
            issued,
            requests,
            task,
        }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }
}

impl Signer {
    fn token(&self, scopes: &[String]) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let access: Vec<serde_json::Value> = scopes
            .iter()
            .filter_map(|s| {
                let mut parts = s.splitn(3, ':');
                let (kind, rest) = (parts.next()?, parts.next()?);
                let actions = parts.next()?;
                // Repository names may not contain ':' so this split is exact for them.
                Some(serde_json::json!({"type": kind, "name": rest, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [STANDARD.encode(&self.cert_der)]});
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "tester", "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", scopes.len()),
            "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self
            .key
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .unwrap();
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}
