//! The checks of the page fuzz target, shared with the seed replay test of
//! `hss-api` (`crates/hss-api/tests/fuzz_seeds.rs`), so the default test run
//! replays the seeds through exactly what fuzzing checks, without building
//! libFuzzer.
//!
//! `parse_page` must never panic, and a body it accepts must have the shape of
//! a page: a JSON object whose `data_list`, when present and not null, is an
//! array, with one row per object in it and every other entry counted as an
//! invalid `data_list` value, and only positive counts of invalid fields.
//! Invalid UTF-8 is replaced (and counted as field `utf8`), so the shape is
//! read from the same lossy text.
//!
//! The shape is read with serde's `IgnoredAny` for everything but the
//! entries' kinds, so it is exactly as lenient as the parser about content
//! it skips (serde_json does not check UTF-8 in strings it skips).

use std::fmt;

use hss_api::model::parse_page;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The page as far as its shape goes.
#[derive(Deserialize)]
struct Shape {
    #[serde(default)]
    #[allow(dead_code)]
    total_num: Option<IgnoredAny>,
    #[serde(default)]
    data_list: Option<Vec<Entry>>,
}

/// An entry of `data_list`: whether it is an object.
struct Entry(bool);

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Kind;
        impl<'de> Visitor<'de> for Kind {
            type Value = Entry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Entry(true))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Entry, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Entry(false))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Entry, E> {
                Ok(Entry(false))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Entry, E> {
                Ok(Entry(false))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Entry, E> {
                Ok(Entry(false))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Entry, E> {
                Ok(Entry(false))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Entry, E> {
                Ok(Entry(false))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Entry, E> {
                Ok(Entry(false))
            }
        }
        d.deserialize_any(Kind)
    }
}

/// Parses `data` as a page and checks what the parser promises; panics on a
/// broken promise.
pub fn check(data: &[u8]) {
    let Ok(page) = parse_page(data) else {
        return;
    };
    let text = String::from_utf8_lossy(data);
    assert!(
        text.trim_start().starts_with('{'),
        "an accepted page is a JSON object"
    );
    let shape: Shape = serde_json::from_str(&text).expect("an accepted page has a page's shape");
    // A missing or null data_list is an empty page.
    let entries = shape.data_list.unwrap_or_default();
    assert_eq!(
        page.invalid_fields
            .iter()
            .any(|(field, _)| *field == "utf8"),
        std::str::from_utf8(data).is_err(),
        "invalid UTF-8 is counted, and only then"
    );
    let objects = entries.iter().filter(|e| e.0).count();
    assert_eq!(page.len(), objects, "one row per object in data_list");
    let not_rows = page
        .invalid_fields
        .iter()
        .find(|(field, _)| *field == "data_list")
        .map_or(0, |(_, n)| *n);
    assert_eq!(
        not_rows as usize,
        entries.len() - objects,
        "entries that are not objects are counted"
    );
    assert!(page.invalid_fields.iter().all(|(_, n)| *n > 0));
}
