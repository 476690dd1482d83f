//! The origin (`scheme://host[:port]`) written into the absolute URLs riskmap serves:
//! TileJSON's `tiles` and the style's sources. Clients and shared caches take these
//! URLs as they are, so a request must not be able to put another host into them.
//!
//! - With a public URL configured (`serve --public-url https://maps.example.org`, or
//!   `RISKMAP_PUBLIC_URL`), it is the only origin written; `Host` and `X-Forwarded-*`
//!   are ignored. The right setting behind a proxy or a CDN.
//! - Without one, the origin is `http://` + the request's `Host` (or the authority of
//!   an absolute-form target, or HTTP/2's), which must be a plain `host[:port]` (DNS name, IPv4 or bracketed IPv6
//!   address, port 1–65535): anything else is answered 400, as RFC 9112 §3.2 asks of
//!   an invalid `Host`, so no markup, path, user info or odd scheme can pass.
//!   `X-Forwarded-Host` and `X-Forwarded-Proto` are read only with
//!   `serve --trust-forwarded` (`RISKMAP_TRUST_FORWARDED`), meant for a proxy that sets
//!   them itself, and are held to the same syntax (`http` or `https`, one value, not a
//!   list). The answer then says `Vary` on the headers it was built from, so a shared
//!   cache keeps one copy per origin.

use axum::http::{HeaderMap, StatusCode, Uri, header};

use super::error::ApiError;
use crate::app::App;

/// Validates `--public-url` and returns its origin without a trailing slash. Only an
/// origin: the page and the API's links are root-relative, so serving under a path
/// prefix is not supported.
pub fn parse_public_url(s: &str) -> Result<String, String> {
    let uri: Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    let scheme = uri
        .scheme_str()
        .map(str::to_ascii_lowercase)
        .filter(|s| s == "http" || s == "https")
        .ok_or_else(|| format!("{s:?}: the public URL must start with http:// or https://"))?;
    let authority = uri
        .authority()
        .map(|a| a.as_str())
        .filter(|a| valid_authority(a))
        .ok_or_else(|| {
            format!("{s:?}: the public URL needs a host[:port] (a DNS name or an IP address, no user info)")
        })?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!(
            "{s:?}: the public URL is an origin (scheme://host[:port]): riskmap cannot be served under a path"
        ));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// The origin for absolute URLs in the answer to a request, and the request headers
/// it depends on (for `Vary`), per the rules at the top of this file.
pub fn base_url(
    app: &App,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(String, Option<&'static str>), ApiError> {
    if let Some(url) = &app.options().public_url {
        return Ok((url.clone(), None));
    }
    let single = |name: &str| -> Result<Option<&str>, ApiError> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        let text = v.to_str().ok().filter(|t| !t.contains(','));
        match (text, values.next()) {
            (Some(t), None) => Ok(Some(t.trim())),
            _ => Err(ApiError::bad_request(format!(
                "{name} must be one value (a list from several proxies is not taken: start the server with --public-url)"
            ))),
        }
    };
    let trusted = app.options().trust_forwarded;
    let forwarded_host = if trusted {
        single("x-forwarded-host")?
    } else {
        None
    };
    let (host, from) = match forwarded_host {
        Some(h) => (Some(h), "X-Forwarded-Host"),
        // An absolute-form request target (`GET http://host/...`, and HTTP/2's
        // :authority) names the host instead of `Host`, which is then ignored
        // (RFC 9112 §3.2.2).
        None => match uri.authority() {
            Some(a) => (Some(a.as_str()), "the request target's authority"),
            None => (single(header::HOST.as_str())?, "Host"),
        },
    };
    let host = match host {
        Some(h) if valid_authority(h) => h,
        Some(_) => {
            return Err(ApiError::bad_request(format!(
                "{from} must be host[:port] (a DNS name or an IP address, port 1-65535)"
            )));
        }
        // HTTP/1.0 without Host: the default listen address.
        None => "localhost:8080",
    };
    let scheme = match trusted.then(|| single("x-forwarded-proto")).transpose()? {
        None | Some(None) => "http",
        Some(Some(p)) if p.eq_ignore_ascii_case("http") => "http",
        Some(Some(p)) if p.eq_ignore_ascii_case("https") => "https",
        Some(Some(_)) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "InvalidParameterValue",
                "X-Forwarded-Proto must be http or https",
            ));
        }
    };
    let vary = if trusted {
        "Host, X-Forwarded-Host, X-Forwarded-Proto"
    } else {
        "Host"
    };
    Ok((format!("{scheme}://{host}"), Some(vary)))
}

/// `host[:port]`: a DNS name (labels of letters, digits and inner hyphens), an IPv4
/// address (which reads as such a name) or a bracketed IPv6 address; a port of 1 to 5
/// digits, 1–65535.
fn valid_authority(s: &str) -> bool {
    if s.is_empty() || s.len() > 261 {
        return false;
    }
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some((addr, rest)) = inner.split_once(']') else {
            return false;
        };
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return false;
        }
        (None, rest)
    } else {
        match s.split_once(':') {
            Some((h, _)) => (Some(h), &s[h.len()..]),
            None => (Some(s), ""),
        }
    };
    let port_ok = match port.strip_prefix(':') {
        None => port.is_empty(),
        Some(p) => {
            (1..=5).contains(&p.len())
                && p.bytes().all(|b| b.is_ascii_digit())
                && p.parse::<u16>().is_ok_and(|n| n > 0)
        }
    };
    let host_ok = host.is_none_or(|h| {
        let h = h.strip_suffix('.').unwrap_or(h);
        h.len() <= 253
            && !h.is_empty()
            && h.split('.').all(|label| {
                (1..=63).contains(&label.len())
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    });
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_host_and_port_are_valid_authorities() {
        for ok in [
            "maps.example.org",
            "maps.example.org:8443",
            "localhost",
            "127.0.0.1:8080",
            "[::1]",
            "[2001:db8::1]:443",
            "xn--fiq228c.example",
            "example.org.",
        ] {
            assert!(valid_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example/<script>",
            "a@b.example",
            "b.example:0",
            "b.example:65536",
            "b.example:",
            "b.example:80:80",
            "-a.example",
            "a..example",
            "a_b.example",
            "[::1",
            "[nothost]",
            "javascript:alert(1)",
            "a.example\"><img",
            "a.example%2F",
            "a b",
        ] {
            assert!(!valid_authority(bad), "{bad}");
        }
    }

    #[test]
    fn a_public_url_is_an_http_or_https_origin() {
        assert_eq!(
            parse_public_url("https://maps.example.org").unwrap(),
            "https://maps.example.org"
        );
        assert_eq!(
            parse_public_url("HTTP://maps.example.org:8080/").unwrap(),
            "http://maps.example.org:8080"
        );
        for bad in [
            "maps.example.org",
            "ftp://maps.example.org",
            "javascript:alert(1)",
            "https://user@maps.example.org",
            "https://maps.example.org/riskmap",
            "https://maps.example.org/?a=1",
            "https://",
        ] {
            assert!(parse_public_url(bad).is_err(), "{bad}");
        }
    }
}
