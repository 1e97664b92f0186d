//! The bearer token that closes an admin API: `sluice proxy`'s admin API and
//! `sluice up`'s control API both use this one module (flags, where the token
//! comes from, the refusal to listen beyond loopback without one, and the
//! constant-time check), and `sluice apply|status|abort` use its flags to send
//! it. See docs/admin-api.md ("Authentication").

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use sluice_api::admin::{ErrorBody, ErrorCode};

/// The environment variable a token is read from when no flag gives one (so it
/// stays out of `ps`).
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";

/// The shortest token accepted, in bytes: `openssl rand -hex 32` makes 64.
pub const MIN_TOKEN_LEN: usize = 16;

/// How to make a good token, quoted in every refusal.
const HOW_TO_MAKE: &str = "make one with `openssl rand -hex 32`";

/// The token flags, shared by the servers (`sluice proxy`, `sluice up`) and the
/// clients (`sluice apply|status|abort`).
#[derive(Clone, Default, clap::Args)]
pub struct TokenArgs {
    /// Require (or, for a client, send) `Authorization: Bearer TOKEN` on the
    /// admin API. Visible in `ps`: prefer --admin-token-file or the
    /// SLUICE_ADMIN_TOKEN environment variable. At least 16 bytes of printable
    /// ASCII; make one with `openssl rand -hex 32`.
    #[arg(long, value_name = "TOKEN", conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,

    /// Read the admin token from FILE (surrounding white space, such as the
    /// final newline, is ignored).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
}

impl fmt::Debug for TokenArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenArgs")
            .field(
                "admin_token",
                &self.admin_token.as_ref().map(|_| "<redacted>"),
            )
            .field("admin_token_file", &self.admin_token_file)
            .finish()
    }
}

/// Why no usable token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The token is empty.
    #[error("{origin}: the admin token is empty; {HOW_TO_MAKE}")]
    Empty {
        /// Where it came from (a flag or the environment variable).
        origin: String,
    },
    /// The token is too short to resist guessing.
    #[error(
        "{origin}: the admin token is {len} bytes, at least {MIN_TOKEN_LEN} are needed; {HOW_TO_MAKE}"
    )]
    Short {
        /// Where it came from.
        origin: String,
        /// Its length.
        len: usize,
    },
    /// The token holds a byte that cannot go in an HTTP header as is.
    #[error(
        "{origin}: the admin token may only hold printable ASCII without spaces (it is sent in an HTTP header); {HOW_TO_MAKE}"
    )]
    BadByte {
        /// Where it came from.
        origin: String,
    },
    /// The token file cannot be read.
    #[error("--admin-token-file {}: cannot read it: {error}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A server was asked to listen beyond loopback without a token.
    #[error(
        "{flag} {addr}: not a loopback address, so the admin API needs a token: give \
         --admin-token-file FILE, {TOKEN_ENV} or --admin-token ({HOW_TO_MAKE}), or listen on 127.0.0.1"
    )]
    Exposed {
        /// The address flag.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
    },
}

/// A checked token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token(Arc<str>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Checks `text` (from `origin`, named in errors).
    pub fn new(text: &str, origin: &str) -> Result<Token, TokenError> {
        let origin = origin.to_owned();
        if text.is_empty() {
            return Err(TokenError::Empty { origin });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadByte { origin });
        }
        if text.len() < MIN_TOKEN_LEN {
            let len = text.len();
            return Err(TokenError::Short { origin, len });
        }
        Ok(Token(text.into()))
    }

    /// The `Authorization` header value a client sends.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header value carries this token. The scheme
    /// is case-insensitive (RFC 9110); the token is compared in constant time.
    pub fn accepts(&self, authorization: &[u8]) -> bool {
        let Some(space) = authorization.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, given) = authorization.split_at(space);
        scheme.eq_ignore_ascii_case(b"bearer")
            && constant_time_eq(given.trim_ascii(), self.0.as_bytes())
    }
}

impl TokenArgs {
    /// The token from `--admin-token`, `--admin-token-file` or
    /// [`TOKEN_ENV`], in that order; `None` when none is given.
    pub fn resolve(&self) -> Result<Option<Token>, TokenError> {
        if let Some(text) = &self.admin_token {
            return Token::new(text, "--admin-token").map(Some);
        }
        if let Some(path) = &self.admin_token_file {
            let text = std::fs::read_to_string(path).map_err(|error| TokenError::File {
                path: path.clone(),
                error,
            })?;
            let origin = format!("--admin-token-file {}", path.display());
            return Token::new(text.trim(), &origin).map(Some);
        }
        match std::env::var(TOKEN_ENV) {
            Ok(text) => Token::new(&text, TOKEN_ENV).map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(TokenError::BadByte {
                origin: TOKEN_ENV.to_owned(),
            }),
        }
    }

    /// The token a server listening on `addr` (given with `flag`) requires:
    /// like [`TokenArgs::resolve`], but an address beyond loopback without a
    /// token is refused, so an admin API is never open to the network by
    /// accident.
    pub fn for_listener(
        &self,
        addr: SocketAddr,
        flag: &'static str,
    ) -> Result<Option<Token>, TokenError> {
        let token = self.resolve()?;
        if token.is_none() && !addr.ip().to_canonical().is_loopback() {
            return Err(TokenError::Exposed { flag, addr });
        }
        Ok(token)
    }
}

/// Puts every route of `router` behind `token` (none: left open). Routes
/// merged in afterwards (the probes) stay open.
pub fn protect<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    token: Option<Token>,
) -> Router<S> {
    match token {
        Some(token) => router.route_layer(middleware::from_fn_with_state(token, check)),
        None => router,
    }
}

async fn check(State(token): State<Token>, request: Request, next: Next) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if given.is_some_and(|v| token.accepts(v)) {
        return next.run(request).await;
    }
    let body = ErrorBody {
        code: ErrorCode::Unauthorized,
        message: "send the admin token as `Authorization: Bearer TOKEN` \
                  (see --admin-token-file and SLUICE_ADMIN_TOKEN)"
            .to_owned(),
        field: None,
    };
    let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// Compares without stopping at the first difference, so that the response
/// time does not reveal how much of a guessed token was right. (A length
/// mismatch answers at once: the length is not the secret.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && std::hint::black_box(a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y))) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef";

    #[test]
    fn comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        let t = Token::new(GOOD, "t").unwrap();
        assert!(t.accepts(format!("Bearer {GOOD}").as_bytes()));
        assert!(t.accepts(format!("bearer {GOOD}").as_bytes()));
        assert!(!t.accepts(GOOD.as_bytes()));
        assert!(!t.accepts(format!("Basic {GOOD}").as_bytes()));
        assert!(!t.accepts(b"Bearer 0123456789abcdeF"));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn weak_tokens_are_refused_with_the_fix() {
        for (text, says) in [
            ("", "is empty"),
            ("s3cret", "is 6 bytes, at least 16"),
            ("0123456789 abcdef", "printable ASCII"),
        ] {
            let e = Token::new(text, "--admin-token").unwrap_err().to_string();
            assert!(e.starts_with("--admin-token: "), "{e}");
            assert!(
                e.contains(says) && e.contains("openssl rand -hex 32"),
                "{e}"
            );
        }
    }

    #[test]
    fn beyond_loopback_needs_a_token() {
        let args = TokenArgs::default();
        for addr in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
            assert!(args.for_listener(addr.parse().unwrap(), "--admin").is_ok());
        }
        let e = args
            .for_listener("0.0.0.0:9190".parse().unwrap(), "--admin")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--admin 0.0.0.0:9190: not a loopback"), "{e}");
        let args = TokenArgs {
            admin_token: Some(GOOD.into()),
            admin_token_file: None,
        };
        let token = args.for_listener("0.0.0.0:1".parse().unwrap(), "--admin");
        assert!(token.unwrap().is_some());
        assert!(!format!("{args:?}").contains(GOOD));
    }
}
