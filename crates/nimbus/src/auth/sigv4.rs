//! AWS Signature Version 4: checking what AWS clients send, and signing what our CLI sends.
//!
//! [`verify`] implements lambda-wire.md §6.2 and rebuilds the canonical request as botocore
//! and aws-sdk-rust build it for non-S3 services: path normalised and percent-encoded a second
//! time, query re-encoded and sorted, exactly the headers the client lists in `SignedHeaders`.
//! This module owns the key store and its derived-key cache; it must not render HTTP responses
//! (the API layer uses [`AuthError::code`] and [`AuthError::status`]) or decide authorisation.
//! Presigned URLs (signature in the query) are not accepted: no Lambda client sends them.
//! The check comes in two steps, [`precheck`] on the headers and [`Pending::verify`] on the
//! rest, because the signature covers the body: a server must be able to turn away a request
//! that cannot be authentic before it buffers a body of up to tens of megabytes.
//!
//! It runs on every invoke. The four-HMAC key derivation is cached per (access key, date,
//! region, service), which leaves one SHA-256 of the body, one of the canonical request (built
//! in a single buffer) and one HMAC per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hyper::http::header::{AUTHORIZATION, DATE};
use hyper::http::{HeaderMap, HeaderValue};
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &[u8] = b"UNSIGNED-PAYLOAD";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
/// How far a signer's clock may be from ours, either way: AWS's SigV4 window.
const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// A deployment needs one derived key per access key, region and service a day; the bound
/// stops a holder of a valid key from growing the cache by signing for invented regions.
const MAX_CACHED_SIGNING_KEYS: usize = 256;

/// An access key the server accepts, and the account it belongs to.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

/// By hand, so that logging `Credentials` never prints the secret.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// All configured keys, looked up by access key id. Clones are cheap and share one cache.
#[derive(Clone)]
pub struct KeyStore {
    keys: Arc<HashMap<String, Credentials>>,
    /// `<access key>/<yyyymmdd>/<region>/<service>` → an HMAC keyed with that scope's signing
    /// key. Only requests that verified add entries.
    signing_keys: Arc<Mutex<HashMap<Box<str>, HmacSha256>>>,
}

impl KeyStore {
    /// When two entries share an access key id, the later one wins.
    pub fn new(credentials: Vec<Credentials>) -> Self {
        let keys = credentials
            .into_iter()
            .map(|c| (c.access_key_id.clone(), c))
            .collect();
        Self {
            keys: Arc::new(keys),
            signing_keys: Arc::default(),
        }
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Credentials> {
        self.keys.get(access_key_id)
    }

    /// Poisoning is ignored: the cache has no invariant that a panicking holder could break.
    fn signing_keys(&self) -> MutexGuard<'_, HashMap<Box<str>, HmacSha256>> {
        self.signing_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

/// Why a request is not authenticated: a variant per AWS error code, worded as AWS words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization` header.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,
    /// `Authorization` or the date header missing parts or malformed; the message says which.
    #[error("{0}")]
    IncompleteSignature(String),
    /// An unknown access key, or a session token (Nimbus issues none).
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    /// Signed outside the clock-skew window, a credential scope dated another day, or a body
    /// that does not match its signed `x-amz-content-sha256`; the message says which.
    #[error("{0}")]
    InvalidSignature(String),
    #[error(
        "The request signature we calculated does not match the signature you provided. Check \
         your AWS Secret Access Key and signing method. Consult the service documentation for \
         details."
    )]
    SignatureMismatch,
}

impl AuthError {
    /// The AWS error code, for `x-amzn-ErrorType`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingAuthenticationToken => "MissingAuthenticationTokenException",
            Self::IncompleteSignature(_) => "IncompleteSignatureException",
            Self::UnrecognizedClient => "UnrecognizedClientException",
            Self::InvalidSignature(_) | Self::SignatureMismatch => "InvalidSignatureException",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::IncompleteSignature(_) => 400,
            _ => 403,
        }
    }
}

fn incomplete(message: impl Into<String>) -> AuthError {
    AuthError::IncompleteSignature(message.into())
}

/// Checks a request signed with an `Authorization: AWS4-HMAC-SHA256 …` header and returns the
/// key that signed it: [`precheck`] and [`Pending::verify`] in one call, for a caller that
/// already holds the body.
///
/// `raw_path` is the path exactly as received (still percent-encoded), `raw_query` the raw
/// query string ("" if none). `host` must be among `headers` (so it is for HTTP/1.1; an HTTP/2
/// front end must copy `:authority` into it). Any region and service are accepted.
pub fn verify<'k>(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    keys: &'k KeyStore,
    now: SystemTime,
) -> Result<&'k Credentials, AuthError> {
    precheck(headers, keys, now)?.verify(method, raw_path, raw_query, body)
}

/// Every check that needs only the headers: the `Authorization` header and its credential
/// scope parse, the date is within [`MAX_CLOCK_SKEW_SECS`] of `now`, the access key is known
/// and no session token is sent. A request that fails here fails [`verify`] with the same
/// error, so a server can refuse it before reading a byte of its body.
pub fn precheck<'r, 'k>(
    headers: &'r HeaderMap,
    keys: &'k KeyStore,
    now: SystemTime,
) -> Result<Pending<'r, 'k>, AuthError> {
    let claim = Claim::parse(headers)?;
    let scope = CredentialScope::parse(claim.credential)?;
    check_time(&claim.time, scope.date, unix_secs(now))?;
    let credentials = keys
        .get(scope.access_key_id)
        .ok_or(AuthError::UnrecognizedClient)?;
    if headers.contains_key("x-amz-security-token") {
        return Err(AuthError::UnrecognizedClient);
    }
    Ok(Pending {
        headers,
        claim,
        scope,
        credentials,
        keys,
    })
}

/// A request whose headers passed [`precheck`]; only the signature over the whole request,
/// body included, is left to check. It proves nothing yet: anyone who has seen an access key
/// id can write headers that get this far.
pub struct Pending<'r, 'k> {
    headers: &'r HeaderMap,
    claim: Claim<'r>,
    scope: CredentialScope<'r>,
    credentials: &'k Credentials,
    keys: &'k KeyStore,
}

impl<'k> Pending<'_, 'k> {
    /// Checks the signature over the request line, the signed headers and `body`, and returns
    /// the key that signed it. `raw_path` and `raw_query` are as [`verify`] takes them.
    pub fn verify(
        self,
        method: &str,
        raw_path: &str,
        raw_query: &str,
        body: &[u8],
    ) -> Result<&'k Credentials, AuthError> {
        let Self {
            headers,
            claim,
            scope,
            credentials,
            keys,
        } = self;
        let mut body_hash = [0; 64];
        let payload_hash = payload_hash(headers, body, &mut body_hash)?;
        let mut canonical = CanonicalRequest::start(method, raw_path, raw_query);
        for name in claim.signed_headers.split(';') {
            let values = headers.get_all(name).iter();
            canonical.header(name, values.map(HeaderValue::as_bytes));
        }
        let canonical = canonical.finish(claim.signed_headers, payload_hash);
        let cached = keys.signing_keys().get(scope.cache_key).cloned();
        let secret = &credentials.secret_access_key;
        let mac = cached
            .clone()
            .unwrap_or_else(|| signing_mac(secret, scope.scope));
        let expected = signature(mac.clone(), &claim.time, scope.scope, &canonical);
        if !constant_time_eq(&expected, claim.signature.as_bytes()) {
            let canonical_request = String::from_utf8_lossy(&canonical);
            tracing::debug!(%canonical_request, access_key_id = scope.access_key_id, "SigV4 signature mismatch");
            return Err(AuthError::SignatureMismatch);
        }
        if cached.is_none() {
            let mut cache = keys.signing_keys();
            if cache.len() >= MAX_CACHED_SIGNING_KEYS {
                cache.clear();
            }
            cache.insert(scope.cache_key.into(), mac);
        }
        Ok(credentials)
    }
}

/// What [`sign_request`] needs besides the request.
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub now: SystemTime,
}

/// Signs a request for a client and returns the headers to add: `x-amz-date`, `authorization`.
///
/// Signs `host` (which must be among `headers`, valued as it will be sent, port included),
/// `x-amz-date` and every `x-amz-*` header given; other headers go unsigned. The payload is
/// signed as the body's SHA-256 unless `headers` carry `x-amz-content-sha256`.
pub fn sign_request(
    params: &SigningParams<'_>,
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> Vec<(String, String)> {
    let time = SigningTime::from_unix(unix_secs(params.now));
    let mut signed: Vec<(String, &str)> = headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.as_str()))
        .filter(|(name, _)| name == "host" || (name.starts_with("x-amz-") && name != X_AMZ_DATE))
        .collect();
    signed.push((X_AMZ_DATE.to_owned(), time.as_str()));
    // Stable, so that a repeated header keeps its values in the order given.
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&str> = signed.iter().map(|(name, _)| name.as_str()).collect();
    names.dedup();
    let signed_headers = names.join(";");

    let body_hash = hex32(&Sha256::digest(body));
    let payload_hash = signed
        .iter()
        .find(|(name, _)| name == X_AMZ_CONTENT_SHA256)
        .map_or(&body_hash[..], |(_, value)| value.as_bytes());
    let mut canonical = CanonicalRequest::start(method, raw_path, raw_query);
    for &name in &names {
        let values = signed.iter().filter(|(n, _)| n == name);
        canonical.header(name, values.map(|(_, value)| value.as_bytes()));
    }
    let canonical = canonical.finish(&signed_headers, payload_hash);
    let (day, region, service) = (time.day(), params.region, params.service);
    let scope = format!("{day}/{region}/{service}/{TERMINATOR}");
    let mac = signing_mac(params.secret_access_key, &scope);
    let signature = signature(mac, &time, &scope, &canonical);
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={}",
        params.access_key_id,
        String::from_utf8_lossy(&signature),
    );
    vec![
        (X_AMZ_DATE.to_owned(), time.as_str().to_owned()),
        ("authorization".to_owned(), authorization),
    ]
}

/// What the `Authorization` header and the date header claim.
struct Claim<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    time: SigningTime,
}

impl<'a> Claim<'a> {
    /// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, dated by `X-Amz-Date`,
    /// else by `Date` in the same format.
    fn parse(headers: &'a HeaderMap) -> Result<Self, AuthError> {
        let value = headers
            .get(AUTHORIZATION)
            .ok_or(AuthError::MissingAuthenticationToken)?
            .to_str()
            .map_err(|_| incomplete("Authorization header is not ASCII."))?;
        let (mut credential, mut signed_headers, mut signature) = ("", "", "");
        let params = value
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '));
        for param in params.unwrap_or_default().split(',') {
            match param.trim().split_once('=') {
                Some(("Credential", v)) => credential = v,
                Some(("SignedHeaders", v)) => signed_headers = v,
                Some(("Signature", v)) => signature = v,
                _ => {}
            }
        }
        let parts = [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ];
        let mut missing: Vec<String> = parts
            .iter()
            .filter(|(_, found)| found.is_empty())
            .map(|(name, _)| format!("Authorization header requires '{name}' parameter."))
            .collect();
        let date = headers.get(X_AMZ_DATE).or_else(|| headers.get(DATE));
        if date.is_none() {
            missing.push("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.".into());
        }
        let (Some(date), true) = (date, missing.is_empty()) else {
            return Err(incomplete(missing.join(" ")));
        };
        let time = SigningTime::parse(date.as_bytes()).ok_or_else(|| {
            let got = String::from_utf8_lossy(date.as_bytes());
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{got}'. See http://en.wikipedia.org/wiki/ISO_8601"
            ))
        })?;
        if !signed_headers.split(';').any(|name| name == "host") {
            return Err(incomplete(
                "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
            ));
        }
        Ok(Self {
            credential,
            signed_headers,
            signature,
            time,
        })
    }
}

/// The parts of `Credential=<access key>/<yyyymmdd>/<region>/<service>/aws4_request`.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    /// `<access key>/<yyyymmdd>/<region>/<service>`, the signing-key cache key.
    cache_key: &'a str,
    /// `<yyyymmdd>/<region>/<service>/aws4_request`, as the string to sign carries it.
    scope: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(credential: &'a str) -> Result<Self, AuthError> {
        let parts = || {
            let (cache_key, terminator) = credential.rsplit_once('/')?;
            let (rest, service) = cache_key.rsplit_once('/')?;
            let (rest, region) = rest.rsplit_once('/')?;
            let (access_key_id, date) = rest.rsplit_once('/')?;
            let scope = credential.get(access_key_id.len() + 1..)?;
            let fields = [access_key_id, date, region, service];
            let valid = !access_key_id.contains('/') && fields.iter().all(|f| !f.is_empty());
            let scope = Self {
                access_key_id,
                date,
                cache_key,
                scope,
            };
            valid.then_some((scope, terminator))
        };
        let Some((scope, terminator)) = parts() else {
            return Err(incomplete(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
            )));
        };
        if terminator != TERMINATOR {
            return Err(incomplete(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
            )));
        }
        Ok(scope)
    }
}

/// The credential scope must be dated the request's day, and the request signed within
/// [`MAX_CLOCK_SKEW_SECS`] of `now`.
fn check_time(time: &SigningTime, scope_date: &str, now: i64) -> Result<(), AuthError> {
    let signed = time.as_str();
    let (earliest, latest) = (now - MAX_CLOCK_SKEW_SECS, now + MAX_CLOCK_SKEW_SECS);
    let at = |secs| SigningTime::from_unix(secs).as_str().to_owned();
    let message = if scope_date != time.day() {
        format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
             '{scope_date}' != '{}', from '{signed}'.",
            time.day()
        )
    } else if time.secs < earliest {
        format!(
            "Signature expired: {signed} is now earlier than {} ({} - 5 min.)",
            at(earliest),
            at(now)
        )
    } else if time.secs > latest {
        format!(
            "Signature not yet current: {signed} is still later than {} ({} + 5 min.)",
            at(latest),
            at(now)
        )
    } else {
        return Ok(());
    };
    Err(AuthError::InvalidSignature(message))
}

/// A signing time: the `YYYYMMDDTHHMMSSZ` text the string to sign carries, and its Unix time.
struct SigningTime {
    text: [u8; 16],
    secs: i64,
}

impl SigningTime {
    /// ISO 8601 basic format, `20150830T123600Z`, kept verbatim.
    fn parse(value: &[u8]) -> Option<Self> {
        let text: [u8; 16] = value.try_into().ok()?;
        let field = |at: usize, len: usize| {
            let digits = text.get(at..at + len)?;
            digits.iter().try_fold(0, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
            })
        };
        let (year, month, day) = (field(0, 4)?, field(4, 2)?, field(6, 2)?);
        let (hour, min, sec) = (field(9, 2)?, field(11, 2)?, field(13, 2)?);
        let in_range = (1..=12).contains(&month) && (1..=31).contains(&day);
        let valid =
            in_range && hour < 24 && min < 60 && sec < 61 && text[8] == b'T' && text[15] == b'Z';
        let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec;
        valid.then_some(Self { text, secs })
    }

    fn from_unix(secs: i64) -> Self {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let (hour, min, sec) = (
            secs.rem_euclid(86_400) / 3600,
            secs.rem_euclid(3600) / 60,
            secs.rem_euclid(60),
        );
        let text = format!("{year:04}{month:02}{day:02}T{hour:02}{min:02}{sec:02}Z");
        // A year past 9999 (an absurd clock) does not fit the format; zeros stand in.
        let text = text.as_bytes().try_into().unwrap_or(*b"00000000T000000Z");
        Self { text, secs }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text).unwrap_or_default()
    }

    /// `YYYYMMDD`, as the credential scope carries it.
    fn day(&self) -> &str {
        self.as_str().get(..8).unwrap_or_default()
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (year.div_euclid(400), year.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    era * 146_097 + year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let (era, day_of_era) = (
        (days + 719_468).div_euclid(146_097),
        (days + 719_468).rem_euclid(146_097),
    );
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = shifted_month + if shifted_month < 10 { 3 } else { -9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX / 2),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX / 2),
    }
}

/// The canonical request's payload line: a signed `x-amz-content-sha256` verbatim
/// (`UNSIGNED-PAYLOAD` included) once checked against the body, else the body's hash.
fn payload_hash<'a>(
    headers: &'a HeaderMap,
    body: &[u8],
    buf: &'a mut [u8; 64],
) -> Result<&'a [u8], AuthError> {
    let claimed = headers.get(X_AMZ_CONTENT_SHA256).map(HeaderValue::as_bytes);
    if claimed == Some(UNSIGNED_PAYLOAD) {
        return Ok(UNSIGNED_PAYLOAD);
    }
    *buf = hex32(&Sha256::digest(body));
    match claimed {
        None => Ok(&buf[..]),
        Some(claimed) if claimed.eq_ignore_ascii_case(&buf[..]) => Ok(claimed),
        Some(_) => Err(AuthError::InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into(),
        )),
    }
}

/// The canonical request, built in one buffer: `METHOD\nPATH\nQUERY\n`, a `name:values\n`
/// line per signed header, then `\nSIGNED_HEADERS\nPAYLOAD_HASH`.
struct CanonicalRequest(Vec<u8>);

impl CanonicalRequest {
    fn start(method: &str, raw_path: &str, raw_query: &str) -> Self {
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(method.as_bytes());
        out.push(b'\n');
        canonical_path(&mut out, raw_path);
        out.push(b'\n');
        canonical_query(&mut out, raw_query);
        out.push(b'\n');
        Self(out)
    }

    /// Values joined by `,`, each trimmed and its inner runs of whitespace collapsed
    /// (botocore's `' '.join(value.split())`).
    fn header<'v>(&mut self, name: &str, values: impl Iterator<Item = &'v [u8]>) {
        let out = &mut self.0;
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        for (i, value) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let words = value
                .split(|&b| b == b' ' || b == b'\t')
                .filter(|w| !w.is_empty());
            for (j, word) in words.enumerate() {
                if j > 0 {
                    out.push(b' ');
                }
                out.extend_from_slice(word);
            }
        }
        out.push(b'\n');
    }

    fn finish(mut self, signed_headers: &str, payload_hash: &[u8]) -> Vec<u8> {
        for part in [&b"\n"[..], signed_headers.as_bytes(), b"\n", payload_hash] {
            self.0.extend_from_slice(part);
        }
        self.0
    }
}

/// botocore's `quote(remove_dot_segments(path), safe='/~')`: `.`, `..` and empty segments go,
/// then the still-encoded path is encoded again (`%3A` → `%253A`). An empty path becomes `/`.
fn canonical_path(out: &mut Vec<u8>, raw_path: &str) {
    let mut segments = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => drop(segments.pop()),
            _ => segments.push(segment),
        }
    }
    if raw_path.starts_with('/') || raw_path.is_empty() {
        out.push(b'/');
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.push(b'/');
        }
        encode(out, segment.bytes());
    }
    if raw_path.ends_with('/') && !segments.is_empty() {
        out.push(b'/');
    }
}

/// `&`-separated pairs, key and value each decoded then re-encoded, sorted by key then value.
fn canonical_query(out: &mut Vec<u8>, raw_query: &str) {
    let encoded = |raw: &str| {
        let mut part = Vec::with_capacity(raw.len());
        encode(&mut part, percent_decode_str(raw));
        part
    };
    let mut pairs: Vec<_> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(key, value)| (encoded(key), encoded(value)))
        .collect();
    pairs.sort_unstable();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(key);
        out.push(b'=');
        out.extend_from_slice(value);
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved `A-Za-z0-9-_.~`.
fn encode(out: &mut Vec<u8>, bytes: impl Iterator<Item = u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        }
    }
}

/// `hex(HMAC(kSigning, StringToSign))`, lower-case.
fn signature(
    mut mac: HmacSha256,
    time: &SigningTime,
    scope: &str,
    canonical_request: &[u8],
) -> [u8; 64] {
    let canonical_hash = hex32(&Sha256::digest(canonical_request));
    for part in [
        ALGORITHM.as_bytes(),
        b"\n",
        &time.text,
        b"\n",
        scope.as_bytes(),
        b"\n",
        &canonical_hash,
    ] {
        mac.update(part);
    }
    hex32(&mac.finalize().into_bytes())
}

/// The key chain `HMAC("AWS4"+secret, date)` → region → service → `aws4_request`, over the
/// parts of `scope`, returned as an HMAC keyed with its result, ready to clone per request.
fn signing_mac(secret: &str, scope: &str) -> HmacSha256 {
    let mut key = keyed_mac(&[b"AWS4", secret.as_bytes()].concat());
    for part in scope.split('/') {
        key.update(part.as_bytes());
        key = keyed_mac(&key.finalize().into_bytes());
    }
    key
}

/// RFC 2104 keying (a key longer than the 64-byte block is hashed, a shorter one zero-padded),
/// done here because `new_from_slice` returns a `Result` that cannot be an error.
fn keyed_mac(key: &[u8]) -> HmacSha256 {
    let mut block = [0; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block.into())
}

/// Lower-case hex of a 32-byte digest.
fn hex32(digest: &[u8]) -> [u8; 64] {
    let mut out = [0; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = b"0123456789abcdef"[usize::from(b >> 4)];
        pair[1] = b"0123456789abcdef"[usize::from(b & 0xf)];
    }
    out
}

/// Compares without an early exit, so the time taken does not tell a forger how many leading
/// characters were right. (Lengths are public: a real signature is 64 characters.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let difference = a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y));
    a.len() == b.len() && std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests;
