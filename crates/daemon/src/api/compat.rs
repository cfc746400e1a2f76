//! Compatibility endpoint for clients of the classic port-knock REST API:
//! `/api/portknock` (and `/api/portkock`, the original's misspelling).
//!
//! - `POST {"action":"allow","ip":"192.0.2.2","port":22}` opens tcp/PORT for IP for
//!   `[api] default_duration`; `"deny"` revokes the active grant for it. The body is
//!   read leniently, as the original read it (see [`Lenient`]); `/v1` stays strict JSON.
//!   Answer: `{"result":"OK"}`, or `{"result":"NG","message":"..."}` with a 4xx/5xx status.
//! - `GET ?items=50&page=1`: records, newest first.
//! - `GET /{id}`: one record.

use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use portcullis_api::compat::{Action, KnockList, KnockOne, KnockQuery, KnockRequest, KnockResult, Outcome};
use portcullis_api::grants::{MAX_PAGE, MAX_PER_PAGE};
use portcullis_proto::Service;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::error::{ApiError, ApiPath, ApiQuery};
use super::grants::{parse_address, parse_port};
use super::{blocking, view, AppState, Caller};
use crate::grants::{RevokeError, RevokeTarget};
use crate::store::Filter;

/// Largest compat request body: a request is three short fields.
pub const MAX_BODY: usize = 4 * 1024;

/// Most `{` and `[` in a compat body. A request needs one; the bound also bounds how
/// deep the (recursive) parser can go, whatever the body hides in ignored fields.
const MAX_BRACKETS: usize = 8;

/// A compat request body, read as leniently as the original API's JSON reader did:
/// JSON5 syntax (unquoted keys, single-quoted strings, trailing commas, comments), any
/// content type (its documented call is a bare `curl -d`, i.e. form-encoded), keys in
/// any case, a port as a number or a numeric string. Bounded to [`MAX_BODY`] bytes.
pub struct Lenient<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Lenient<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY).await.map_err(|e| {
            let too_large = e.into_inner().is::<http_body_util::LengthLimitError>();
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("body larger than {MAX_BODY} bytes"),
                )
            } else {
                ApiError::bad_request("could not read the request body")
            }
        })?;
        parse_lenient(&bytes).map(Lenient)
    }
}

/// Parse a compat body (see [`Lenient`]): syntax errors are 400, a wrong shape 422.
pub fn parse_lenient<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let text = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("the body is not UTF-8 text"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.bytes().filter(|b| matches!(b, b'{' | b'[')).count() > MAX_BRACKETS {
        return Err(ApiError::bad_request("the body nests too deeply for a knock request"));
    }
    let Fields(fields) = json5::from_str(text).map_err(|e| match e.code() {
        Some(_) => ApiError::bad_request(format!("the body is not JSON: {e}")),
        None => ApiError::invalid(e.to_string()),
    })?;
    let mut object = Map::new();
    for (key, value) in fields {
        let key = key.to_ascii_lowercase();
        let value = match value {
            Value::String(s) if key == "port" && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().map_or(Value::String(s), Value::from)
            }
            v => v,
        };
        if object.contains_key(&key) {
            return Err(ApiError::invalid(format!("key {:?} is given twice", super::grants::trunc(&key))));
        }
        object.insert(key, value);
    }
    serde_json::from_value(Value::Object(object)).map_err(|e| ApiError::invalid(e.to_string()))
}

/// The top-level members of an object, in order and with repeats, so that a key given
/// twice (in two spellings) is refused rather than silently resolved.
struct Fields(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object {action, ip, port}")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut v = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    v.push(entry);
                }
                Ok(Fields(v))
            }
        }
        d.deserialize_any(V)
    }
}

fn ok() -> Json<KnockResult> {
    Json(KnockResult::ok())
}

/// Allow or deny.
#[utoipa::path(
    post, path = "/api/portknock", tag = "compat",
    request_body = KnockRequest,
    responses(
        (status = 200, description = "Done", body = KnockResult),
        (status = 400, description = "Malformed JSON", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 404, description = "deny: no active grant", body = KnockResult),
        (status = 413, description = "Body too large", body = KnockResult),
        (status = 422, description = "Invalid ip or port", body = KnockResult),
        (status = 502, description = "The firewall refused", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn knock(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    Lenient(req): Lenient<KnockRequest>,
) -> Result<Json<KnockResult>, ApiError> {
    let addr = parse_address(&req.ip)?;
    let service = Service::tcp(parse_port(req.port)?);
    match req.action {
        Action::Allow => {
            let origin = super::grants::origin(&caller, &headers);
            let d = state.default_duration;
            state.granter.grant_recorded(origin.clone(), addr, &[service], d).await?;
            tracing::info!("{addr}: api: {origin}: opened {service} ({}s) via /api/portknock", d.as_secs());
            Ok(ok())
        }
        Action::Deny => match state.granter.revoke(RevokeTarget::Key(addr, service), &caller.0).await {
            Ok(_) => Ok(ok()),
            Err(RevokeError::NotFound) => {
                Err(ApiError::not_found(format!("no active grant for {addr} {service}")))
            }
            Err(e) => Err(e.into()),
        },
    }
}

/// Records, newest first.
#[utoipa::path(
    get, path = "/api/portknock", tag = "compat",
    params(KnockQuery),
    responses(
        (status = 200, description = "A page", body = KnockList),
        (status = 400, description = "Bad paging", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<KnockQuery>,
) -> Result<Json<KnockList>, ApiError> {
    let per_page = q.items.unwrap_or(50);
    let page = q.page.unwrap_or(1);
    if per_page == 0 || per_page > MAX_PER_PAGE || page == 0 || page > MAX_PAGE {
        return Err(ApiError::bad_request("items must be 1..1000 and page 1 or more"));
    }
    let store = state.granter.store()?.clone();
    let f = Filter { page, per_page, ..Filter::default() };
    let (items, total) = blocking(move || store.list(&f)).await??;
    Ok(Json(KnockList {
        result: Outcome::Ok,
        items: items.iter().map(view::knock_item).collect(),
        page,
        items_per_page: per_page,
        total,
    }))
}

/// One record.
#[utoipa::path(
    get, path = "/api/portknock/{id}", tag = "compat",
    params(("id" = i64, Path, description = "Record id")),
    responses(
        (status = 200, description = "The record", body = KnockOne),
        (status = 400, description = "Bad id", body = KnockResult),
        (status = 401, description = "Missing or bad token", body = KnockResult),
        (status = 404, description = "No such record", body = KnockResult),
        (status = 503, description = "The store is unavailable", body = KnockResult),
    )
)]
pub async fn get_one(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<KnockOne>, ApiError> {
    let store = state.granter.store()?.clone();
    match blocking(move || store.get(id)).await?? {
        Some(r) => Ok(Json(KnockOne { result: Outcome::Ok, item: view::knock_item(&r) })),
        None => Err(ApiError::not_found(format!("no record {id}"))),
    }
}

/// Status for a compat error body (the same statuses as native errors).
pub fn is_compat_path(path: &str) -> bool {
    path == "/api/portknock"
        || path == "/api/portkock"
        || path.starts_with("/api/portknock/")
        || path.starts_with("/api/portkock/")
}

/// The compat error body.
pub fn ng(status: StatusCode, message: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, Json(KnockResult::ng(message))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenient_parsing_never_panics_on_hostile_text() {
        // Pieces of JSON5 and of multi-byte text, shuffled by a fixed xorshift: error
        // positions must land on character boundaries, numbers must not overflow.
        const PIECES: [&str; 24] = [
            "{",
            "}",
            "[",
            "]",
            ":",
            ",",
            "'",
            "\"",
            "\\",
            "/*",
            "*/",
            "//",
            "\n",
            "action",
            "port",
            "0x",
            "1e999",
            "99999999999999999999",
            "-",
            ".",
            "é",
            "\u{2028}",
            "\u{feff}",
            "Infinity",
        ];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            let mut text = String::new();
            for _ in 0..(x % 24) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                text.push_str(PIECES[(x % PIECES.len() as u64) as usize]);
            }
            let _ = parse_lenient::<KnockRequest>(text.as_bytes());
        }
    }

    #[test]
    fn lenient_reads_what_json_reads() {
        let r: KnockRequest = parse_lenient(br#"{"action":"deny","ip":"2001:db8::1","port":22}"#).unwrap();
        assert_eq!((r.action, r.ip.as_str(), r.port), (Action::Deny, "2001:db8::1", 22));
        let r: KnockRequest = parse_lenient(b"{action:'allow',ip:'192.0.2.2',port:0x16,/* c */}").unwrap();
        assert_eq!(r.port, 22);
        let e = parse_lenient::<KnockRequest>(b"\xff{}").unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (StatusCode::BAD_REQUEST, "the body is not UTF-8 text"));
    }
}
