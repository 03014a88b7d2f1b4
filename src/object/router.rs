//! A channel object's methods by path: typed handlers in, JSON on the wire.

use std::{collections::HashMap, future::Future, sync::Arc};

use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};

use super::{Call, MethodError};
use crate::Method;

type Handler<T> = Arc<
    dyn Fn(
            Arc<T>,
            Call,
            serde_json::Value,
        ) -> BoxFuture<'static, Result<serde_json::Value, MethodError>>
        + Send
        + Sync,
>;

/// The methods of objects of type `T`, by path. Paths nest freely: `["routerClient", "echo"]`
/// is a method of the `routerClient` router, and `path[0]` is what a token's `rpc` allows.
pub struct Router<T> {
    methods: HashMap<Vec<String>, Handler<T>>,
}

impl<T> Default for Router<T> {
    fn default() -> Self {
        Self {
            methods: HashMap::new(),
        }
    }
}

impl<T: Send + Sync + 'static> Router<T> {
    /// Adds `method`, answered by `handler(object, call, input)`. Input that does not decode as
    /// `I` is refused with `INVALID_ARGUMENT` before the handler runs.
    ///
    /// # Panics
    /// When a method is already registered at the same path: a programming error.
    pub fn method<I, O, F, Fut>(&mut self, method: Method<I, O>, handler: F) -> &mut Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(Arc<T>, Call, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, MethodError>> + Send + 'static,
    {
        let path: Vec<String> = method.path().iter().map(|s| (*s).to_owned()).collect();
        assert!(!path.is_empty(), "a method needs a path");
        let handler = Arc::new(handler);
        let erased: Handler<T> = Arc::new(move |object, call, input| {
            let handler = handler.clone();
            Box::pin(async move {
                let input = method.decode_input(input).map_err(|e| {
                    MethodError::invalid_argument(format!(
                        "input does not match method {}: {e}",
                        method.path().join(".")
                    ))
                })?;
                let output = handler(object, call, input).await?;
                method.encode_output(&output).map_err(|e| {
                    MethodError::internal(format!(
                        "output of method {} does not serialize: {e}",
                        method.path().join(".")
                    ))
                })
            })
        });
        let previous = self.methods.insert(path, erased);
        assert!(
            previous.is_none(),
            "method {} registered twice",
            method.path().join(".")
        );
        self
    }

    /// The handler at `path`, if any.
    pub(crate) fn get(&self, path: &[String]) -> Option<&Handler<T>> {
        self.methods.get(path)
    }

    /// Every registered path.
    pub fn paths(&self) -> impl Iterator<Item = &[String]> {
        self.methods.keys().map(Vec::as_slice)
    }
}
