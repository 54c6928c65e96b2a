//! Where pages come from: the small interface the scheduler needs.
//!
//! Place in the data flow: the scheduler depends on [`ImageSource`], not on
//! HTTP; the HSS client implements it here, and scheduler tests implement it
//! with rows in memory.

use tokio::time::Instant;

use crate::hss::auth::BoxFuture;
use crate::hss::{Client, Error, ListQuery, Page, Priority};

/// Lists pages of images.
pub trait ImageSource: Send + Sync {
    /// Fetches one page, retrying as the source sees fit; the first call not
    /// before `not_before`; a call that could not be sent by `give_up_at` is
    /// not sent at all ([`Error::NoSlot`]).
    fn list_page<'a>(
        &'a self,
        query: &'a ListQuery,
        priority: Priority,
        not_before: Option<Instant>,
        give_up_at: Option<Instant>,
    ) -> BoxFuture<'a, Result<Page, Error>>;
}

impl ImageSource for Client {
    fn list_page<'a>(
        &'a self,
        query: &'a ListQuery,
        priority: Priority,
        not_before: Option<Instant>,
        give_up_at: Option<Instant>,
    ) -> BoxFuture<'a, Result<Page, Error>> {
        Box::pin(Client::list_page(
            self, query, priority, not_before, give_up_at,
        ))
    }
}
