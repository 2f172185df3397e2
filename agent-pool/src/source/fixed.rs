//! A static list: one reset, then silence.

use futures::StreamExt;

use crate::{Endpoint, Update, Updates};

/// Yields `Update::Reset(endpoints)` once, then stays pending forever (it never ends, so
/// [`Pool::run`](crate::Pool::run) keeps ticking).
pub fn fixed(endpoints: Vec<Endpoint>) -> Updates {
    futures::stream::once(async move { Update::Reset(endpoints) })
        .chain(futures::stream::pending())
        .boxed()
}
