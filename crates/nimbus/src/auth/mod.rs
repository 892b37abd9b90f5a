//! Who is calling: authentication of control-plane and `AWS_IAM` function-URL requests.
//!
//! This module owns the credential store and the AWS Signature Version 4 check (`sigv4`),
//! and the signer the `nimbus` CLI uses to call its own server. It only answers "which
//! account's key signed this request, if any"; it must not touch HTTP responses (the API
//! layer maps [`AuthError`] to the AWS error shape via `code()`/`status()`), routing, or
//! authorisation decisions such as resource policies.

pub mod sigv4;

pub use sigv4::{
    AuthError, Credentials, KeyStore, Pending, SigningParams, precheck, sign_request, verify,
};
