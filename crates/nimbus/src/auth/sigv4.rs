//! AWS Signature Version 4: checking what AWS clients send, and signing what our CLI sends.
//!
//! [`verify`] follows lambda-wire.md §6.2 and rebuilds the canonical request exactly as
//! botocore and aws-sdk-rust build it for non-S3 services (path normalised and encoded a
//! second time, query re-encoded and sorted, the client's own `SignedHeaders` list). It owns
//! the credential store and its derived-key cache; it must not build HTTP responses (the API
//! layer renders [`AuthError::code`]/[`AuthError::status`]) or make authorisation decisions.
//!
//! It runs on every invoke, so the canonical request is streamed into SHA-256 rather than
//! built as a string, and the four-HMAC signing-key derivation is cached per
//! (access key, date, region, service): a verification costs one hash of the body, one of the
//! canonical request and one HMAC over the string to sign.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use hyper::http::HeaderMap;
use hyper::http::header::{AUTHORIZATION, DATE};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const TERMINATOR: &str = "aws4_request";
const UNSIGNED_PAYLOAD: &[u8] = b"UNSIGNED-PAYLOAD";
const X_AMZ_DATE: &str = "x-amz-date";
const X_AMZ_CONTENT_SHA256: &str = "x-amz-content-sha256";
const X_AMZ_SECURITY_TOKEN: &str = "x-amz-security-token";
/// How far a signer's clock may be from ours, either way: AWS's documented SigV4 window.
const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;
/// Longest presigned-URL lifetime AWS accepts in `X-Amz-Expires`: one week.
const MAX_PRESIGNED_EXPIRY_SECS: i64 = 7 * 24 * 60 * 60;
/// A deployment needs one derived key per access key, region and service per day; the bound
/// only stops a holder of a valid key from growing the cache by signing for invented regions.
const MAX_CACHED_SIGNING_KEYS: usize = 256;
/// The presigned-URL parameters, in the order `PresignedQuery::params` holds them.
const PRESIGNED_PARAMS: [&str; 6] = [
    "X-Amz-Algorithm",
    "X-Amz-Credential",
    "X-Amz-Date",
    "X-Amz-Expires",
    "X-Amz-SignedHeaders",
    "X-Amz-Signature",
];
const PRESIGNED_PARAMS_MESSAGE: &str = "AWS query-string parameters must include 'X-Amz-Algorithm', \
    'X-Amz-Credential', 'X-Amz-Signature', 'X-Amz-Date', 'X-Amz-SignedHeaders', and 'X-Amz-Expires'. \
    Re-examine the query-string parameters.";

/// An access key the server accepts, and the account it belongs to.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub account_id: String,
}

/// Written by hand so that logging a `Credentials` never prints the secret.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("account_id", &self.account_id)
            .finish()
    }
}

/// All configured keys, looked up by access key id. Clones are cheap and share one
/// signing-key cache.
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<KeyStoreInner>,
}

struct KeyStoreInner {
    keys: HashMap<String, Credentials>,
    /// `"<access key>/<yyyymmdd>/<region>/<service>"` → an HMAC already keyed with that
    /// scope's signing key. Only requests that verified add entries.
    signing_keys: Mutex<HashMap<Box<str>, HmacSha256>>,
}

impl KeyStore {
    /// When two entries share an access key id, the later one wins.
    pub fn new(credentials: Vec<Credentials>) -> Self {
        let keys = credentials
            .into_iter()
            .map(|c| (c.access_key_id.clone(), c))
            .collect();
        let signing_keys = Mutex::new(HashMap::new());
        Self {
            inner: Arc::new(KeyStoreInner { keys, signing_keys }),
        }
    }

    pub fn get(&self, access_key_id: &str) -> Option<&Credentials> {
        self.inner.keys.get(access_key_id)
    }

    fn cached_signing_mac(&self, cache_key: &str) -> Option<HmacSha256> {
        self.signing_keys().get(cache_key).cloned()
    }

    fn remember_signing_mac(&self, cache_key: &str, mac: HmacSha256) {
        let mut cache = self.signing_keys();
        if cache.len() >= MAX_CACHED_SIGNING_KEYS {
            cache.clear();
        }
        cache.insert(cache_key.into(), mac);
    }

    /// The cache holds no invariant a panicking holder could break, so poisoning is ignored.
    fn signing_keys(&self) -> MutexGuard<'_, HashMap<Box<str>, HmacSha256>> {
        self.inner
            .signing_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.inner.keys.keys()).finish()
    }
}

/// Why a request is not authenticated. Messages are worded as AWS words them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Neither an `Authorization` header nor presigned-URL parameters.
    #[error("Missing Authentication Token")]
    MissingAuthenticationToken,
    /// Signature parts missing or unparseable; the message says which.
    #[error("{0}")]
    IncompleteSignature(String),
    /// Unknown access key, or a session token (Nimbus issues none).
    #[error("The security token included in the request is invalid.")]
    UnrecognizedClient,
    #[error(
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
         '{scope_date}' != '{request_date}', from '{request_time}'."
    )]
    CredentialDateMismatch {
        scope_date: String,
        request_date: String,
        request_time: String,
    },
    /// `window` is "5 min" for a signed header, the URL's lifetime for a presigned URL.
    #[error("Signature expired: {signed} is now earlier than {earliest} ({now} - {window}.)")]
    SignatureExpired {
        signed: String,
        earliest: String,
        now: String,
        window: String,
    },
    #[error("Signature not yet current: {signed} is still later than {latest} ({now} + 5 min.)")]
    SignatureNotYetCurrent {
        signed: String,
        latest: String,
        now: String,
    },
    /// A signed `x-amz-content-sha256` that is not the body's hash: the body was altered.
    #[error("The provided 'x-amz-content-sha256' header does not match what was computed.")]
    PayloadHashMismatch,
    #[error(
        "The request signature we calculated does not match the signature you provided. Check your \
         AWS Secret Access Key and signing method. Consult the service documentation for details."
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
            Self::CredentialDateMismatch { .. }
            | Self::SignatureExpired { .. }
            | Self::SignatureNotYetCurrent { .. }
            | Self::PayloadHashMismatch
            | Self::SignatureMismatch => "InvalidSignatureException",
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

/// Checks a SigV4-signed request (an `Authorization` header, or else presigned-URL query
/// parameters) and returns the key that signed it.
///
/// `raw_path` is the path exactly as received (still percent-encoded), `raw_query` the raw
/// query string ("" if none). The `host` header must be in `headers` (true of HTTP/1.1
/// requests; an HTTP/2 front end must copy `:authority` into it). Any region and any
/// service name are accepted in the credential scope.
pub fn verify<'k>(
    method: &str,
    raw_path: &str,
    raw_query: &str,
    headers: &HeaderMap,
    body: &[u8],
    keys: &'k KeyStore,
    now: SystemTime,
) -> Result<&'k Credentials, AuthError> {
    let presigned;
    let claim = match headers.get(AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| incomplete("Authorization header is not ASCII."))?;
            Claim::from_authorization(value, headers)?
        }
        None => {
            presigned =
                PresignedQuery::find(raw_query)?.ok_or(AuthError::MissingAuthenticationToken)?;
            presigned.claim()?
        }
    };
    let scope = CredentialScope::parse(claim.credential)?;
    if !claim.signed_headers.split(';').any(|name| name == "host") {
        return Err(incomplete(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ));
    }
    claim.check_time(scope.date, unix_secs(now))?;
    let credentials = keys
        .get(scope.access_key_id)
        .ok_or(AuthError::UnrecognizedClient)?;
    if claim.has_session_token {
        return Err(AuthError::UnrecognizedClient);
    }

    let mut body_hash = [0; 64];
    let request = CanonicalRequest {
        method,
        raw_path,
        raw_query,
        skip_signature_param: claim.expires.is_some(),
        signed_headers: claim.signed_headers,
        payload_hash: payload_hash(headers, body, &mut body_hash)?,
    };
    let header_values = |name: &str, emit: &mut dyn FnMut(&[u8])| {
        headers
            .get_all(name)
            .iter()
            .for_each(|value| emit(value.as_bytes()));
    };
    let mut hasher = Sha256::new();
    request.write(&mut hasher, &header_values);

    let cached = keys.cached_signing_mac(scope.cache_key);
    let was_cached = cached.is_some();
    let mac = cached.unwrap_or_else(|| {
        derive_signing_mac(
            &credentials.secret_access_key,
            scope.date,
            scope.region,
            scope.service,
        )
    });
    let expected = signature(mac.clone(), &claim.time, scope.scope, &hasher.finalize());
    if !constant_time_eq(&expected, claim.signature.as_bytes()) {
        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut text = Vec::new();
            request.write(&mut text, &header_values);
            let canonical_request = String::from_utf8_lossy(&text);
            tracing::debug!(%canonical_request, access_key_id = scope.access_key_id, "SigV4 signature mismatch");
        }
        return Err(AuthError::SignatureMismatch);
    }
    if !was_cached {
        keys.remember_signing_mac(scope.cache_key, mac);
    }
    Ok(credentials)
}

/// What [`sign_request`] needs besides the request.
pub struct SigningParams<'a> {
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub now: SystemTime,
}

/// Signs a request for a client; returns the headers to add (`x-amz-date`, `authorization`).
///
/// Signs `host` (which must be among `headers`, valued as it will be sent, port included),
/// `x-amz-date` and every `x-amz-*` header in `headers`; other headers are left unsigned. The
/// payload is signed as the body's SHA-256 unless `headers` carry `x-amz-content-sha256`.
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
        .filter_map(|(name, value)| {
            let name = name.trim().to_ascii_lowercase();
            let wanted = name == "host" || (name.starts_with("x-amz-") && name != X_AMZ_DATE);
            wanted.then_some((name, value.as_str()))
        })
        .collect();
    signed.push((X_AMZ_DATE.to_owned(), time.as_str()));
    // Stable, so a repeated header keeps its values in the order given, as on the wire.
    signed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&str> = signed.iter().map(|(name, _)| name.as_str()).collect();
    names.dedup();
    let signed_headers = names.join(";");

    let body_hash;
    let payload_hash = match signed.iter().find(|(name, _)| name == X_AMZ_CONTENT_SHA256) {
        Some((_, claimed)) => claimed.as_bytes(),
        None => {
            body_hash = hex32(&Sha256::digest(body));
            &body_hash[..]
        }
    };
    let request = CanonicalRequest {
        method,
        raw_path,
        raw_query,
        skip_signature_param: false,
        signed_headers: &signed_headers,
        payload_hash,
    };
    let header_values = |name: &str, emit: &mut dyn FnMut(&[u8])| {
        signed
            .iter()
            .filter(|(n, _)| n == name)
            .for_each(|(_, value)| emit(value.as_bytes()));
    };
    let mut hasher = Sha256::new();
    request.write(&mut hasher, &header_values);

    let scope = format!(
        "{}/{}/{}/{TERMINATOR}",
        time.day(),
        params.region,
        params.service
    );
    let mac = derive_signing_mac(
        params.secret_access_key,
        time.day(),
        params.region,
        params.service,
    );
    let signature = signature(mac, &time, &scope, &hasher.finalize());
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

/// What a request claims about its signature, from either the header or the query.
struct Claim<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
    time: SigningTime,
    /// Lifetime of a presigned URL; header-signed requests get the clock-skew window.
    expires: Option<i64>,
    has_session_token: bool,
}

impl<'a> Claim<'a> {
    /// `AWS4-HMAC-SHA256 Credential=…, SignedHeaders=…, Signature=…`, dated by `X-Amz-Date`
    /// or else `Date`.
    fn from_authorization(value: &'a str, headers: &HeaderMap) -> Result<Self, AuthError> {
        let (mut credential, mut signed_headers, mut signature) = ("", "", "");
        if let Some(params) = value
            .strip_prefix(ALGORITHM)
            .filter(|rest| rest.starts_with(' '))
        {
            for param in params.split(',') {
                match param.trim().split_once('=') {
                    Some(("Credential", v)) => credential = v,
                    Some(("SignedHeaders", v)) => signed_headers = v,
                    Some(("Signature", v)) => signature = v,
                    _ => {}
                }
            }
        }
        let time = match headers.get(X_AMZ_DATE) {
            Some(value) => Some(parse_time(value.as_bytes(), false)?),
            None => headers
                .get(DATE)
                .map(|value| parse_time(value.as_bytes(), true))
                .transpose()?,
        };
        let mut missing = String::new();
        for (name, found) in [
            ("Credential", credential),
            ("Signature", signature),
            ("SignedHeaders", signed_headers),
        ] {
            if found.is_empty() {
                missing.push_str(&format!(
                    "Authorization header requires '{name}' parameter. "
                ));
            }
        }
        if time.is_none() {
            missing.push_str("Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.");
        }
        let (Some(time), true) = (time, missing.is_empty()) else {
            return Err(incomplete(missing.trim_end()));
        };
        let has_session_token = headers.contains_key(X_AMZ_SECURITY_TOKEN);
        Ok(Self {
            credential,
            signed_headers,
            signature,
            time,
            expires: None,
            has_session_token,
        })
    }

    /// The credential date must be the request's day, and the request within its window.
    fn check_time(&self, scope_date: &str, now: i64) -> Result<(), AuthError> {
        if scope_date != self.time.day() {
            return Err(AuthError::CredentialDateMismatch {
                scope_date: scope_date.to_owned(),
                request_date: self.time.day().to_owned(),
                request_time: self.time.as_str().to_owned(),
            });
        }
        let lifetime = self.expires.unwrap_or(MAX_CLOCK_SKEW_SECS);
        let earliest = now.saturating_sub(lifetime);
        if self.time.secs < earliest {
            let window = match self.expires {
                None => "5 min".to_owned(),
                Some(secs) => format!("{secs} sec"),
            };
            return Err(AuthError::SignatureExpired {
                signed: self.time.as_str().to_owned(),
                earliest: SigningTime::from_unix(earliest).as_str().to_owned(),
                now: SigningTime::from_unix(now).as_str().to_owned(),
                window,
            });
        }
        let latest = now.saturating_add(MAX_CLOCK_SKEW_SECS);
        if self.time.secs > latest {
            return Err(AuthError::SignatureNotYetCurrent {
                signed: self.time.as_str().to_owned(),
                latest: SigningTime::from_unix(latest).as_str().to_owned(),
                now: SigningTime::from_unix(now).as_str().to_owned(),
            });
        }
        Ok(())
    }
}

fn parse_time(value: &[u8], http_date_allowed: bool) -> Result<SigningTime, AuthError> {
    let text = std::str::from_utf8(value).unwrap_or_default();
    SigningTime::parse_basic(text)
        .or_else(|| http_date_allowed.then(|| SigningTime::parse_http_date(text)).flatten())
        .ok_or_else(|| {
            incomplete(format!(
                "Date must be in ISO-8601 'basic format'. Got '{}'. See http://en.wikipedia.org/wiki/ISO_8601",
                String::from_utf8_lossy(value)
            ))
        })
}

/// The presigned-URL parameters of a query string, percent-decoded.
struct PresignedQuery<'q> {
    params: [Option<Cow<'q, str>>; 6],
    has_session_token: bool,
}

impl<'q> PresignedQuery<'q> {
    /// `None` when the query carries none of the parameters (the request is simply unsigned).
    fn find(raw_query: &'q str) -> Result<Option<Self>, AuthError> {
        let mut params: [Option<Cow<'q, str>>; 6] = Default::default();
        let mut has_session_token = false;
        for pair in raw_query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == "X-Amz-Security-Token" {
                has_session_token = true;
            } else if let Some(i) = PRESIGNED_PARAMS.iter().position(|p| *p == key) {
                let value = percent_encoding::percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| incomplete(PRESIGNED_PARAMS_MESSAGE))?;
                params[i] = Some(value);
            }
        }
        Ok(params.iter().any(Option::is_some).then_some(Self {
            params,
            has_session_token,
        }))
    }

    fn claim(&self) -> Result<Claim<'_>, AuthError> {
        let [
            Some(algorithm),
            Some(credential),
            Some(date),
            Some(expires),
            Some(signed_headers),
            Some(signature),
        ] = &self.params
        else {
            return Err(incomplete(PRESIGNED_PARAMS_MESSAGE));
        };
        if algorithm != ALGORITHM {
            return Err(incomplete(PRESIGNED_PARAMS_MESSAGE));
        }
        let time = parse_time(date.as_bytes(), false)?;
        let expires = expires
            .parse::<i64>()
            .ok()
            .filter(|secs| (1..=MAX_PRESIGNED_EXPIRY_SECS).contains(secs))
            .ok_or_else(|| {
                incomplete("X-Amz-Expires must be less than a week (in seconds) that is 604800")
            })?;
        Ok(Claim {
            credential,
            signed_headers,
            signature,
            time,
            expires: Some(expires),
            has_session_token: self.has_session_token,
        })
    }
}

/// The parts of `<access key>/<yyyymmdd>/<region>/<service>/aws4_request`.
struct CredentialScope<'a> {
    access_key_id: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
    /// `<access key>/<yyyymmdd>/<region>/<service>`, the signing-key cache key.
    cache_key: &'a str,
    /// `<yyyymmdd>/<region>/<service>/aws4_request`, as it goes into the string to sign.
    scope: &'a str,
}

impl<'a> CredentialScope<'a> {
    fn parse(credential: &'a str) -> Result<Self, AuthError> {
        let mut parts = credential.split('/');
        let malformed = || {
            incomplete(format!(
                "Credential must have exactly 5 slash-delimited elements, e.g. keyid/date/region/service/term, got '{credential}'"
            ))
        };
        let (Some(access_key_id), Some(date), Some(region), Some(service), Some(terminator), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(malformed());
        };
        if [access_key_id, date, region, service]
            .iter()
            .any(|part| part.is_empty())
        {
            return Err(malformed());
        }
        if terminator != TERMINATOR {
            return Err(incomplete(format!(
                "Credential should be scoped with a valid terminator: '{TERMINATOR}', not '{terminator}'."
            )));
        }
        let cache_key = credential
            .strip_suffix(TERMINATOR)
            .and_then(|c| c.strip_suffix('/'));
        let scope = credential
            .strip_prefix(access_key_id)
            .and_then(|c| c.strip_prefix('/'));
        let (Some(cache_key), Some(scope)) = (cache_key, scope) else {
            return Err(malformed());
        };
        Ok(Self {
            access_key_id,
            date,
            region,
            service,
            cache_key,
            scope,
        })
    }
}

/// A signing time: the `YYYYMMDDTHHMMSSZ` text the string to sign carries, and its Unix time.
struct SigningTime {
    text: [u8; 16],
    secs: i64,
}

impl SigningTime {
    /// ISO 8601 basic format, `20150830T123600Z`, kept verbatim.
    fn parse_basic(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
            return None;
        }
        let secs = civil_to_unix(
            digits(&b[0..4])?,
            digits(&b[4..6])?,
            digits(&b[6..8])?,
            digits(&b[9..11])?,
            digits(&b[11..13])?,
            digits(&b[13..15])?,
        )?;
        let mut text = [0; 16];
        text.copy_from_slice(b);
        Some(Self { text, secs })
    }

    /// HTTP's IMF-fixdate, `Sun, 30 Aug 2015 12:36:00 GMT`, which some signers put in `Date`.
    fn parse_http_date(s: &str) -> Option<Self> {
        const MONTHS: [&[u8]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let b = s.as_bytes();
        if b.len() != 29 || &b[3..5] != b", " || &b[25..] != b" GMT" {
            return None;
        }
        if [b[7], b[11], b[16], b[19], b[22]] != *b"   ::" {
            return None;
        }
        let month = MONTHS.iter().position(|m| *m == &b[8..11])?;
        let secs = civil_to_unix(
            digits(&b[12..16])?,
            i64::try_from(month).ok()? + 1,
            digits(&b[5..7])?,
            digits(&b[17..19])?,
            digits(&b[20..22])?,
            digits(&b[23..25])?,
        )?;
        Some(Self::from_unix(secs))
    }

    fn from_unix(secs: i64) -> Self {
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = secs.rem_euclid(86_400);
        let mut text = *b"00000000T000000Z";
        put_digits(&mut text[0..4], year);
        put_digits(&mut text[4..6], month);
        put_digits(&mut text[6..8], day);
        put_digits(&mut text[9..11], second_of_day / 3600);
        put_digits(&mut text[11..13], second_of_day / 60 % 60);
        put_digits(&mut text[13..15], second_of_day % 60);
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

fn digits(b: &[u8]) -> Option<i64> {
    b.iter().try_fold(0, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn put_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b"0123456789"[usize::try_from(value.rem_euclid(10)).unwrap_or(0)];
        value = value.div_euclid(10);
    }
}

fn civil_to_unix(year: i64, month: i64, day: i64, hour: i64, min: i64, sec: i64) -> Option<i64> {
    let valid =
        (1..=12).contains(&month) && (1..=31).contains(&day) && hour < 24 && min < 60 && sec < 61;
    valid.then(|| days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn unix_secs(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The payload line of the canonical request: a signed `x-amz-content-sha256` verbatim
/// (`UNSIGNED-PAYLOAD` included) once it is checked against the body, else the body's hash.
fn payload_hash<'a>(
    headers: &'a HeaderMap,
    body: &[u8],
    buf: &'a mut [u8; 64],
) -> Result<&'a [u8], AuthError> {
    let claimed = headers
        .get(X_AMZ_CONTENT_SHA256)
        .map(|value| value.as_bytes());
    if claimed == Some(UNSIGNED_PAYLOAD) {
        return Ok(UNSIGNED_PAYLOAD);
    }
    *buf = hex32(&Sha256::digest(body));
    match claimed {
        None => Ok(&buf[..]),
        Some(claimed) if claimed.eq_ignore_ascii_case(&buf[..]) => Ok(claimed),
        Some(_) => Err(AuthError::PayloadHashMismatch),
    }
}

/// Where canonical-request bytes go: SHA-256 when verifying, a buffer when logging a mismatch.
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        Digest::update(self, bytes);
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Calls its second argument with each value of the named header, in order.
type HeaderValues<'h> = dyn Fn(&str, &mut dyn FnMut(&[u8])) + 'h;

struct CanonicalRequest<'a> {
    method: &'a str,
    raw_path: &'a str,
    raw_query: &'a str,
    /// Presigned URLs sign every query parameter but `X-Amz-Signature`.
    skip_signature_param: bool,
    signed_headers: &'a str,
    payload_hash: &'a [u8],
}

impl CanonicalRequest<'_> {
    fn write(&self, out: &mut impl Sink, header_values: &HeaderValues<'_>) {
        out.put(self.method.as_bytes());
        out.put(b"\n");
        write_canonical_path(out, self.raw_path);
        out.put(b"\n");
        write_canonical_query(out, self.raw_query, self.skip_signature_param);
        out.put(b"\n");
        for name in self.signed_headers.split(';') {
            out.put(name.as_bytes());
            out.put(b":");
            let mut first = true;
            header_values(name, &mut |value| {
                if !first {
                    out.put(b",");
                }
                first = false;
                // Trimmed, inner whitespace runs collapsed: botocore's `' '.join(value.split())`.
                let mut words = value
                    .split(|&b| b == b' ' || b == b'\t')
                    .filter(|w| !w.is_empty());
                if let Some(word) = words.next() {
                    out.put(word);
                }
                for word in words {
                    out.put(b" ");
                    out.put(word);
                }
            });
            out.put(b"\n");
        }
        out.put(b"\n");
        out.put(self.signed_headers.as_bytes());
        out.put(b"\n");
        out.put(self.payload_hash);
    }
}

/// botocore's `quote(remove_dot_segments(path), safe='/~')`: `.`, `..` and empty segments go,
/// then the still-encoded path is encoded again (`%3A` → `%253A`). Empty paths become `/`.
fn write_canonical_path(out: &mut impl Sink, raw_path: &str) {
    if raw_path.is_empty() {
        return out.put(b"/");
    }
    let clean = !raw_path.contains("//") && !raw_path.split('/').any(|s| s == "." || s == "..");
    if clean {
        return put_encoded(out, raw_path.as_bytes(), true);
    }
    let mut segments = Vec::new();
    for segment in raw_path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            _ => segments.push(segment),
        }
    }
    if raw_path.starts_with('/') {
        out.put(b"/");
    }
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            out.put(b"/");
        }
        put_encoded(out, segment.as_bytes(), true);
    }
    if raw_path.ends_with('/') && !segments.is_empty() {
        out.put(b"/");
    }
}

/// Pairs split on `&` and `=`, each side decoded and re-encoded (RFC 3986 unreserved kept),
/// sorted by key then value. Already-canonical parts, the usual case, are not copied.
fn write_canonical_query(out: &mut impl Sink, raw_query: &str, skip_signature_param: bool) {
    if raw_query.is_empty() {
        return;
    }
    let mut pairs: Vec<_> = raw_query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| !(skip_signature_param && *key == "X-Amz-Signature"))
        .map(|(key, value)| (canonical_component(key), canonical_component(value)))
        .collect();
    pairs.sort_unstable();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.put(b"&");
        }
        out.put(key);
        out.put(b"=");
        out.put(value);
    }
}

fn canonical_component(raw: &str) -> Cow<'_, [u8]> {
    if is_canonical(raw.as_bytes()) {
        return Cow::Borrowed(raw.as_bytes());
    }
    let decoded: Cow<'_, [u8]> = percent_encoding::percent_decode_str(raw).into();
    let mut encoded = Vec::with_capacity(decoded.len() * 3);
    put_encoded(&mut encoded, &decoded, false);
    Cow::Owned(encoded)
}

/// True when encoding would not change `b`: only unreserved bytes, and upper-case `%XX`
/// escapes of bytes that need escaping.
fn is_canonical(b: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if is_unreserved(c) {
            i += 1;
            continue;
        }
        match (
            c,
            b.get(i + 1).and_then(upper_hex),
            b.get(i + 2).and_then(upper_hex),
        ) {
            (b'%', Some(high), Some(low)) if !is_unreserved(high << 4 | low) => i += 3,
            _ => return false,
        }
    }
    true
}

fn upper_hex(c: &u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Percent-encodes all but unreserved bytes (and `/` if `keep_slash`), safe runs in one `put`.
fn put_encoded(out: &mut impl Sink, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if is_unreserved(b) || (keep_slash && b == b'/') {
            continue;
        }
        out.put(&bytes[start..i]);
        out.put(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
        start = i + 1;
    }
    out.put(&bytes[start..]);
}

/// `hex(HMAC(kSigning, StringToSign))`, lower-case.
fn signature(
    mut mac: HmacSha256,
    time: &SigningTime,
    scope: &str,
    canonical_request_hash: &[u8],
) -> [u8; 64] {
    for part in [
        ALGORITHM.as_bytes(),
        b"\n",
        &time.text,
        b"\n",
        scope.as_bytes(),
        b"\n",
    ] {
        mac.update(part);
    }
    mac.update(&hex32(canonical_request_hash));
    hex32(&mac.finalize().into_bytes())
}

/// The key chain `HMAC("AWS4"+secret, date)` → region → service → `aws4_request`, returned as
/// an HMAC keyed with the result, ready to be cloned per request.
fn derive_signing_mac(secret: &str, date: &str, region: &str, service: &str) -> HmacSha256 {
    let key = [b"AWS4", secret.as_bytes()].concat();
    let mut key = hmac_sha256(&key, date.as_bytes());
    for part in [region, service, TERMINATOR] {
        key = hmac_sha256(&key, part.as_bytes());
    }
    keyed_mac(&key)
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut mac = keyed_mac(key);
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// HMAC keys per RFC 2104: one longer than the 64-byte block is hashed, a shorter one
/// zero-padded. Done here because `new_from_slice` returns a `Result` that cannot fail.
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
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0; 64];
    for (pair, &b) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// Compares without an early exit, so the time taken does not tell a forger how many
/// leading characters were right. (Lengths are public: a real signature is 64 characters.)
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests;
