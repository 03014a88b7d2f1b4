//! Contract first: a channel object's methods declared once, as typed descriptors that the server
//! (which implements them) and the Rust client (which calls them) share. A typed call with the
//! wrong input or output type does not compile.
//!
//! ```
//! use durable_iterator_contract::Method;
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Echo { pub text: String }
//!
//! /// `routerClient.echo`: answers `Echo: <text>`.
//! pub const ECHO: Method<Echo, String> = Method::new(&["routerClient", "echo"]);
//! assert_eq!(ECHO.path(), ["routerClient", "echo"]);
//! ```
//!
//! On the wire, inputs and outputs are JSON values (`google.protobuf.Value`), so grpcurl,
//! grpc-web and Python callers need no Rust types.

use std::{fmt, marker::PhantomData};

use serde::{Serialize, de::DeserializeOwned};

/// A method of a channel object, reachable at `path`, taking `I` and answering `O`.
pub struct Method<I, O> {
    path: &'static [&'static str],
    // `fn(I) -> O`: the descriptor owns neither, and is Send + Sync + Copy whatever they are.
    types: PhantomData<fn(I) -> O>,
}

impl<I, O> Method<I, O> {
    /// The method at `path`, e.g. `&["routerClient", "echo"]`; `path[0]` is what a token's
    /// `rpc` list allows.
    pub const fn new(path: &'static [&'static str]) -> Self {
        Self {
            path,
            types: PhantomData,
        }
    }

    /// The method's path.
    pub const fn path(&self) -> &'static [&'static str] {
        self.path
    }
}

impl<I: Serialize, O> Method<I, O> {
    /// The input as the JSON value sent on the wire.
    pub fn encode_input(&self, input: &I) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(input)
    }
}

impl<I: DeserializeOwned, O> Method<I, O> {
    /// The input from the JSON value received; a mismatch is the caller's bad input.
    pub fn decode_input(&self, input: serde_json::Value) -> Result<I, serde_json::Error> {
        serde_json::from_value(input)
    }
}

impl<I, O: Serialize> Method<I, O> {
    /// The output as the JSON value sent on the wire.
    pub fn encode_output(&self, output: &O) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(output)
    }
}

impl<I, O: DeserializeOwned> Method<I, O> {
    /// The output from the JSON value received.
    pub fn decode_output(&self, output: serde_json::Value) -> Result<O, serde_json::Error> {
        serde_json::from_value(output)
    }
}

impl<I, O> Clone for Method<I, O> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<I, O> Copy for Method<I, O> {}

impl<I, O> fmt::Debug for Method<I, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Method({})", self.path.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Echo {
        text: String,
    }

    const ECHO: Method<Echo, String> = Method::new(&["routerClient", "echo"]);

    #[test]
    fn encodes_and_decodes_both_ways() {
        let input = Echo { text: "hi".into() };
        let wire = ECHO.encode_input(&input).unwrap();
        assert_eq!(wire, serde_json::json!({"text": "hi"}));
        assert_eq!(ECHO.decode_input(wire).unwrap(), input);
        assert!(ECHO.decode_input(serde_json::json!({"txt": 1})).is_err());
        let output = ECHO.encode_output(&"Echo: hi".to_owned()).unwrap();
        assert_eq!(ECHO.decode_output(output).unwrap(), "Echo: hi");
        assert_eq!(format!("{ECHO:?}"), "Method(routerClient.echo)");
    }
}
