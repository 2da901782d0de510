//! The dashboard page, embedded in the binary: no CDN, no build step, no network at run time.
//!
//! `GET /` (browsers; WebSocket upgrades on `/` go to `ws`) answers `index.html`, which loads
//! `/assets/style.css` and the ES module `/assets/app.js`; app.js imports the other modules
//! (`./protocol.js`, `./table.js`, ...), all listed in [`ASSETS`] and preloaded by index.html so
//! that a browser fetches them in one round trip rather than one per import depth.
//! The page talks OpenClaw's protocol v4 over `/ws`.
//! Assets are public (they hold no data); every data call is authenticated by the WebSocket
//! `connect` or the bearer token. Responses carry a strict content security policy (scripts and
//! styles from this origin only, connections to this origin only, no framing), `nosniff`, and
//! an `ETag` so reloads revalidate with a `304` instead of downloading again.

use std::sync::LazyLock;

use axum::{
    extract::Path,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

static INDEX: Asset = Asset {
    name: "index.html",
    content_type: "text/html; charset=utf-8",
    body: include_str!("../assets/index.html"),
};

const JS: &str = "text/javascript; charset=utf-8";

/// A module of the page, by file stem.
macro_rules! module {
    ($stem:literal) => {
        Asset {
            name: concat!($stem, ".js"),
            content_type: JS,
            body: include_str!(concat!("../assets/", $stem, ".js")),
        }
    };
}

/// Every file under `/assets/`: the styles and the page's ES modules (see app.js for who does what).
static ASSETS: [Asset; 21] = [
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../assets/style.css"),
    },
    module!("app"),
    module!("api"),
    module!("banner"),
    module!("breakdowns"),
    module!("budgets"),
    module!("cards"),
    module!("chart"),
    module!("connection"),
    module!("controls"),
    module!("detail"),
    module!("dom"),
    module!("exports"),
    module!("format"),
    module!("health"),
    module!("protocol"),
    module!("render"),
    module!("state"),
    module!("table"),
    module!("token"),
    module!("view"),
];

/// The page may load its own script and styles, connect (WebSocket and fetch) to its own origin,
/// download exports from blob URLs, and nothing else.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Strong validators: a digest of each embedded file, computed once.
static ETAGS: LazyLock<Vec<(&'static str, HeaderValue)>> = LazyLock::new(|| {
    std::iter::once(&INDEX)
        .chain(ASSETS.iter())
        .map(|asset| {
            let digest = Sha256::digest(asset.body.as_bytes());
            let hex: String = digest.iter().take(12).map(|b| format!("{b:02x}")).collect();
            (asset.name, HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex etag"))
        })
        .collect()
});

fn etag(name: &str) -> Option<&'static HeaderValue> {
    ETAGS.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
}

fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()).is_some_and(|list| {
        list.split(',').any(|t| t.trim() == "*" || t.trim().as_bytes() == etag.as_bytes())
    })
}

fn serve(asset: &'static Asset, request: Option<&HeaderMap>) -> Response {
    let tag = etag(asset.name);
    let common = [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
    ];
    if let (Some(tag), Some(headers)) = (tag, request) {
        if not_modified(headers, tag) {
            let mut response = (StatusCode::NOT_MODIFIED, common).into_response();
            response.headers_mut().insert(header::ETAG, tag.clone());
            return response;
        }
    }
    let mut response =
        (common, [(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type))], asset.body)
            .into_response();
    if let Some(tag) = tag {
        response.headers_mut().insert(header::ETAG, tag.clone());
    }
    response
}

/// `GET /` for browsers (called by `ws::root` when the request is not a WebSocket upgrade).
pub async fn index() -> Response {
    serve(&INDEX, None)
}

/// `GET /index.html`, with conditional requests.
pub async fn index_html(headers: HeaderMap) -> Response {
    serve(&INDEX, Some(&headers))
}

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == file) {
        Some(asset) => serve(asset, Some(&headers)),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

/// Shield mode's page: `index.html` with its asset references under `relay::DASHBOARD_PREFIX`,
/// as `/assets/` is OpenClaw's Control UI there. Its data calls (`/ws`, `/api/v1`) stay clawgate's.
static PREFIXED_INDEX: LazyLock<Asset> = LazyLock::new(|| {
    let prefixed = format!("\"{}/assets/", crate::relay::DASHBOARD_PREFIX);
    Asset {
        name: "clawgate/index.html",
        content_type: INDEX.content_type,
        body: Box::leak(INDEX.body.replace("\"/assets/", &prefixed).into_boxed_str()),
    }
});

/// `GET /clawgate/` and `/clawgate/index.html` in shield mode.
pub async fn prefixed_index() -> Response {
    serve(&PREFIXED_INDEX, None)
}

/// `GET /clawgate`: to the page, whose relative links need the trailing slash.
pub async fn to_prefixed_index() -> Response {
    axum::response::Redirect::permanent(&format!("{}/", crate::relay::DASHBOARD_PREFIX)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(name: &str) -> &'static Asset {
        ASSETS.iter().find(|a| a.name == name).unwrap_or_else(|| panic!("no asset {name}"))
    }

    /// The relative specifiers of `import … from "./x.js"` lines.
    fn imports(body: &str) -> Vec<&str> {
        body.lines()
            .filter(|l| l.starts_with("import ") || l.starts_with("} from "))
            .filter_map(|l| l.split(" from \"").nth(1))
            .filter_map(|rest| rest.split('"').next())
            .collect()
    }

    #[test]
    fn the_page_references_only_embedded_same_origin_assets() {
        assert!(INDEX.body.contains(r#"<link rel="stylesheet" href="/assets/style.css">"#));
        assert!(INDEX.body.contains(r#"<script type="module" src="/assets/app.js"></script>"#));
        // No absolute URL anywhere but the SVG namespace and the page's own WebSocket scheme.
        for asset in std::iter::once(&INDEX).chain(ASSETS.iter()) {
            let text = asset
                .body
                .replace("http://www.w3.org/2000/svg", "")
                .replace("\"wss://\"", "")
                .replace("\"ws://\"", "");
            assert!(!text.contains("://"), "{} refers to another origin", asset.name);
            assert!(!text.contains("<script>"), "{}: inline scripts break the CSP", asset.name);
        }
    }

    #[test]
    fn the_shield_mode_page_loads_its_assets_under_the_prefix() {
        let page = PREFIXED_INDEX.body;
        assert!(page.contains("\"/clawgate/assets/app.js\""), "{page}");
        assert!(!page.contains("\"/assets/"), "no reference left to OpenClaw's /assets/");
    }

    #[test]
    fn every_module_import_is_embedded_and_preloaded() {
        let mut reached = vec!["app.js"];
        let mut next = 0;
        while next < reached.len() {
            let module = asset(reached[next]);
            next += 1;
            for spec in imports(module.body) {
                let name = spec.strip_prefix("./").unwrap_or_else(|| {
                    panic!(
                        "{}: import {spec:?} must be relative (./x.js): no bare or remote modules",
                        module.name
                    )
                });
                asset(name);
                if !reached.contains(&name) {
                    reached.push(name);
                }
            }
        }
        for module in ASSETS.iter().filter(|a| a.content_type == JS) {
            assert!(reached.contains(&module.name), "{} is embedded but never imported", module.name);
            if module.name != "app.js" {
                let preload = format!(r#"<link rel="modulepreload" href="/assets/{}">"#, module.name);
                assert!(INDEX.body.contains(&preload), "index.html must preload {}", module.name);
            }
        }
    }

    #[test]
    fn etags_are_strong_and_revalidate() {
        let tag = etag("app.js").expect("etag").clone();
        assert!(tag.to_str().unwrap().starts_with('"'));
        let mut headers = HeaderMap::new();
        headers.insert(header::IF_NONE_MATCH, tag.clone());
        assert_eq!(serve(asset("app.js"), Some(&headers)).status(), StatusCode::NOT_MODIFIED);
        headers.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
        let fresh = serve(asset("app.js"), Some(&headers));
        assert_eq!(fresh.status(), StatusCode::OK);
        assert_eq!(fresh.headers()[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(fresh.headers()[header::ETAG], tag);
    }
}
