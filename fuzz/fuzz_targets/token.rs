//! Channel tokens: whatever a client sends verifies or is refused, never panics; a token the
//! server signs verifies to the claims it signed, with the current key and with an older one.
#![no_main]

use arbitrary::Arbitrary;
use durable_iterator::{
    Keyring, TokenClaims,
    token::{self, TokenError},
};
use durable_iterator_fuzz::{NOW_SECS, PREVIOUS_KEY, keyring, signed};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input {
    /// A token as a client sends it, checked at `now_secs`.
    AsSent { token: String, now_secs: u64 },
    /// A payload of the fuzzer's JSON with a valid signature: what the schema check sees.
    SignedPayload { payload: String },
    /// Claims the server mints, signed and verified again.
    Minted {
        claims: Claims,
        by_previous_key: bool,
        now_offset: i64,
    },
}

#[derive(Arbitrary, Debug)]
struct Claims {
    chn: String,
    tags: Option<Vec<String>>,
    /// JSON text; anything that does not parse is taken as a string.
    att: Option<String>,
    rpc: Option<Vec<String>>,
    iat: u64,
    exp: u64,
}

impl Claims {
    fn into_claims(self) -> TokenClaims {
        let att = self
            .att
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        TokenClaims {
            chn: self.chn,
            tags: self.tags,
            att,
            rpc: self.rpc,
            iat: self.iat,
            exp: self.exp,
        }
    }
}

fuzz_target!(|input: Input| match input {
    Input::AsSent { token, now_secs } => {
        if let Ok(claims) = token::verify(keyring(), &token, now_secs) {
            assert!(now_secs < claims.exp, "an expired token verified");
        }
    }
    Input::SignedPayload { payload } => match token::verify(keyring(), &signed(&payload), NOW_SECS)
    {
        Ok(claims) => {
            assert!(NOW_SECS < claims.exp);
            let again = token::verify(keyring(), &token::sign(keyring(), &claims), NOW_SECS);
            assert_eq!(again, Ok(claims), "claims changed through sign and verify");
        }
        Err(TokenError::BadSignature) => panic!("a correctly signed token read as forged"),
        Err(TokenError::Malformed(_) | TokenError::Expired) => {}
    },
    Input::Minted {
        claims,
        by_previous_key,
        now_offset,
    } => {
        let claims = claims.into_claims();
        let signer = if by_previous_key {
            &Keyring::new([PREVIOUS_KEY]).expect("not empty")
        } else {
            keyring()
        };
        let token = token::sign(signer, &claims);
        let now = claims.exp.saturating_add_signed(now_offset);
        let verified = token::verify(keyring(), &token, now);
        if now >= claims.exp {
            assert_eq!(verified, Err(TokenError::Expired));
        } else {
            assert_eq!(
                verified,
                Ok(claims),
                "claims changed through sign and verify"
            );
        }
    }
});
