//! Calls to the control API (`sluice apply|status|abort`) through
//! [`sluice_http`]: one request per connection,
//! `Connection: close`, text answers.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use sluice_proxy::auth::Token;

/// A response: status code and body.
#[derive(Debug, Clone)]
pub(crate) struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends one request, with `Authorization: Bearer TOKEN` when a token is
/// given, and reads the whole response, all within `timeout`.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    token: Option<&Token>,
    timeout: Duration,
) -> io::Result<Response> {
    let authorization = token.map(Token::header_value);
    let mut headers = vec![
        ("User-Agent", "sluice"),
        ("Accept", "*/*"),
        ("Content-Type", "application/octet-stream"),
    ];
    headers.extend(authorization.as_deref().map(|a| ("Authorization", a)));
    let body = body.unwrap_or_default();
    let r = sluice_http::request(addr, method, path, &headers, body, timeout).await?;
    Ok(Response {
        status: r.status,
        body: r.body_text(),
    })
}
