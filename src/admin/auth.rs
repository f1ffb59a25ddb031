//! Who may use the admin surface.
//!
//! - A token, when configured (required on any non-loopback address), is
//!   read from `--admin-token-file` or `EASECHAT_ADMIN_TOKEN`, never argv,
//!   and compared in constant time. It is accepted as `Authorization:
//!   Bearer TOKEN`, as the `easechat_admin` cookie, or as `?token=TOKEN`;
//!   opening the page with `?token=` sets the cookie (HttpOnly,
//!   SameSite=Strict) so the page's own requests carry it.
//! - A request carrying an `Origin` must come from the page's own origin
//!   (`Origin` authority equal to `Host`), else 403: this blocks cross-site
//!   POSTs and streams. Browsers always send `Origin` on POST; scripts
//!   (curl) send none and are let through.
//! - Without a token (a loopback bind), `Host` must be `localhost` or an IP
//!   literal, else 403: a DNS-rebinding page reaches the port under its
//!   own domain name, which this refuses.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::routes::App;

pub use easechat_auth::secret::{load_token, AdminToken, TOKEN_ENV};

/// The cookie the page's requests carry the token in.
pub const COOKIE: &str = "easechat_admin";

/// The host part of a `Host` value or `Origin` authority, port dropped.
fn host_name(authority: &str) -> &str {
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether a tokenless console accepts this `Host`: `localhost` or an IP
/// literal, never a domain name (DNS rebinding).
pub fn host_allowed_without_token(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok()
}

/// Whether `origin` (e.g. `http://127.0.0.1:9650`) is the origin of `host`.
pub fn origin_matches_host(origin: &str, host: &str) -> bool {
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The token a request offers: bearer header, cookie, or `token=` query.
fn offered_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Vec<&'a str> {
    let mut offered = Vec::new();
    if let Some(bearer) =
        header_str(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Bearer "))
    {
        offered.push(bearer.trim());
    }
    for cookies in headers.get_all(header::COOKIE) {
        let Ok(cookies) = cookies.to_str() else {
            continue;
        };
        for pair in cookies.split(';') {
            if let Some((name, value)) = pair.trim().split_once('=') {
                if name == COOKIE {
                    offered.push(value);
                }
            }
        }
    }
    if let Some(query) = query {
        for pair in query.split('&') {
            if let Some(value) = pair.strip_prefix("token=") {
                offered.push(value);
            }
        }
    }
    offered
}

fn refuse(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"easechat-admin\""),
        );
    }
    response
}

/// The middleware in front of every route: `Host`, `Origin`, then token.
pub async fn guard(State(app): State<App>, request: Request, next: Next) -> Response {
    // Health probes disclose nothing: they answer any Host (HAProxy's
    // default check is `GET /healthz HTTP/1.0` with none; load balancers
    // send DNS names) and need no token.
    let path = request.uri().path();
    if matches!(path, "/healthz" | "/readyz")
        && (request.method() == Method::GET || request.method() == Method::HEAD)
    {
        return next.run(request).await;
    }
    let headers = request.headers();
    let host = header_str(headers, header::HOST).unwrap_or("");
    if app.token.is_none() && !host_allowed_without_token(host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "forbidden: Host must be localhost or an IP address\n",
        );
    }
    if let Some(origin) = header_str(headers, header::ORIGIN) {
        if !origin_matches_host(origin, host) {
            return refuse(StatusCode::FORBIDDEN, "forbidden: foreign Origin\n");
        }
    }
    let mut set_cookie = None;
    if let Some(token) = &app.token {
        let path = request.uri().path();
        let offered = offered_token(headers, request.uri().query());
        let valid = offered.iter().any(|t| token.matches(t));
        if !valid {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized: send Authorization: Bearer TOKEN, or open /?token=TOKEN\n",
            );
        }
        if valid && path == "/" && request.uri().query().is_some_and(|q| q.contains("token=")) {
            let value = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                offered.iter().find(|t| token.matches(t)).unwrap_or(&"")
            );
            set_cookie = HeaderValue::from_str(&value).ok();
        }
    }
    let posting = request.method() == Method::POST;
    let mut response = next.run(request).await;
    if let Some(cookie) = set_cookie {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    if posting {
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_and_host() {
        assert!(origin_matches_host(
            "http://127.0.0.1:9650",
            "127.0.0.1:9650"
        ));
        assert!(!origin_matches_host(
            "http://evil.example",
            "127.0.0.1:9650"
        ));
        assert!(!origin_matches_host("null", "127.0.0.1:9650"));
        assert!(host_allowed_without_token("127.0.0.1:9650"));
        assert!(host_allowed_without_token("[::1]:9650"));
        assert!(host_allowed_without_token("localhost:9650"));
        assert!(!host_allowed_without_token("rebind.evil.example:9650"));
        assert!(!host_allowed_without_token(""));
    }
}
