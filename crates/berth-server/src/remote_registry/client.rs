//! A client of another OCI registry (the distribution spec's pull side):
//! it answers the registry's challenge the way docker does — a first
//! request without credentials, then HTTP basic, or the bearer-token dance
//! (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`, a token fetched
//! from the realm with the user's credentials) — and keeps the token.

use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode};
use tokio::sync::Mutex;

/// The largest token answer read.
const MAX_TOKEN_ANSWER: usize = 64 * 1024;

/// A registry berth signs in to.
pub(crate) struct RemoteRegistry {
    http: reqwest::Client,
    base: String,
    plain_http: bool,
    username: String,
    password: berth_vault::Zeroizing<String>,
    /// The last `Authorization` value that worked.
    authorization: Mutex<Option<String>>,
}

/// A challenge from `WWW-Authenticate`.
#[derive(Debug, PartialEq)]
pub(crate) enum Challenge {
    /// `Basic`.
    Basic,
    /// `Bearer` with its parameters.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
}

/// Reads a `WWW-Authenticate` value.
pub(crate) fn parse_challenge(value: &str) -> Option<Challenge> {
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').unwrap_or((after, "")),
        };
        params.push((key.trim().to_ascii_lowercase(), value.to_string()));
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    let get = |name: &str| {
        params
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    };
    let realm = get("realm")?;
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return None;
    }
    Some(Challenge::Bearer {
        realm,
        service: get("service"),
        scope: get("scope"),
    })
}

impl RemoteRegistry {
    /// A client of the registry at `host` (HTTPS, or HTTP when
    /// `plain_http`), signing in as `username`.
    pub(crate) fn new(
        host: &str,
        plain_http: bool,
        username: &str,
        password: berth_vault::Zeroizing<String>,
    ) -> Result<RemoteRegistry, String> {
        let tls = crate::drains::deliver::tls_config(None)?;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .no_proxy()
            .connect_timeout(Duration::from_secs(15))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|err| err.to_string())?;
        let scheme = if plain_http { "http" } else { "https" };
        Ok(RemoteRegistry {
            http,
            base: format!("{scheme}://{host}"),
            plain_http,
            username: username.to_string(),
            password,
            authorization: Mutex::new(None),
        })
    }

    /// `GET /v2/…path` with `accept`, signing in when challenged. Any
    /// answer but a 401 that credentials could fix is returned as is.
    pub(crate) async fn get(
        &self,
        path: &str,
        accept: &[&str],
    ) -> Result<reqwest::Response, String> {
        let url = format!("{}/v2/{path}", self.base);
        let send = |authorization: Option<String>| {
            let mut request = self.http.request(Method::GET, &url);
            if !accept.is_empty() {
                request = request.header(ACCEPT, accept.join(", "));
            }
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value);
            }
            request.send()
        };
        let cached = self.authorization.lock().await.clone();
        let answer = send(cached)
            .await
            .map_err(|err| format!("{}: {err}", self.base))?;
        if answer.status() != StatusCode::UNAUTHORIZED {
            return Ok(answer);
        }
        // Only the registry itself says where its credentials go, never a
        // host a redirect led to.
        if !answer
            .url()
            .as_str()
            .starts_with(&format!("{}/", self.base))
        {
            return Err(format!(
                "{} answered 401 after a redirect to another host",
                answer.url().origin().ascii_serialization()
            ));
        }
        let authorization = self.answer_challenge(answer.headers()).await?;
        *self.authorization.lock().await = Some(authorization.clone());
        let answer = send(Some(authorization))
            .await
            .map_err(|err| format!("{}: {err}", self.base))?;
        if answer.status() == StatusCode::UNAUTHORIZED {
            return Err(format!(
                "{} refused the credentials of {} (berth registry login again)",
                self.base, self.username
            ));
        }
        Ok(answer)
    }

    fn basic(&self) -> String {
        use base64::Engine;
        let pair = format!("{}:{}", self.username, self.password.as_str());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// The `Authorization` that answers the 401 whose headers are `headers`.
    async fn answer_challenge(&self, headers: &HeaderMap) -> Result<String, String> {
        let challenge = headers
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .find_map(parse_challenge)
            .ok_or_else(|| format!("{} asks for credentials berth cannot give", self.base))?;
        let (realm, service, scope) = match challenge {
            Challenge::Basic => return Ok(self.basic()),
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => (realm, service, scope),
        };
        if !self.plain_http && !realm.starts_with("https://") {
            return Err(format!(
                "{} sends its credentials to {realm}, which is not HTTPS",
                self.base
            ));
        }
        let mut request = self.http.get(&realm).header(AUTHORIZATION, self.basic());
        let query: Vec<(&str, String)> = [("service", service), ("scope", scope)]
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
            .collect();
        request = request.query(&query);
        let answer = request
            .send()
            .await
            .map_err(|err| format!("{realm}: {err}"))?;
        if !answer.status().is_success() {
            return Err(format!(
                "{} refused the credentials of {} ({realm} answered {})",
                self.base,
                self.username,
                answer.status()
            ));
        }
        let mut bytes = Vec::new();
        let mut answer = answer;
        while let Some(chunk) = answer
            .chunk()
            .await
            .map_err(|err| format!("{realm}: {err}"))?
        {
            bytes.extend_from_slice(&chunk);
            if bytes.len() > MAX_TOKEN_ANSWER {
                return Err(format!("{realm} answered more than a token"));
            }
        }
        let body: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|err| format!("{realm} answered no token: {err}"))?;
        let token = body["token"]
            .as_str()
            .or(body["access_token"].as_str())
            .ok_or_else(|| format!("{realm} answered no token"))?;
        Ok(format!("Bearer {token}"))
    }

    /// Checks the credentials: `GET /v2/` must answer 200 once signed in.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let answer = self.get("", &[]).await?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "{}/v2/ answered {}: not a registry berth can use",
                self.base,
                answer.status()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_are_read_as_docker_reads_them() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:team/shop:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:team/shop:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://127.0.0.1:5000/token"),
            Some(Challenge::Bearer {
                realm: "http://127.0.0.1:5000/token".into(),
                service: None,
                scope: None,
            })
        );
        // A realm that is not a web address is not fetched.
        assert_eq!(
            parse_challenge(r#"Bearer realm="file:///etc/passwd""#),
            None
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
    }
}
