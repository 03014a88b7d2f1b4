//! What the fuzz targets share: the server they check requests against, and its keys and time.

use std::sync::{Arc, LazyLock};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use durable_iterator::{Keyring, ServerConfig, clock::ManualClock, fuzz_support::RequestChecks};
use tonic::Status;

/// The server's signing key. No status message may ever contain it.
pub const SIGNING_KEY: &str = "fuzz-signing-key";

/// An older key the server still verifies with (key rotation).
pub const PREVIOUS_KEY: &str = "fuzz-previous-key";

/// The server's clock stands here, in Unix seconds.
pub const NOW_SECS: u64 = 1_764_000_000;

/// The server's keyring: signs with [`SIGNING_KEY`], verifies with it and [`PREVIOUS_KEY`].
pub fn keyring() -> &'static Keyring {
    static KEYRING: LazyLock<Keyring> = LazyLock::new(|| {
        Keyring::new([SIGNING_KEY, PREVIOUS_KEY]).expect("the fuzz keys are not empty")
    });
    &KEYRING
}

/// The validation of a server with the default limits, built once per process.
pub fn checks() -> &'static RequestChecks {
    static CHECKS: LazyLock<RequestChecks> = LazyLock::new(|| {
        let config = ServerConfig::new(keyring().clone(), Some("fuzz-api-key".into()));
        RequestChecks::new(config, Arc::new(ManualClock::new(NOW_SECS * 1000)))
    });
    &CHECKS
}

/// `payload` as a token the server signed: the fuzzer writes the JSON, the signature is right.
pub fn signed(payload: &str) -> String {
    let signature = keyring().sign(&[payload.as_bytes()]);
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Panics if `status` gives away a signing key that the request (`sent`) did not hold: a
/// refusal may quote what the client sent, a key among it included.
pub fn assert_keeps_the_key(status: &Status, sent: &[u8]) {
    for key in [SIGNING_KEY, PREVIOUS_KEY] {
        let key = key.as_bytes();
        let quoted = sent.windows(key.len()).any(|window| window == key);
        assert!(
            quoted
                || !status
                    .message()
                    .as_bytes()
                    .windows(key.len())
                    .any(|w| w == key),
            "a status message contains a signing key: {status:?}"
        );
    }
}
