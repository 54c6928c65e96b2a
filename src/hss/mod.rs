//! The HSS API client.
//!
//! Place in the data flow: below the scheduler. [`client::Client`] sends the
//! listing call of one target, drawing every attempt from the shared
//! [`budget::Budget`] and authenticating it with one of the credential kinds in
//! [`auth`]; [`model`] turns each answer into rows. Its inputs are its own
//! [`settings`] types, which the configuration fills in: nothing here reads
//! the configuration, and nothing knows about scopes, lanes or metrics:
//! observations go out through [`client::ApiObserver`].

pub mod auth;
pub mod budget;
pub mod client;
pub mod http;
pub mod iam;
pub mod settings;
pub use hss_api::model;

pub use budget::{Budget, BudgetRecord, Priority};
pub use client::{ApiObserver, Client, ClientSettings, Error, ListQuery};
pub use model::{Page, Row, RowRef};
pub use settings::{CredentialsConfig, TargetSettings};
