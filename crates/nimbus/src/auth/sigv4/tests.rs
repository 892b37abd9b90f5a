use std::time::{Duration, Instant};

use hyper::http::HeaderName;

use super::*;

const EXAMPLE_KEY: &str = "AKIDEXAMPLE";
const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SUITE_TIME: &str = "20150830T123600Z";
/// The botocore fixtures were signed at 20250101T120000Z; the server sees them 30 s later.
const BOTOCORE_NOW: &str = "20250101T120030Z";
const INVOKE_PATH: &str = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Af/invocations";

fn at(basic: &str) -> SystemTime {
    let secs = SigningTime::parse(basic.as_bytes())
        .expect("a valid test time")
        .secs;
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).expect("after 1970"))
}

fn store(access_key_id: &str, secret: &str) -> KeyStore {
    KeyStore::new(vec![Credentials {
        access_key_id: access_key_id.into(),
        secret_access_key: secret.into(),
        account_id: "123456789012".into(),
    }])
}

fn testing_keys() -> KeyStore {
    store("testing", "testing")
}

fn testing_params(now: SystemTime) -> SigningParams<'static> {
    SigningParams {
        access_key_id: "testing",
        secret_access_key: "testing",
        region: "us-east-1",
        service: "lambda",
        now,
    }
}

/// A request as the server sees it.
#[derive(Clone, Debug)]
struct Request {
    method: String,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Request {
    fn new(method: &str, path: &str, query: &str, body: &[u8]) -> Self {
        let (method, path, query) = (method.into(), path.into(), query.into());
        Self {
            method,
            path,
            query,
            headers: HeaderMap::new(),
            body: body.to_vec(),
        }
    }

    /// The AWS test suite's format: request line, `Name:value` lines, an empty line, the body.
    fn parse(text: &str) -> Self {
        let (head, body) = text
            .split_once("\n\n")
            .expect("an empty line after the headers");
        let mut lines = head.lines();
        let request_line = lines.next().expect("a request line");
        let (method, rest) = request_line.split_once(' ').expect("method SP target");
        let target = rest.strip_suffix(" HTTP/1.1").expect("HTTP/1.1");
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let mut request = Self::new(method, path, query, body.as_bytes());
        for line in lines {
            let (name, value) = line.split_once(':').expect("Name:value");
            // As an HTTP parser does, strip the optional whitespace around the value.
            request.append(name, value.trim_matches([' ', '\t']));
        }
        request
    }

    /// A request signed by `sign_request`, as it arrives.
    fn signed(
        params: &SigningParams<'_>,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Self {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let added = sign_request(params, method, path, query, &headers, body);
        let mut request = Self::new(method, path, query, body);
        for (name, value) in headers.iter().chain(&added) {
            request.append(name, value);
        }
        request
    }

    /// The access key id that signed the request.
    fn verify<'k>(&self, keys: &'k KeyStore, now: SystemTime) -> Result<&'k str, AuthError> {
        verify(
            &self.method,
            &self.path,
            &self.query,
            &self.headers,
            &self.body,
            keys,
            now,
        )
        .map(|credentials| credentials.access_key_id.as_str())
    }

    fn append(&mut self, name: &str, value: &str) {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("header name");
        self.headers
            .append(name, HeaderValue::from_str(value).expect("header value"));
    }

    fn set(&mut self, name: &str, value: &str) {
        self.headers.remove(name);
        self.append(name, value);
    }

    fn authorization(&self) -> &str {
        self.headers[AUTHORIZATION].to_str().expect("ASCII")
    }
}

/// `(case, expected outcome, request)` for each case of testdata/aws-sigv4-test-suite.txt.
fn suite() -> Vec<(String, String, Request)> {
    let text = include_str!("../testdata/aws-sigv4-test-suite.txt");
    // Each request is followed by one newline, which the split (or this strip) consumes.
    let text = text.strip_suffix('\n').expect("a final newline");
    text.split("\n=== ")
        .skip(1) // the file's comment
        .map(|case| {
            let (title, request) = case.split_once('\n').expect("a title line");
            let (name, expected) = title.split_once(' ').expect("case and expectation");
            (
                name.to_owned(),
                expected.to_owned(),
                Request::parse(request),
            )
        })
        .collect()
}

fn botocore_sigv4auth() -> Request {
    Request::parse(include_str!("../testdata/botocore-sigv4auth-invoke.http"))
}

fn botocore_client() -> Request {
    Request::parse(include_str!("../testdata/botocore-client-invoke.http"))
}

#[test]
fn accepts_the_aws_test_suite() {
    let keys = store(EXAMPLE_KEY, EXAMPLE_SECRET);
    let cases = suite();
    assert_eq!(cases.len(), 30);
    for (name, expected, request) in &cases {
        let outcome = request.verify(&keys, at(SUITE_TIME));
        match expected.as_str() {
            "ok" => assert_eq!(outcome, Ok(EXAMPLE_KEY), "{name}"),
            code => assert_eq!(outcome.map_err(|e| e.code()), Err(code), "{name}"),
        }
    }
}

#[test]
fn signs_like_the_aws_test_suite() {
    // sign_request signs host and x-amz-* only, so compare on the cases that sign nothing else.
    let mut compared = 0;
    for (name, expected, request) in suite() {
        let signed_list = request
            .authorization()
            .split("SignedHeaders=")
            .nth(1)
            .unwrap_or_default();
        let signed_list = signed_list.split(',').next().unwrap_or_default();
        if expected != "ok"
            || !signed_list
                .split(';')
                .all(|h| h == "host" || h.starts_with("x-amz-"))
        {
            continue;
        }
        let headers: Vec<(String, String)> = (request.headers.iter())
            .filter(|(name, _)| *name != AUTHORIZATION)
            .map(|(name, value)| (name.to_string(), value.to_str().expect("ASCII").to_owned()))
            .collect();
        let params = SigningParams {
            access_key_id: EXAMPLE_KEY,
            secret_access_key: EXAMPLE_SECRET,
            region: "us-east-1",
            service: "service",
            now: at(SUITE_TIME),
        };
        let (method, path, query) = (&request.method, &request.path, &request.query);
        let added = sign_request(&params, method, path, query, &headers, &request.body);
        assert_eq!(
            added[0],
            ("x-amz-date".to_owned(), SUITE_TIME.to_owned()),
            "{name}"
        );
        assert_eq!(
            added[1],
            (
                "authorization".to_owned(),
                request.authorization().to_owned()
            ),
            "{name}"
        );
        compared += 1;
    }
    assert_eq!(
        compared, 20,
        "the 27 valid cases less the 7 that sign other headers"
    );
}

#[test]
fn published_get_vanilla_signature() {
    let params = SigningParams {
        access_key_id: EXAMPLE_KEY,
        secret_access_key: EXAMPLE_SECRET,
        region: "us-east-1",
        service: "service",
        now: at(SUITE_TIME),
    };
    let headers = [("Host".to_owned(), "example.amazonaws.com".to_owned())];
    let added = sign_request(&params, "GET", "/", "", &headers, b"");
    assert_eq!(
        added[1].1,
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
         SignedHeaders=host;x-amz-date, \
         Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn accepts_requests_botocore_signed() {
    let keys = testing_keys();
    for request in [botocore_sigv4auth(), botocore_client()] {
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("POST", INVOKE_PATH)
        );
        assert_eq!(request.query, "Qualifier=%24LATEST");
        assert_eq!(request.verify(&keys, at(BOTOCORE_NOW)), Ok("testing"));
        let (headers, body) = (&request.headers, &request.body);
        let credentials = verify(
            "POST",
            INVOKE_PATH,
            &request.query,
            headers,
            body,
            &keys,
            at(BOTOCORE_NOW),
        );
        assert_eq!(
            credentials.map(|c| c.account_id.as_str()),
            Ok("123456789012")
        );
    }
}

#[test]
fn rejects_a_changed_body_header_path_query_or_secret() {
    let keys = testing_keys();
    let now = at(BOTOCORE_NOW);
    for original in [botocore_sigv4auth(), botocore_client()] {
        let mut request = original.clone();
        request.body[10] ^= 1;
        assert_eq!(
            request.verify(&keys, now),
            Err(AuthError::SignatureMismatch)
        );

        for (name, value) in [("x-amz-log-type", "None"), ("host", "localhost:9001")] {
            let mut request = original.clone();
            request.set(name, value);
            assert_eq!(
                request.verify(&keys, now),
                Err(AuthError::SignatureMismatch),
                "{name}"
            );
        }

        let mut request = original.clone();
        request.path = request.path.replace("function%3Af", "function%3Ag");
        assert_eq!(
            request.verify(&keys, now),
            Err(AuthError::SignatureMismatch)
        );

        let mut request = original.clone();
        request.query = "Qualifier=1".into();
        assert_eq!(
            request.verify(&keys, now),
            Err(AuthError::SignatureMismatch)
        );

        let error = original
            .verify(&store("testing", "testinG"), now)
            .unwrap_err();
        assert_eq!(
            (error.code(), error.status()),
            ("InvalidSignatureException", 403)
        );
        assert_eq!(
            error.to_string(),
            "The request signature we calculated does not match the signature you provided. Check your \
             AWS Secret Access Key and signing method. Consult the service documentation for details."
        );
    }
}

#[test]
fn ignores_headers_the_client_did_not_sign() {
    // botocore leaves User-Agent unsigned (proxies rewrite it); a fixed header list would break.
    let mut request = botocore_client();
    request.set("user-agent", "something/else");
    request.append("x-forwarded-for", "10.0.0.1");
    assert!(request.verify(&testing_keys(), at(BOTOCORE_NOW)).is_ok());
}

#[test]
fn rejects_unknown_keys_and_session_tokens() {
    let mut request = botocore_client();
    let error = request
        .verify(&store("someone-else", "testing"), at(BOTOCORE_NOW))
        .unwrap_err();
    assert_eq!(error, AuthError::UnrecognizedClient);
    assert_eq!(
        (error.code(), error.status()),
        ("UnrecognizedClientException", 403)
    );
    assert_eq!(
        error.to_string(),
        "The security token included in the request is invalid."
    );

    request.set(
        "x-amz-security-token",
        "FwoGZXIvYXdzEJr//////////wEaDOEXAMPLE",
    );
    assert_eq!(
        request.verify(&testing_keys(), at(BOTOCORE_NOW)),
        Err(AuthError::UnrecognizedClient)
    );
}

#[test]
fn enforces_five_minutes_of_clock_skew() {
    let keys = testing_keys();
    let request = botocore_client();
    for edge in ["20250101T115500Z", "20250101T120500Z"] {
        assert!(
            request.verify(&keys, at(edge)).is_ok(),
            "{edge} is within 5 minutes"
        );
    }

    let late = request.verify(&keys, at("20250101T120600Z")).unwrap_err();
    assert_eq!(
        (late.code(), late.status()),
        ("InvalidSignatureException", 403)
    );
    assert_eq!(
        late.to_string(),
        "Signature expired: 20250101T120000Z is now earlier than 20250101T120100Z (20250101T120600Z - 5 min.)"
    );

    let early = request.verify(&keys, at("20250101T115400Z")).unwrap_err();
    assert_eq!(early.code(), "InvalidSignatureException");
    assert_eq!(
        early.to_string(),
        "Signature not yet current: 20250101T120000Z is still later than 20250101T115900Z (20250101T115400Z + 5 min.)"
    );

    // The example the brief quotes, from a request signed at 12:00 and seen at 12:15.
    let request = Request::signed(
        &testing_params(at("20250101T120000Z")),
        "GET",
        "/",
        "",
        &[("host", "h")],
        b"",
    );
    assert_eq!(
        request
            .verify(&keys, at("20250101T121500Z"))
            .unwrap_err()
            .to_string(),
        "Signature expired: 20250101T120000Z is now earlier than 20250101T121000Z (20250101T121500Z - 5 min.)"
    );
}

#[test]
fn rejects_a_credential_scope_dated_another_day() {
    let mut request = botocore_client();
    let forged = request
        .authorization()
        .replace("testing/20250101/", "testing/20250102/");
    request.set("authorization", &forged);
    let error = request
        .verify(&testing_keys(), at(BOTOCORE_NOW))
        .unwrap_err();
    assert_eq!(error.code(), "InvalidSignatureException");
    assert_eq!(
        error.to_string(),
        "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: \
         '20250102' != '20250101', from '20250101T120000Z'."
    );
}

#[test]
fn falls_back_to_the_date_header() {
    // botocore signed x-amz-date, so the signature cannot match; but the time must have been
    // read from Date: a mismatch rather than a missing date, and an expiry when it is old.
    let mut request = botocore_client();
    request.headers.remove("x-amz-date");
    request.set("date", "20250101T120000Z");
    assert_eq!(
        request.verify(&testing_keys(), at(BOTOCORE_NOW)),
        Err(AuthError::SignatureMismatch)
    );
    request.set("date", "20250101T110000Z");
    let error = request
        .verify(&testing_keys(), at(BOTOCORE_NOW))
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("Signature expired: 20250101T110000Z"),
        "{error}"
    );
}

#[test]
fn missing_authorization() {
    let mut request = botocore_client();
    request.headers.remove(AUTHORIZATION);
    let error = request
        .verify(&testing_keys(), at(BOTOCORE_NOW))
        .unwrap_err();
    assert_eq!(error, AuthError::MissingAuthenticationToken);
    assert_eq!(
        (error.code(), error.status()),
        ("MissingAuthenticationTokenException", 403)
    );
    assert_eq!(error.to_string(), "Missing Authentication Token");
}

#[test]
fn presigned_urls_are_not_accepted() {
    // aws-c-auth's get-vanilla/query-signed-request.txt: valid, but signed in the query.
    let request = Request::parse(
        "GET /?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20150830%2Fus-east-1%2F\
         service%2Faws4_request&X-Amz-Date=20150830T123600Z&X-Amz-SignedHeaders=host&X-Amz-Expires=3600&\
         X-Amz-Signature=e93c787ed7f371d5c6b165c1b38ede9550f4dce4144713e844b25b7192d3865d HTTP/1.1\n\
         Host:example.amazonaws.com\n\n",
    );
    let keys = store(EXAMPLE_KEY, EXAMPLE_SECRET);
    assert_eq!(
        request.verify(&keys, at(SUITE_TIME)),
        Err(AuthError::MissingAuthenticationToken)
    );
}

#[test]
fn malformed_authorization_is_an_incomplete_signature() {
    let original = botocore_client();
    let good = original.authorization().to_owned();
    let all_missing = "Authorization header requires 'Credential' parameter. Authorization header \
                       requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.";
    let cases = [
        ("Bearer abc".to_owned(), all_missing),
        (
            good.replace("AWS4-HMAC-SHA256 ", "AWS4-HMAC-SHA512 "),
            all_missing,
        ),
        (
            good.split(", Signature=")
                .next()
                .unwrap_or_default()
                .to_owned(),
            "Authorization header requires 'Signature' parameter.",
        ),
        (
            good.replace("/lambda/aws4_request", "/aws4_request"),
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got 'testing/20250101/us-east-1/aws4_request'",
        ),
        (
            good.replace("Credential=testing/", "Credential=/"),
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got '/20250101/us-east-1/lambda/aws4_request'",
        ),
        (
            good.replace("Credential=testing/", "Credential=a/b/"),
            "Credential must have exactly 5 slash-delimited elements, e.g. \
             keyid/date/region/service/term, got 'a/b/20250101/us-east-1/lambda/aws4_request'",
        ),
        (
            good.replace("aws4_request", "aws5_request"),
            "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'.",
        ),
        (
            good.replace("SignedHeaders=host;", "SignedHeaders="),
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.",
        ),
    ];
    for (authorization, message) in cases {
        let mut request = original.clone();
        request.set("authorization", &authorization);
        let error = request
            .verify(&testing_keys(), at(BOTOCORE_NOW))
            .unwrap_err();
        assert_eq!(
            error,
            AuthError::IncompleteSignature(message.into()),
            "{authorization}"
        );
        assert_eq!(
            (error.code(), error.status()),
            ("IncompleteSignatureException", 400)
        );
    }

    let mut request = original.clone();
    request.headers.insert(
        AUTHORIZATION,
        HeaderValue::from_bytes(b"AWS4-HMAC-SHA256 \xff").unwrap(),
    );
    let error = request
        .verify(&testing_keys(), at(BOTOCORE_NOW))
        .unwrap_err();
    assert_eq!(error.code(), "IncompleteSignatureException");

    let mut request = original.clone();
    request.set("x-amz-date", "2025-01-01T12:00:00Z");
    assert_eq!(
        request
            .verify(&testing_keys(), at(BOTOCORE_NOW))
            .unwrap_err()
            .to_string(),
        "Date must be in ISO-8601 'basic format'. Got '2025-01-01T12:00:00Z'. See http://en.wikipedia.org/wiki/ISO_8601"
    );

    let mut request = original.clone();
    request.headers.remove("x-amz-date");
    assert_eq!(
        request
            .verify(&testing_keys(), at(BOTOCORE_NOW))
            .unwrap_err()
            .to_string(),
        "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
    );

    // A well-formed but wrong signature is a mismatch, whatever its length.
    let (head, _) = good.split_once("Signature=").unwrap();
    for signature in ["0".to_owned(), "0".repeat(64), "0".repeat(65)] {
        let mut request = original.clone();
        request.set("authorization", &format!("{head}Signature={signature}"));
        assert_eq!(
            request.verify(&testing_keys(), at(BOTOCORE_NOW)),
            Err(AuthError::SignatureMismatch)
        );
    }
}

/// Header faults each with the error [`verify`] gives them: [`precheck`] must give the same
/// one without being shown a body.
fn header_faults() -> Vec<(&'static str, Request, AuthError)> {
    let original = botocore_client();
    let good = original.authorization().to_owned();
    let with = |name: &str, value: &str| {
        let mut request = original.clone();
        request.set(name, value);
        request
    };
    let mut unsigned = original.clone();
    unsigned.headers.remove(AUTHORIZATION);
    let mut undated = original.clone();
    undated.headers.remove("x-amz-date");
    vec![
        (
            "no Authorization",
            unsigned,
            AuthError::MissingAuthenticationToken,
        ),
        (
            "another scheme",
            with("authorization", "Bearer abc"),
            incomplete(
                "Authorization header requires 'Credential' parameter. Authorization header \
                 requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter.",
            ),
        ),
        (
            "a bad terminator",
            with(
                "authorization",
                &good.replace("aws4_request", "aws5_request"),
            ),
            incomplete(
                "Credential should be scoped with a valid terminator: 'aws4_request', not 'aws5_request'.",
            ),
        ),
        (
            "no date",
            undated,
            incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            ),
        ),
        (
            "an unknown key",
            with(
                "authorization",
                &good.replace("Credential=testing/", "Credential=AKIDUNKNOWN/"),
            ),
            AuthError::UnrecognizedClient,
        ),
        (
            "a session token",
            with(
                "x-amz-security-token",
                "FwoGZXIvYXdzEJr//////////wEaDOEXAMPLE",
            ),
            AuthError::UnrecognizedClient,
        ),
        (
            "an old date",
            with("x-amz-date", "20250101T110000Z"),
            AuthError::InvalidSignature(
                "Signature expired: 20250101T110000Z is now earlier than 20250101T115530Z \
                 (20250101T120030Z - 5 min.)"
                    .into(),
            ),
        ),
    ]
}

#[test]
fn precheck_refuses_header_faults_as_verify_does_without_the_body() {
    let keys = testing_keys();
    let now = at(BOTOCORE_NOW);
    for (fault, request, expected) in header_faults() {
        let early = precheck(&request.headers, &keys, now).err();
        assert_eq!(early.as_ref(), Some(&expected), "{fault}");
        assert_eq!(request.verify(&keys, now), Err(expected), "{fault}");
    }
}

#[test]
fn a_request_that_passes_precheck_is_still_verified_against_its_body() {
    let keys = testing_keys();
    let now = at(BOTOCORE_NOW);
    let request = botocore_client();
    let finish = |keys: &KeyStore, body: &[u8]| {
        let pending = precheck(&request.headers, keys, now)
            .expect("a well-formed header from a known key passes");
        let verified = pending.verify(&request.method, &request.path, &request.query, body);
        verified.map(|credentials| credentials.access_key_id.clone())
    };
    assert_eq!(finish(&keys, &request.body), Ok("testing".to_owned()));

    let mut tampered = request.body.clone();
    tampered[10] ^= 1;
    assert_eq!(finish(&keys, &tampered), Err(AuthError::SignatureMismatch));

    // A wrong secret does not show in the headers: only the full check can catch it.
    let wrong_secret = store("testing", "testinG");
    assert_eq!(
        finish(&wrong_secret, &request.body),
        Err(AuthError::SignatureMismatch)
    );
}

#[test]
fn a_signed_body_hash_is_checked_after_precheck() {
    let keys = testing_keys();
    let now = at("20250101T120000Z");
    let body_hash = hex32(&Sha256::digest(b"one"));
    let request = Request::signed(
        &testing_params(now),
        "POST",
        "/",
        "",
        &[
            ("host", "h"),
            (
                "x-amz-content-sha256",
                std::str::from_utf8(&body_hash).unwrap(),
            ),
        ],
        b"one",
    );
    let pending = precheck(&request.headers, &keys, now).expect("the headers are well formed");
    let error = pending.verify("POST", "/", "", b"two").unwrap_err();
    assert_eq!(
        error,
        AuthError::InvalidSignature(
            "The provided 'x-amz-content-sha256' header does not match what was computed.".into()
        )
    );
}

#[test]
fn round_trips_through_sign_request() {
    let params = SigningParams {
        access_key_id: "AKIAROUNDTRIP",
        secret_access_key: "s3cr3t/with+odd=chars",
        region: "eu-west-1",
        service: "logs",
        now: at("20250301T000000Z"),
    };
    let keys = store("AKIAROUNDTRIP", "s3cr3t/with+odd=chars");
    let binary: Vec<u8> = (0..=255).collect();
    // method, path, query, headers besides host, body
    type Case<'a> = (
        &'a str,
        &'a str,
        &'a str,
        &'a [(&'a str, &'a str)],
        &'a [u8],
    );
    let cases: [Case<'_>; 8] = [
        (
            "POST",
            INVOKE_PATH,
            "Qualifier=%24LATEST",
            &[("x-amz-invocation-type", "Event")],
            b"{\"a\":1}",
        ),
        (
            "GET",
            "/2015-03-31/functions/",
            "MaxItems=10&Marker=abc%2Fdef",
            &[],
            b"",
        ),
        (
            "GET",
            "/2015-03-31/functions/f",
            "Qualifier=$LATEST",
            &[],
            b"",
        ),
        (
            "GET",
            "/2017-03-31/tags/arn%3Aaws%3Alambda%3Ax",
            "tagKeys=b&tagKeys=a&tagKeys=a%20b",
            &[],
            b"",
        ),
        (
            "PUT",
            "/a/./b/../c//d",
            "",
            &[("X-Amz-Meta-Note", "  spaced   out  ")],
            b"x",
        ),
        (
            "POST",
            "/",
            "flag&=v&k=",
            &[("x-amz-meta-x", "1"), ("x-amz-meta-x", "2")],
            &binary,
        ),
        ("DELETE", "/%E1%88%B4/~user", "q=%e1%88%b4+x", &[], b""),
        (
            "POST",
            "/2015-03-31/functions/f/invocations",
            "",
            &[("x-amz-client-context", "e30=")],
            &[0; 1024],
        ),
    ];
    for (method, path, query, extra, body) in cases {
        let headers: Vec<_> = [("Host", "127.0.0.1:9000")]
            .iter()
            .chain(extra)
            .copied()
            .collect();
        let mut request = Request::signed(&params, method, path, query, &headers, body);
        let label = format!("{method} {path}?{query}");
        assert_eq!(
            request.verify(&keys, at("20250301T000400Z")),
            Ok("AKIAROUNDTRIP"),
            "{label}"
        );
        request.body.push(b'!');
        assert_eq!(
            request.verify(&keys, at("20250301T000400Z")),
            Err(AuthError::SignatureMismatch),
            "{label}"
        );
    }
}

#[test]
fn x_amz_content_sha256_is_signed_verbatim_and_checked() {
    let keys = testing_keys();
    let now = at("20250101T120000Z");
    let params = testing_params(now);
    let sign = |claimed: &str| {
        Request::signed(
            &params,
            "POST",
            "/",
            "",
            &[("host", "h"), ("x-amz-content-sha256", claimed)],
            b"one",
        )
    };

    let mut unsigned = sign("UNSIGNED-PAYLOAD");
    assert!(unsigned.verify(&keys, now).is_ok());
    unsigned.body = b"two".to_vec();
    assert!(
        unsigned.verify(&keys, now).is_ok(),
        "UNSIGNED-PAYLOAD leaves the body unauthenticated"
    );

    let mut hashed = sign(std::str::from_utf8(&hex32(&Sha256::digest(b"one"))).unwrap());
    assert!(hashed.verify(&keys, now).is_ok());
    hashed.body = b"two".to_vec();
    let error = hashed.verify(&keys, now).unwrap_err();
    assert_eq!(error.code(), "InvalidSignatureException");
    assert_eq!(
        error.to_string(),
        "The provided 'x-amz-content-sha256' header does not match what was computed."
    );
}

#[test]
fn caches_signing_keys_only_for_requests_that_verified() {
    let keys = testing_keys();
    let request = botocore_client();
    let cache_key = "testing/20250101/us-east-1/lambda";

    let mut tampered = request.clone();
    tampered.body.push(b' ');
    assert!(tampered.verify(&keys, at(BOTOCORE_NOW)).is_err());
    assert!(keys.signing_keys().is_empty(), "a failure caches nothing");

    assert!(request.verify(&keys, at(BOTOCORE_NOW)).is_ok());
    assert_eq!(
        keys.signing_keys().keys().map(|k| &**k).collect::<Vec<_>>(),
        [cache_key]
    );

    // The cached key, not a fresh derivation, signs the next request: poison it and see.
    let poisoned = signing_mac("other", "20250101/us-east-1/lambda/aws4_request");
    keys.clone()
        .signing_keys()
        .insert(cache_key.into(), poisoned);
    assert_eq!(
        request.verify(&keys, at(BOTOCORE_NOW)),
        Err(AuthError::SignatureMismatch)
    );
}

#[test]
fn signing_key_cache_is_bounded() {
    let keys = testing_keys();
    let now = at("20250101T120000Z");
    for i in 0..(MAX_CACHED_SIGNING_KEYS + 10) {
        let region = format!("region-{i}");
        let params = SigningParams {
            region: &region,
            ..testing_params(now)
        };
        let request = Request::signed(&params, "GET", "/", "", &[("host", "h")], b"");
        assert!(request.verify(&keys, now).is_ok());
        assert!(keys.signing_keys().len() <= MAX_CACHED_SIGNING_KEYS);
    }
}

#[test]
fn mangled_requests_never_panic() {
    // xorshift, so that failures reproduce.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % bound).unwrap_or(0)
    };
    const PIECES: [&str; 16] = [
        "", "/", "%", "%4", "=", "&", ",", ";", " ", ".", "..", "ሴ", "Z", "0", "T", "\u{7f}",
    ];
    let mutate = |s: &str, position: usize, with: &str| -> String {
        let mut chars: Vec<char> = s.chars().collect();
        let i = position % (chars.len() + 1);
        if i < chars.len() {
            chars.remove(i);
        }
        chars.splice(i..i, with.chars());
        chars.into_iter().collect()
    };
    let keys = testing_keys();
    let original = botocore_client();
    let mut rejected = 0;
    for _ in 0..20_000 {
        let mut request = original.clone();
        for _ in 0..=next(3) {
            let (with, position) = (PIECES[next(16)], next(200));
            match next(4) {
                0 => request.path = mutate(&request.path, position, with),
                1 => request.query = mutate(&request.query, position, with),
                field => {
                    let name = if field == 2 {
                        "authorization"
                    } else {
                        "x-amz-date"
                    };
                    let value = request.headers[name].to_str().unwrap_or_default();
                    if let Ok(value) = HeaderValue::from_str(&mutate(value, position, with)) {
                        request.headers.insert(name, value);
                    }
                }
            }
        }
        rejected += usize::from(request.verify(&keys, at(BOTOCORE_NOW)).is_err());
    }
    assert!(
        rejected > 15_000,
        "most mutations must be caught, {rejected} were"
    );
}

#[test]
fn signing_time_round_trips_through_the_calendar() {
    assert_eq!(
        SigningTime::parse(SUITE_TIME.as_bytes()).map(|t| t.secs),
        Some(1_440_938_160)
    );
    assert_eq!(
        SigningTime::from_unix(951_782_400).as_str(),
        "20000229T000000Z"
    );
    // Every 997th day from year 0 to 9999, the years four digits can show.
    for days in (-719_528..2_932_896).step_by(997) {
        let secs = days * 86_400 + 45_296;
        let time = SigningTime::from_unix(secs);
        assert_eq!(
            SigningTime::parse(&time.text).map(|t| t.secs),
            Some(secs),
            "{}",
            time.as_str()
        );
    }
    for bad in [
        "20150830T123600",
        "20151330T123600Z",
        "2015083OT123600Z",
        "20150830T243600Z",
        "20150830 123600Z",
    ] {
        assert!(SigningTime::parse(bad.as_bytes()).is_none(), "{bad}");
    }
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let keys = store(EXAMPLE_KEY, EXAMPLE_SECRET);
    let debug = format!("{keys:?} {:?}", keys.get(EXAMPLE_KEY));
    assert!(
        debug.contains(EXAMPLE_KEY) && debug.contains("<redacted>"),
        "{debug}"
    );
    assert!(!debug.contains(EXAMPLE_SECRET), "{debug}");
}

/// `cargo test --release -p nimbus --lib auth::sigv4::tests::verify_cost -- --ignored --nocapture`
#[test]
#[ignore = "timing, not a check"]
fn verify_cost() {
    let now = at("20250101T120000Z");
    let body = vec![b'x'; 1024];
    let headers = [
        ("host", "localhost:9000"),
        ("x-amz-invocation-type", "RequestResponse"),
        ("x-amz-log-type", "None"),
    ];
    let mut request = Request::signed(
        &testing_params(now),
        "POST",
        INVOKE_PATH,
        "Qualifier=%24LATEST",
        &headers,
        &body,
    );
    request.append("user-agent", "Botocore/1.43.11 ua/2.1 os/linux");
    request.append("content-length", "1024");
    let time = |iterations: u32, keys: &dyn Fn() -> KeyStore| {
        let start = Instant::now();
        for _ in 0..iterations {
            let keys = keys();
            let (path, query, headers) = (&request.path, &request.query, &request.headers);
            let result = verify("POST", path, query, headers, &body, &keys, now);
            assert!(std::hint::black_box(result).is_ok());
        }
        start.elapsed() / iterations
    };
    let shared = testing_keys();
    time(10_000, &|| shared.clone());
    let warm = time(200_000, &|| shared.clone());
    let cold = time(20_000, &testing_keys);
    let start = Instant::now();
    for _ in 0..200_000 {
        std::hint::black_box(Sha256::digest(std::hint::black_box(&body)));
    }
    let body_hash = start.elapsed() / 200_000;
    println!("verify, 1 KiB body, signing key cached: {warm:?}");
    println!("verify, 1 KiB body, signing key derived (new KeyStore each time): {cold:?}");
    println!("SHA-256 of the 1 KiB body alone: {body_hash:?}");
}
