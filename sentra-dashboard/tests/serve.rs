//! The dashboard router over real HTTP requests (tower oneshot): headers, content types,
//! hashed assets and unknown names.

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use tower::ServiceExt as _;

async fn get(path: &str) -> axum::response::Response {
    sentra_dashboard::router::<()>()
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn page_and_assets_carry_security_headers_and_types() {
    let page = get("/").await;
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers();
    assert_eq!(h[header::CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(h[header::CACHE_CONTROL], "no-cache");
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    for path in sentra_dashboard::asset_paths() {
        let r = get(&path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let ct = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_owned();
        let want = if path.ends_with(".js") {
            "text/javascript"
        } else {
            "text/css"
        };
        assert!(ct.starts_with(want), "{path}: {ct}");
        assert!(
            r.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        assert!(r.headers().contains_key(header::CONTENT_SECURITY_POLICY));
    }
}

#[tokio::test]
async fn unhashed_or_unknown_assets_are_404() {
    // Not a route of the dashboard at all (the server's JSON fallback answers it).
    assert_eq!(
        get("/assets/../Cargo.toml").await.status(),
        StatusCode::NOT_FOUND
    );
    for path in ["/assets/app.js", "/assets/app.0000000000000000.js"] {
        let r = get(path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
    }
}
