//! cyan's own pages: every answer the proxy writes itself instead of an
//! app's. A request no route takes (404), a route in maintenance (503 with
//! `Retry-After`), a route with nothing to serve (503, saying why), a
//! request refused before any app sees it (400, 405, 501), a client's
//! fault (400, 408) and an upstream's (502, 504).
//!
//! Each is plain text; an error page starts with `cyan:`, so nobody takes
//! it for the app's. What a page says is decided here, once for both
//! request paths; each path writes it out its own way (`forward` as a hyper
//! response, `fast` as HTTP/1.1 bytes).

use std::fmt::Display;
use std::net::SocketAddr;

use hyper::StatusCode;

use super::state::Maintenance;
use cyan_plan::release::Color;

/// A response cyan makes itself.
pub(crate) struct Page {
    pub status: StatusCode,
    pub body: String,
    pub retry_after_s: Option<u64>,
}

impl Page {
    /// A page with this body as is.
    pub(crate) fn text(status: StatusCode, body: String) -> Page {
        Page {
            status,
            body,
            retry_after_s: None,
        }
    }

    /// An error page: `cyan: {why}`.
    pub(crate) fn error(status: StatusCode, why: impl Display) -> Page {
        Page::text(status, format!("cyan: {why}\n"))
    }

    /// No route takes the request: 404.
    pub(crate) fn no_route(host: Option<&str>) -> Page {
        let host = host.unwrap_or_default();
        let body = format!("cyan: no app is routed for host {host:?}\n");
        Page::text(StatusCode::NOT_FOUND, body)
    }

    /// The maintenance page: 503 with `Retry-After`.
    pub(crate) fn maintenance(m: &Maintenance) -> Page {
        let message = m.message.clone().unwrap_or_else(|| {
            "This service is down for maintenance. Please try again shortly.".into()
        });
        Page {
            status: StatusCode::SERVICE_UNAVAILABLE,
            body: format!("{message}\n"),
            retry_after_s: Some(m.retry_after_s),
        }
    }

    /// The route has no color to serve: 503. A preview serves only a
    /// candidate, never the live color.
    pub(crate) fn no_live(route: &str, preview: bool) -> Page {
        let body = match preview {
            true => format!(
                "cyan: no candidate for {route}; deploy one (the preview serves a release from its health gate until it is promoted or aborted, never the live one)\n"
            ),
            false => format!("cyan: {route} has no live color yet\n"),
        };
        Page::text(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    /// Every replica of the color is out of the load balancer: 503.
    pub(crate) fn no_replica(route: &str, color: Color, preview: bool) -> Page {
        let body = format!(
            "cyan: {route} has no {color} replica in rotation (stopped, or not back yet){}\n",
            if preview { " for its preview" } else { "" }
        );
        Page::text(StatusCode::SERVICE_UNAVAILABLE, body)
    }

    /// No answer from the upstream: 502 or 504 (`status`).
    pub(crate) fn upstream_failed(status: StatusCode, upstream: SocketAddr, why: &str) -> Page {
        let body = format!("cyan: upstream {upstream} failed: {why}\n");
        Page::text(status, body)
    }

    /// An upstream's response that cannot be passed on: 502.
    pub(crate) fn invalid_response(why: &str) -> Page {
        let body = format!("cyan: invalid response from the upstream: {why}\n");
        Page::text(StatusCode::BAD_GATEWAY, body)
    }
}

/// The fast path's answer to a request head that did not arrive in time
/// (then the connection closes).
pub(crate) const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n\
    content-length: 38\r\nconnection: close\r\n\r\ncyan: the request head did not arrive\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::Framing;
    use crate::heads::ResponseHead;

    #[test]
    fn the_408_page_is_framed_by_its_length() {
        let Ok(Some(r)) = ResponseHead::parse(REQUEST_TIMEOUT, false) else {
            panic!("the 408 page does not parse");
        };
        assert_eq!(r.status, 408);
        let body = (REQUEST_TIMEOUT.len() - r.len) as u64;
        assert_eq!(r.framing, Framing::Length(body));
    }

    #[test]
    fn an_error_page_says_it_is_cyans_and_maintenance_says_when_to_retry() {
        for page in [
            Page::no_route(Some("a.example")),
            Page::no_live("web", false),
            Page::no_live("web", true),
            Page::no_replica("web", Color::Green, true),
            Page::upstream_failed(
                StatusCode::GATEWAY_TIMEOUT,
                ([127, 0, 0, 1], 1).into(),
                "slow",
            ),
            Page::invalid_response("a transfer coding other than chunked"),
        ] {
            assert!(page.body.starts_with("cyan: "), "{}", page.body);
            assert!(page.body.ends_with('\n'), "{}", page.body);
            assert_eq!(page.retry_after_s, None);
        }
        let m = Maintenance {
            retry_after_s: 30,
            message: Some("Back at noon.".into()),
        };
        let page = Page::maintenance(&m);
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            page.body, "Back at noon.\n",
            "the owner's words, not cyan's"
        );
        assert_eq!(page.retry_after_s, Some(30));
    }
}
