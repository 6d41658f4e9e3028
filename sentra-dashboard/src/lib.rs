#![doc = include_str!("../README.md")]

use std::sync::OnceLock;

use axum::{
    Router,
    body::Body,
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::Response,
    routing::get,
};

/// The Content-Security-Policy every dashboard response carries: no inline scripts or
/// styles, nothing from other origins, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file of the front end (the sources under `web/` are the assets: there is
/// no build step, see the README).
struct Source {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("../web/index.html");
const SOURCES: &[Source] = &[
    Source {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../web/app.js"),
    },
    Source {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../web/app.css"),
    },
];

/// An asset under its content-hashed name.
#[derive(Debug)]
struct Asset {
    hashed: String,
    content_type: &'static str,
    bytes: &'static [u8],
}

#[derive(Debug)]
struct Assets {
    index: Vec<u8>,
    files: Vec<Asset>,
}

/// FNV-1a, 64 bit: a cache-busting name, not a security property.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn hashed_name(name: &str, bytes: &[u8]) -> String {
    let (stem, ext) = name.rsplit_once('.').unwrap_or((name, ""));
    format!("{stem}.{:016x}.{ext}", fnv1a(bytes))
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let mut index = String::from_utf8_lossy(INDEX).into_owned();
        let files = SOURCES
            .iter()
            .map(|s| {
                let hashed = hashed_name(s.name, s.bytes);
                index = index.replace(
                    &format!("/assets/{}\"", s.name),
                    &format!("/assets/{hashed}\""),
                );
                Asset {
                    hashed,
                    content_type: s.content_type,
                    bytes: s.bytes,
                }
            })
            .collect();
        Assets {
            index: index.into_bytes(),
            files,
        }
    })
}

/// The URL paths of the hashed assets the page loads (`/assets/app.<hash>.js`, ...).
#[must_use]
pub fn asset_paths() -> Vec<String> {
    assets()
        .files
        .iter()
        .map(|a| format!("/assets/{}", a.hashed))
        .collect()
}

fn respond(status: StatusCode, content_type: &str, cache: &'static str, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    resp
}

async fn index() -> Response {
    respond(
        StatusCode::OK,
        "text/html; charset=utf-8",
        "no-cache",
        Body::from(assets().index.clone()),
    )
}

async fn asset(Path(file): Path<String>) -> Response {
    match assets().files.iter().find(|a| a.hashed == file) {
        Some(a) => respond(
            StatusCode::OK,
            a.content_type,
            "public, max-age=31536000, immutable",
            Body::from(a.bytes),
        ),
        None => respond(
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "no-store",
            Body::from("no such dashboard asset\n"),
        ),
    }
}

/// The dashboard's routes: the page at `/` and its hashed assets under `/assets/`; merge
/// it into the API's router (same origin, so the page calls the REST API with its Bearer
/// token and no CORS).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_every_hashed_asset() {
        let idx = String::from_utf8(assets().index.clone()).unwrap();
        for p in asset_paths() {
            assert!(idx.contains(&format!("{p}\"")), "{p} not in index.html");
        }
        assert!(!idx.contains("/assets/app.js\""));
    }

    #[test]
    fn hash_changes_with_content() {
        assert_ne!(hashed_name("a.js", b"x"), hashed_name("a.js", b"y"));
        assert_eq!(hashed_name("a.js", b"x"), hashed_name("a.js", b"x"));
    }

    #[test]
    fn no_inline_script_or_style_in_index() {
        let idx = String::from_utf8_lossy(INDEX);
        assert!(!idx.contains("<script>"), "inline script");
        assert!(!idx.contains("style="), "inline style attribute");
        assert!(!idx.contains("<style"), "inline style element");
    }
}
