//! The listing API's page and row model, parsed leniently.
//!
//! Place in the data flow: the client hands each response body to
//! [`parse_page`]; the rows it returns go to the scheduler and on to
//! aggregation. The official example response is loose with types (`"id":
//! "111(...)"`, sizes as text), so every field is read leniently: a number may
//! come as a JSON number, a numeric string, null or not at all; a value that
//! cannot be read counts as absent (0 for counts), is reported in
//! [`Page::invalid_fields`], and never fails the page. Only a body that is not
//! a JSON object is an error.
//!
//! Upstream data is bounded here, before it reaches aggregation and labels:
//!
//! - a page without `data_list`, or with `"data_list": null`, is an empty page
//!   (both SDKs mark the field optional); `total_num` is kept as given;
//! - [`parse_page_limited`] refuses a page with more rows than the `limit`
//!   asked for ([`ModelError::TooManyRows`]): the API documents at most
//!   `limit`, so such a page is malformed and the client retries it as such;
//! - every text value kept from a row (namespace, image name, version,
//!   digest, instance, registry, scan status, failure reason, severity) longer
//!   than [`MAX_LABEL_BYTES`] is cut at a character boundary and counted under
//!   its field name;
//! - a body that is not valid UTF-8 is read with each invalid sequence
//!   replaced by U+FFFD and counted once as field `utf8`; serde_json alone
//!   would refuse the whole page.
//!
//! Scan failures: `scan_failed_code` (registry-images API) is the failure code
//! and `scan_failed_desc` there is its human description; under the older
//! swr-repository API `scan_failed_desc` holds the code itself. Both are read;
//! [`Row::scan_failure_reason`] gives the code when there is one.
//!
//! Multi-arch images: a row may carry `association_images`, the image's
//! per-architecture images (with their own counts on the registry-images
//! API). Whether the parent row's counts already include them is not
//! documented, and each associated image has a record id of its own, so it
//! may also be listed as a row. The exporter therefore reads top-level rows
//! only and never adds `association_images` entries: an image is counted
//! once whether or not the listing repeats it as its own row (rows are
//! deduplicated by id) and whether or not the parent's counts include it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The longest text value kept from a row, in bytes (1 KiB): longer values
/// are cut at a character boundary and counted as invalid.
pub const MAX_LABEL_BYTES: usize = 1024;

/// A page body that could not be read at all.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// Not JSON, cut off, or not a JSON object.
    #[error("malformed page: {0}")]
    Malformed(#[from] serde_json::Error),
    /// More rows than the `limit` asked for.
    #[error("malformed page: {rows} rows, more than the limit of {limit} asked for")]
    TooManyRows {
        /// Entries of `data_list`.
        rows: usize,
        /// The `limit` of the request.
        limit: u32,
    },
}

/// One image version, as far as the exporter needs it, with its texts as
/// `S`: owned ([`Row`]), borrowed from a page ([`RowRef`]), or a page's own
/// text ranges (inside [`Page`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowOf<S> {
    /// The API's row id, when readable.
    pub id: Option<u64>,
    /// SWR organisation (namespace).
    pub namespace: S,
    /// Image (repository) name.
    pub image_name: S,
    /// Image version (tag).
    pub image_version: S,
    /// Image digest.
    pub image_digest: S,
    /// Scan status; `None` when missing.
    pub scan_status: Option<S>,
    /// Why the scan failed (swr-repository: the code; registry-images: a
    /// human description); empty when it did not.
    pub scan_failed_desc: S,
    /// The failure code (registry-images API only); empty otherwise.
    pub scan_failed_code: S,
    /// Last scan time, epoch milliseconds; `None` when never scanned.
    pub latest_scan_time: Option<i64>,
    /// When the version was last pushed or updated, epoch milliseconds;
    /// `None` when missing.
    pub latest_update_time: Option<i64>,
    /// Vulnerabilities found.
    pub vul_num: u64,
    /// Failed baseline (unsafe setting) checks.
    pub unsafe_setting_num: u64,
    /// Malicious files found.
    pub malicious_file_num: u64,
    /// Enterprise-edition instance name; empty otherwise.
    pub instance_name: S,
    /// Enterprise-edition instance id; empty otherwise.
    pub instance_id: S,
    /// Whether this is the newest version of the image.
    pub latest_version: Option<bool>,
    /// The registry the image is in (registry-images API); empty otherwise.
    pub registry_name: S,
    /// `Security`, `Low`, `Medium` or `High` (registry-images API, once
    /// scanned); `None` otherwise.
    pub severity_level: Option<S>,
}

/// A row that owns its texts.
pub type Row = RowOf<String>;

/// A row whose texts are borrowed, from a [`Page`] or a [`Row`].
pub type RowRef<'a> = RowOf<&'a str>;

impl<S> RowOf<S> {
    /// The same row with each text `f` of the original; an absent
    /// `scan_status` or `severity_level` stays absent.
    pub fn map<'s, T>(&'s self, mut f: impl FnMut(&'s S) -> T) -> RowOf<T> {
        RowOf {
            id: self.id,
            namespace: f(&self.namespace),
            image_name: f(&self.image_name),
            image_version: f(&self.image_version),
            image_digest: f(&self.image_digest),
            scan_status: self.scan_status.as_ref().map(&mut f),
            scan_failed_desc: f(&self.scan_failed_desc),
            scan_failed_code: f(&self.scan_failed_code),
            latest_scan_time: self.latest_scan_time,
            latest_update_time: self.latest_update_time,
            vul_num: self.vul_num,
            unsafe_setting_num: self.unsafe_setting_num,
            malicious_file_num: self.malicious_file_num,
            instance_name: f(&self.instance_name),
            instance_id: f(&self.instance_id),
            latest_version: self.latest_version,
            registry_name: f(&self.registry_name),
            severity_level: self.severity_level.as_ref().map(f),
        }
    }
}

impl<S: AsRef<str>> RowOf<S> {
    /// The `reason` of a failed scan: `scan_failed_code` when present and
    /// not empty, else `scan_failed_desc` (which holds the code under the
    /// swr-repository API); empty when the scan did not fail.
    pub fn scan_failure_reason(&self) -> &str {
        if self.scan_failed_code.as_ref().is_empty() {
            self.scan_failed_desc.as_ref()
        } else {
            self.scan_failed_code.as_ref()
        }
    }

    /// The row with its texts borrowed.
    pub fn as_ref(&self) -> RowRef<'_> {
        self.map(|s| s.as_ref())
    }

    /// The row with its texts copied.
    pub fn to_row(&self) -> Row {
        self.map(|s| s.as_ref().to_owned())
    }
}

impl<'a> From<&'a Row> for RowRef<'a> {
    fn from(row: &'a Row) -> Self {
        row.as_ref()
    }
}

/// A text of a row in a [`Page`]: a byte range of the page's text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

/// Where the texts of a page's rows go as they are read: one string for the
/// whole page (no allocation per value), or owned strings (the serde path).
trait Texts {
    type Text: Default;
    /// Keeps `text`, which is valid UTF-8.
    fn put(&mut self, text: &[u8]) -> Self::Text;
}

impl Span {
    /// A page's text is shorter than its body, which the client caps far
    /// below 4 GiB; a longer one reads as empty texts, never as others.
    fn of(start: usize, end: usize) -> Span {
        match (u32::try_from(start), u32::try_from(end)) {
            (Ok(start), Ok(end)) => Span { start, end },
            _ => Span::default(),
        }
    }
}

/// The texts of a page's rows as the [`Scanner`] reads them: bytes it has
/// seen to be UTF-8, checked once more as a whole when the page is done.
impl Texts for Vec<u8> {
    type Text = Span;
    fn put(&mut self, text: &[u8]) -> Span {
        let start = self.len();
        self.extend_from_slice(text);
        Span::of(start, self.len())
    }
}

/// The texts of a page's rows from the serde path or [`Page::from_rows`].
impl Texts for String {
    type Text = Span;
    fn put(&mut self, text: &[u8]) -> Span {
        let start = self.len();
        self.push_str(&String::from_utf8_lossy(text));
        Span::of(start, self.len())
    }
}

/// The owned texts of the serde path's rows.
struct Owned;

impl Texts for Owned {
    type Text = String;
    fn put(&mut self, text: &[u8]) -> String {
        String::from_utf8_lossy(text).into_owned()
    }
}

/// A parsed page. Its rows' texts share one string, so a page of 200 rows
/// is a handful of allocations rather than some 1,400; [`Page::rows`] reads
/// them as [`RowRef`]s.
#[derive(Default, Clone)]
pub struct Page {
    /// The API's total for the whole listing, when readable.
    pub total_num: Option<u64>,
    /// Fields whose value could not be read, with how often.
    pub invalid_fields: Vec<(&'static str, u64)>,
    /// The texts of all rows.
    text: String,
    /// The rows that were objects, their texts as ranges of `text`.
    rows: Vec<RowOf<Span>>,
}

impl Page {
    /// A page of `rows`, as if parsed.
    pub fn from_rows<'a, R: Into<RowRef<'a>>>(
        total_num: Option<u64>,
        rows: impl IntoIterator<Item = R>,
    ) -> Self {
        let mut page = Page {
            total_num,
            ..Page::default()
        };
        for row in rows {
            let row = row.into();
            let row = row.map(|s| page.text.put(s.as_bytes()));
            page.rows.push(row);
        }
        page
    }

    /// The rows that were objects, in page order.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = RowRef<'_>> + DoubleEndedIterator + '_ {
        self.rows.iter().map(|row| self.view(row))
    }

    /// The row at `index`.
    pub fn row(&self, index: usize) -> Option<RowRef<'_>> {
        self.rows.get(index).map(|row| self.view(row))
    }

    /// The rows, with their texts copied.
    pub fn to_rows(&self) -> Vec<Row> {
        self.rows().map(|row| row.to_row()).collect()
    }

    /// Rows that were objects.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether the page has no row.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn view(&self, row: &RowOf<Span>) -> RowRef<'_> {
        row.map(|span| {
            self.text
                .get(span.start as usize..span.end as usize)
                .unwrap_or_default()
        })
    }

    fn count_invalid(&mut self, field: &'static str) {
        match self.invalid_fields.iter_mut().find(|(f, _)| *f == field) {
            Some((_, n)) => *n += 1,
            None => self.invalid_fields.push((field, 1)),
        }
    }
}

impl PartialEq for Page {
    fn eq(&self, other: &Self) -> bool {
        self.total_num == other.total_num
            && self.invalid_fields == other.invalid_fields
            && self.rows().eq(other.rows())
    }
}

impl Eq for Page {}

impl fmt::Debug for Page {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Page")
            .field("total_num", &self.total_num)
            .field("rows", &self.rows().collect::<Vec<_>>())
            .field("invalid_fields", &self.invalid_fields)
            .finish()
    }
}

/// Parses a response body of the listing call, whatever its row count.
pub fn parse_page(body: &[u8]) -> Result<Page, ModelError> {
    parse(body, 0).map(|(page, _)| page)
}

/// Parses a response body of a listing call made with `limit`: a page with
/// more `data_list` entries than `limit` is refused as malformed.
pub fn parse_page_limited(body: &[u8], limit: u32) -> Result<Page, ModelError> {
    // Room for the rows the page may hold: `limit`, unless the body is too
    // short for that many rows of a realistic size.
    let rows = (limit as usize).min(body.len() / 256);
    let (page, listed) = parse(body, rows)?;
    if listed > limit as usize {
        return Err(ModelError::TooManyRows {
            rows: listed,
            limit,
        });
    }
    Ok(page)
}

/// The page and the number of `data_list` entries (objects or not).
///
/// The body is read by [`Scanner`], which handles the shapes real pages have
/// without building anything it does not keep; whatever it does not handle
/// itself (a body that is not JSON, a repeated `data_list`, deep nesting,
/// ...) is read again by serde_json, so the result and every error are
/// serde_json's. Both readers apply values to rows through the same
/// functions ([`set_int`], [`set_text`], [`set_bool`]).
fn parse(body: &[u8], rows: usize) -> Result<(Page, usize), ModelError> {
    let mut scanner = Scanner::new(body);
    let (parts, lossy) = match scanner.page(rows) {
        Some(parts) => (
            parts,
            !scanner.ascii() && std::str::from_utf8(body).is_err(),
        ),
        None => (
            serde_parts(&String::from_utf8_lossy(body))?,
            std::str::from_utf8(body).is_err(),
        ),
    };
    Ok(page_of(parts, lossy))
}

/// Reads `text` with serde_json alone (the [`Scanner`]'s fallback).
fn serde_parts(text: &str) -> Result<Parts, ModelError> {
    let raw: RawPage = serde_json::from_str(text)?;
    let rows = raw.data_list.unwrap_or_default();
    let mut parts = Parts {
        total_num: raw.total_num,
        rows: Vec::with_capacity(rows.len()),
        text: String::new(),
        invalid: Vec::new(),
        listed: rows.len(),
    };
    for row in rows {
        match row {
            RawRow::NotAnObject => parts.invalid.push("data_list"),
            RawRow::Row(row, invalid) => {
                parts.invalid.extend(invalid);
                let row = row.map(|s| parts.text.put(s.as_bytes()));
                parts.rows.push(row);
            }
        }
    }
    Ok(parts)
}

/// The page of what a reader found, and the number of `data_list` entries.
fn page_of(parts: Parts, lossy: bool) -> (Page, usize) {
    let mut page = Page {
        rows: parts.rows,
        text: parts.text,
        ..Page::default()
    };
    if lossy {
        page.count_invalid("utf8");
    }
    match parts.total_num {
        Loose::Value(n) if n >= 0 => page.total_num = u64::try_from(n).ok(),
        Loose::Absent => {}
        _ => page.count_invalid("total_num"),
    }
    for field in parts.invalid {
        page.count_invalid(field);
    }
    (page, parts.listed)
}

/// What a reader found in a page, before invalid values are counted.
struct Parts {
    total_num: Loose<i64>,
    /// The entries of `data_list` that are objects.
    rows: Vec<RowOf<Span>>,
    /// Their texts.
    text: String,
    /// In order: the unreadable or cut values of the rows, and `data_list`
    /// for each entry that is not an object.
    invalid: Vec<&'static str>,
    /// Entries of `data_list`.
    listed: usize,
}

/// A leniently read scalar.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Loose<T> {
    /// Null or missing.
    #[default]
    Absent,
    /// Read.
    Value(T),
    /// Present but unreadable.
    Invalid,
}

impl<T: AsRef<[u8]>> Loose<T> {
    fn as_bytes(&self) -> Loose<&[u8]> {
        match self {
            Loose::Absent => Loose::Absent,
            Loose::Value(s) => Loose::Value(s.as_ref()),
            Loose::Invalid => Loose::Invalid,
        }
    }
}

/// The page object; anything but an object (an array, a string, `null`) is
/// refused.
struct RawPage {
    total_num: Loose<i64>,
    data_list: Option<Vec<RawRow>>,
}

impl<'de> Deserialize<'de> for RawPage {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PageVisitor;
        impl<'de> Visitor<'de> for PageVisitor {
            type Value = RawPage;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a page object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPage, A::Error> {
                let mut page = RawPage {
                    total_num: Loose::Absent,
                    data_list: None,
                };
                while let Some(key) = map.next_key::<PageField>()? {
                    match key {
                        PageField::TotalNum => page.total_num = map.next_value()?,
                        PageField::DataList => page.data_list = map.next_value()?,
                        PageField::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(page)
            }
        }
        d.deserialize_map(PageVisitor)
    }
}

/// The page keys the exporter reads.
enum PageField {
    TotalNum,
    DataList,
    Other,
}

impl<'de> Deserialize<'de> for PageField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = PageField;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PageField, E> {
                Ok(match v {
                    "total_num" => PageField::TotalNum,
                    "data_list" => PageField::DataList,
                    _ => PageField::Other,
                })
            }
        }
        d.deserialize_identifier(KeyVisitor)
    }
}

/// Reads an integer from a number or a numeric string.
struct IntVisitor;

impl<'de> Visitor<'de> for IntVisitor {
    type Value = Loose<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer, a numeric string or null")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Value(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(int_of_u64(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(int_of_f64(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(int_of_str(v))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Loose::Invalid)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
}

fn int_of_u64(v: u64) -> Loose<i64> {
    i64::try_from(v).map_or(Loose::Invalid, Loose::Value)
}

fn int_of_f64(v: f64) -> Loose<i64> {
    if v.fract() == 0.0 && v.is_finite() && v.abs() < 9.0e15 {
        // The check above makes the conversion exact.
        #[allow(clippy::cast_possible_truncation)]
        Loose::Value(v as i64)
    } else {
        Loose::Invalid
    }
}

fn int_of_str(v: &str) -> Loose<i64> {
    let t = v.trim();
    if t.is_empty() {
        return Loose::Absent;
    }
    if let Ok(n) = t.parse::<i64>() {
        return Loose::Value(n);
    }
    match t.parse::<f64>() {
        Ok(f) => int_of_f64(f),
        Err(_) => Loose::Invalid,
    }
}

impl<'de> Deserialize<'de> for Loose<i64> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(IntVisitor)
    }
}

/// Reads text from a string, or a number or boolean written as text.
struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Loose<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or null")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Loose::Value(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Loose::Value(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Loose::Value(v.to_string()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Loose::Value(v.to_string()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Loose::Value(v.to_string()))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Value(v.to_string()))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
}

impl<'de> Deserialize<'de> for Loose<String> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(TextVisitor)
    }
}

/// Reads a boolean from `true`/`false`, `"true"`/`"false"` or 0/1.
struct BoolVisitor;

impl<'de> Visitor<'de> for BoolVisitor {
    type Value = Loose<bool>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean or null")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Loose::Value(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(bool_of_i64(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(bool_of_u64(v))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Loose::Invalid)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(bool_of_str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Loose::Absent)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Loose::Invalid)
    }
}

fn bool_of_i64(v: i64) -> Loose<bool> {
    match v {
        0 => Loose::Value(false),
        1 => Loose::Value(true),
        _ => Loose::Invalid,
    }
}

fn bool_of_u64(v: u64) -> Loose<bool> {
    bool_of_i64(i64::try_from(v).unwrap_or(-1))
}

fn bool_of_str(v: &str) -> Loose<bool> {
    match v.trim() {
        "true" | "TRUE" | "True" => Loose::Value(true),
        "false" | "FALSE" | "False" => Loose::Value(false),
        "" => Loose::Absent,
        _ => Loose::Invalid,
    }
}

impl<'de> Deserialize<'de> for Loose<bool> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoolVisitor)
    }
}

/// A row as it arrives: an object with the fields read leniently and the
/// names of unreadable or cut fields, or something else entirely.
enum RawRow {
    Row(Box<Row>, Vec<&'static str>),
    NotAnObject,
}

/// The row fields the exporter reads; everything else is skipped unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Namespace,
    ImageName,
    ImageVersion,
    ImageDigest,
    ScanStatus,
    ScanFailedDesc,
    ScanFailedCode,
    LatestScanTime,
    LatestUpdateTime,
    VulNum,
    UnsafeSettingNum,
    MaliciousFileNum,
    InstanceName,
    InstanceId,
    LatestVersion,
    RegistryName,
    SeverityLevel,
    Other,
}

/// How a field's value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    Bool,
    Skip,
}

impl Field {
    fn of(name: &[u8]) -> Field {
        match name {
            b"id" => Field::Id,
            b"namespace" => Field::Namespace,
            b"image_name" => Field::ImageName,
            b"image_version" => Field::ImageVersion,
            b"image_digest" => Field::ImageDigest,
            b"scan_status" => Field::ScanStatus,
            b"scan_failed_desc" => Field::ScanFailedDesc,
            b"scan_failed_code" => Field::ScanFailedCode,
            b"latest_scan_time" => Field::LatestScanTime,
            b"latest_update_time" => Field::LatestUpdateTime,
            b"vul_num" => Field::VulNum,
            b"unsafe_setting_num" => Field::UnsafeSettingNum,
            b"malicious_file_num" => Field::MaliciousFileNum,
            b"instance_name" => Field::InstanceName,
            b"instance_id" => Field::InstanceId,
            b"latest_version" => Field::LatestVersion,
            b"registry_name" => Field::RegistryName,
            b"severity_level" => Field::SeverityLevel,
            _ => Field::Other,
        }
    }

    fn kind(self) -> Kind {
        match self {
            Field::Id
            | Field::LatestScanTime
            | Field::LatestUpdateTime
            | Field::VulNum
            | Field::UnsafeSettingNum
            | Field::MaliciousFileNum => Kind::Int,
            Field::Namespace
            | Field::ImageName
            | Field::ImageVersion
            | Field::ImageDigest
            | Field::ScanStatus
            | Field::ScanFailedDesc
            | Field::ScanFailedCode
            | Field::InstanceName
            | Field::InstanceId
            | Field::RegistryName
            | Field::SeverityLevel => Kind::Text,
            Field::LatestVersion => Kind::Bool,
            Field::Other => Kind::Skip,
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Field, E> {
                Ok(Field::of(v.as_bytes()))
            }
        }
        d.deserialize_identifier(FieldVisitor)
    }
}

fn text<T: Texts>(
    texts: &mut T,
    value: Loose<&[u8]>,
    field: &'static str,
    invalid: &mut Vec<&'static str>,
) -> T::Text {
    match value {
        Loose::Value(s) => texts.put(capped(s, field, invalid)),
        Loose::Absent => T::Text::default(),
        Loose::Invalid => {
            invalid.push(field);
            T::Text::default()
        }
    }
}

/// `s` (valid UTF-8) cut to at most [`MAX_LABEL_BYTES`] at a character
/// boundary, the cut counted under `field`.
fn capped<'s>(s: &'s [u8], field: &'static str, invalid: &mut Vec<&'static str>) -> &'s [u8] {
    if s.len() <= MAX_LABEL_BYTES {
        return s;
    }
    // A character starts at every byte that does not continue one.
    let mut end = MAX_LABEL_BYTES;
    while s.get(end).is_some_and(|b| b & 0xC0 == 0x80) {
        end -= 1;
    }
    invalid.push(field);
    s.get(..end).unwrap_or_default()
}

/// An optional text value: empty counts as absent.
fn optional_text<T: Texts>(
    texts: &mut T,
    value: Loose<&[u8]>,
    field: &'static str,
    invalid: &mut Vec<&'static str>,
) -> Option<T::Text> {
    match value {
        Loose::Value(s) if !s.is_empty() => Some(texts.put(capped(s, field, invalid))),
        Loose::Value(_) | Loose::Absent => None,
        Loose::Invalid => {
            invalid.push(field);
            None
        }
    }
}

fn count(value: Loose<i64>, field: &'static str, invalid: &mut Vec<&'static str>) -> u64 {
    match value {
        Loose::Value(n) if n >= 0 => n.unsigned_abs(),
        Loose::Absent => 0,
        _ => {
            invalid.push(field);
            0
        }
    }
}

/// Applies an integer field's value to `row`.
fn set_int<S>(
    row: &mut RowOf<S>,
    field: Field,
    value: Loose<i64>,
    invalid: &mut Vec<&'static str>,
) {
    match field {
        Field::Id => match value {
            Loose::Value(n) if n >= 0 => row.id = Some(n.unsigned_abs()),
            Loose::Absent => {}
            _ => invalid.push("id"),
        },
        Field::LatestScanTime => match value {
            Loose::Value(n) if n > 0 => row.latest_scan_time = Some(n),
            Loose::Value(0) | Loose::Absent => {}
            _ => invalid.push("latest_scan_time"),
        },
        Field::LatestUpdateTime => match value {
            Loose::Value(n) if n > 0 => row.latest_update_time = Some(n),
            Loose::Value(0) | Loose::Absent => {}
            _ => invalid.push("latest_update_time"),
        },
        Field::VulNum => row.vul_num = count(value, "vul_num", invalid),
        Field::UnsafeSettingNum => {
            row.unsafe_setting_num = count(value, "unsafe_setting_num", invalid);
        }
        Field::MaliciousFileNum => {
            row.malicious_file_num = count(value, "malicious_file_num", invalid);
        }
        _ => {}
    }
}

/// Applies a text field's value to `row`, its text put in `texts`.
fn set_text<T: Texts>(
    row: &mut RowOf<T::Text>,
    texts: &mut T,
    field: Field,
    value: Loose<&[u8]>,
    invalid: &mut Vec<&'static str>,
) {
    let mut put = |name| text(texts, value, name, invalid);
    match field {
        Field::Namespace => row.namespace = put("namespace"),
        Field::ImageName => row.image_name = put("image_name"),
        Field::ImageVersion => row.image_version = put("image_version"),
        Field::ImageDigest => row.image_digest = put("image_digest"),
        Field::ScanFailedDesc => row.scan_failed_desc = put("scan_failed_desc"),
        Field::ScanFailedCode => row.scan_failed_code = put("scan_failed_code"),
        Field::InstanceName => row.instance_name = put("instance_name"),
        Field::InstanceId => row.instance_id = put("instance_id"),
        Field::RegistryName => row.registry_name = put("registry_name"),
        Field::ScanStatus => {
            row.scan_status = optional_text(texts, value, "scan_status", invalid);
        }
        Field::SeverityLevel => {
            row.severity_level = optional_text(texts, value, "severity_level", invalid);
        }
        _ => {}
    }
}

/// Applies a boolean field's value to `row`.
fn set_bool<S>(
    row: &mut RowOf<S>,
    field: Field,
    value: Loose<bool>,
    invalid: &mut Vec<&'static str>,
) {
    if field == Field::LatestVersion {
        match value {
            Loose::Value(b) => row.latest_version = Some(b),
            Loose::Absent => {}
            Loose::Invalid => invalid.push("latest_version"),
        }
    }
}

struct RowVisitor;

impl<'de> Visitor<'de> for RowVisitor {
    type Value = RawRow;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an image row")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRow, A::Error> {
        let mut row = Row::default();
        let mut invalid = Vec::new();
        while let Some(field) = map.next_key::<Field>()? {
            match field.kind() {
                Kind::Int => set_int(&mut row, field, map.next_value()?, &mut invalid),
                Kind::Text => {
                    let value: Loose<String> = map.next_value()?;
                    set_text(&mut row, &mut Owned, field, value.as_bytes(), &mut invalid);
                }
                Kind::Bool => set_bool(&mut row, field, map.next_value()?, &mut invalid),
                Kind::Skip => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RawRow::Row(Box::new(row), invalid))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawRow, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(RawRow::NotAnObject)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawRow, E> {
        Ok(RawRow::NotAnObject)
    }
}

impl<'de> Deserialize<'de> for RawRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RowVisitor)
    }
}

/// Containers nested deeper than this inside a page are left to serde_json.
const MAX_SCAN_DEPTH: usize = 64;

/// A value of a row field or `total_num`, as the [`Scanner`] found it.
enum Value<'a> {
    /// A string without escapes.
    Str(&'a [u8]),
    /// A non-negative integer of at most 18 digits.
    Uint(u64),
    Bool(bool),
    Null,
    /// An array or an object, skipped.
    Container,
    /// Anything else (a string with escapes, a negative or fractional
    /// number): its text, for serde_json to read.
    Token(&'a [u8]),
}

/// A string as the [`Scanner`] found it.
enum Text<'a> {
    /// Without escapes: the text between the quotes.
    Plain(&'a [u8]),
    /// With escapes: the whole token, quotes included.
    Escaped(&'a [u8]),
}

/// A page reader for the shapes real pages have: it keeps the row fields the
/// exporter reads and steps over everything else byte by byte, with no
/// allocation but the kept values. It reads the body as bytes and converts
/// only the values it keeps, invalid UTF-8 replaced as in the serde path:
/// everything that structures JSON is ASCII, and an invalid sequence never
/// spans an ASCII byte, so a value converted alone reads the same as in the
/// whole body converted first. It accepts a strict subset of JSON and
/// gives up (`None`) on anything outside it, and reads every value exactly
/// as the serde path does: values it does not decode itself (a string with
/// escapes, a negative or fractional number) are handed to serde_json with
/// the same type, and skipped values are checked as serde_json's
/// `IgnoredAny` checks them.
///
/// Rows of a page usually list their keys in the same order, so the keys of
/// the row before are tried first: a key that matches one byte for byte
/// needs no search for its end and no lookup of its name.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    /// The keys of the rows so far by position (without quotes, never with
    /// escapes), and their fields.
    keys: Vec<(&'a [u8], Field)>,
    /// The bytes of strings stepped over, or-ed together: a non-ASCII byte
    /// can only be in a string, so without a high bit here the body read so
    /// far is ASCII, valid UTF-8 without checking it again.
    seen: u64,
    /// The texts of the rows so far.
    text: Vec<u8>,
}

impl<'a> Scanner<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            i: 0,
            keys: Vec::new(),
            seen: 0,
            text: Vec::new(),
        }
    }

    /// Whether every string read so far was ASCII (everything else a page
    /// is made of is).
    fn ascii(&self) -> bool {
        self.seen & u64::from_ne_bytes([0x80; 8]) == 0
    }

    /// The page, or `None` for serde_json to read it instead; `rows` is the
    /// room to make for rows.
    fn page(&mut self, rows: usize) -> Option<Parts> {
        let mut parts = Parts {
            total_num: Loose::Absent,
            rows: Vec::with_capacity(rows),
            text: String::new(),
            invalid: Vec::new(),
            listed: 0,
        };
        let mut data_list = false;
        self.ws();
        self.eat(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                let key = match self.string()? {
                    Text::Plain(key) => match key {
                        b"total_num" => PageField::TotalNum,
                        b"data_list" => PageField::DataList,
                        _ => PageField::Other,
                    },
                    Text::Escaped(token) => serde_token(token)?,
                };
                self.ws();
                self.eat(b':')?;
                self.ws();
                match key {
                    PageField::TotalNum => parts.total_num = self.int()?,
                    PageField::DataList => {
                        if data_list {
                            // A later data_list replaces the earlier one.
                            return None;
                        }
                        data_list = true;
                        self.data_list(&mut parts)?;
                    }
                    PageField::Other => self.skip(1)?,
                }
                if !self.next_member(b'}')? {
                    break;
                }
            }
        }
        self.ws();
        if self.i != self.b.len() {
            return None;
        }
        // Every text was checked or converted on its own; this cannot fail.
        parts.text = String::from_utf8(std::mem::take(&mut self.text)).ok()?;
        Some(parts)
    }

    /// After a member of an object or an array: `true` after a comma (with
    /// the whitespace after it), `false` after `close`.
    fn next_member(&mut self, close: u8) -> Option<bool> {
        self.ws();
        match self.peek()? {
            b',' => {
                self.i += 1;
                self.ws();
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    fn data_list(&mut self, parts: &mut Parts) -> Option<()> {
        // Room for the texts kept: a fifth or less of a row's bytes.
        self.text.reserve(self.b.len() / 4);
        match self.peek()? {
            b'n' => return self.literal(b"null"),
            b'[' => self.i += 1,
            _ => return None,
        }
        self.ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? == b'{' {
                self.i += 1;
                let row = self.row(&mut parts.invalid)?;
                parts.rows.push(row);
            } else {
                // Not an object: counted, whatever it is, as long as serde
                // would read it the same way.
                match self.value(2)? {
                    Value::Token(_) => return None,
                    Value::Str(_)
                    | Value::Uint(_)
                    | Value::Bool(_)
                    | Value::Null
                    | Value::Container => parts.invalid.push("data_list"),
                }
            }
            parts.listed += 1;
            if !self.next_member(b']')? {
                return Some(());
            }
        }
    }

    /// One row, after its `{`.
    fn row(&mut self, invalid: &mut Vec<&'static str>) -> Option<RowOf<Span>> {
        let mut row = RowOf::<Span>::default();
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(row);
        }
        for position in 0.. {
            let field = match self.known_key(position) {
                Some(field) => field,
                None => match self.string()? {
                    Text::Plain(key) => {
                        let field = Field::of(key);
                        let known = (key, field);
                        match self.keys.get_mut(position) {
                            Some(slot) => *slot = known,
                            None => self.keys.push(known),
                        }
                        field
                    }
                    Text::Escaped(token) => serde_token(token)?,
                },
            };
            self.ws();
            self.eat(b':')?;
            self.ws();
            match field.kind() {
                Kind::Int => set_int(&mut row, field, self.int()?, invalid),
                Kind::Text => {
                    let value = self.text()?;
                    set_text(&mut row, &mut self.text, field, value.as_bytes(), invalid);
                }
                Kind::Bool => set_bool(&mut row, field, self.boolean()?, invalid),
                Kind::Skip => self.skip(3)?,
            }
            if !self.next_member(b'}')? {
                break;
            }
        }
        Some(row)
    }

    /// The field of the key at the cursor when it is, byte for byte, the
    /// key a row before had at `position`; the cursor moves past it.
    fn known_key(&mut self, position: usize) -> Option<Field> {
        let &(name, field) = self.keys.get(position)?;
        let end = self.i + name.len() + 2;
        let token = self.b.get(self.i..end)?;
        let matches = token.first() == Some(&b'"')
            && token.last() == Some(&b'"')
            && token.get(1..token.len() - 1).is_some_and(|t| same(t, name));
        matches.then(|| {
            self.i = end;
            field
        })
    }

    /// An integer value, as [`IntVisitor`] reads it.
    fn int(&mut self) -> Option<Loose<i64>> {
        Some(match self.value(3)? {
            Value::Str(s) => int_of_str(&utf8(s)),
            Value::Uint(n) => int_of_u64(n),
            Value::Bool(_) | Value::Container => Loose::Invalid,
            Value::Null => Loose::Absent,
            Value::Token(token) => serde_token(token)?,
        })
    }

    /// A text value, as [`TextVisitor`] reads it.
    /// Its bytes are valid UTF-8: a string without a high bit is ASCII, and
    /// any other is converted.
    fn text(&mut self) -> Option<Loose<Cow<'a, [u8]>>> {
        let before = std::mem::take(&mut self.seen);
        let value = self.value(3)?;
        let ascii = self.ascii();
        self.seen |= before;
        Some(match value {
            Value::Str(s) if ascii => Loose::Value(Cow::Borrowed(s)),
            Value::Str(s) => Loose::Value(match utf8(s) {
                Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
                Cow::Owned(s) => Cow::Owned(s.into_bytes()),
            }),
            Value::Uint(n) => Loose::Value(Cow::Owned(n.to_string().into_bytes())),
            Value::Bool(b) => Loose::Value(Cow::Borrowed(if b { b"true" } else { b"false" })),
            Value::Container => Loose::Invalid,
            Value::Null => Loose::Absent,
            Value::Token(token) => match serde_token::<Loose<String>>(token)? {
                Loose::Value(s) => Loose::Value(Cow::Owned(s.into_bytes())),
                Loose::Absent => Loose::Absent,
                Loose::Invalid => Loose::Invalid,
            },
        })
    }

    /// A boolean value, as [`BoolVisitor`] reads it.
    fn boolean(&mut self) -> Option<Loose<bool>> {
        Some(match self.value(3)? {
            Value::Str(s) => bool_of_str(&utf8(s)),
            Value::Uint(n) => bool_of_u64(n),
            Value::Bool(b) => Loose::Value(b),
            Value::Container => Loose::Invalid,
            Value::Null => Loose::Absent,
            Value::Token(token) => serde_token(token)?,
        })
    }

    /// The value at the cursor, inside `depth` containers.
    fn value(&mut self, depth: usize) -> Option<Value<'a>> {
        Some(match self.peek()? {
            b'"' => match self.string()? {
                Text::Plain(s) => Value::Str(s),
                Text::Escaped(token) => Value::Token(token),
            },
            b't' => {
                self.literal(b"true")?;
                Value::Bool(true)
            }
            b'f' => {
                self.literal(b"false")?;
                Value::Bool(false)
            }
            b'n' => {
                self.literal(b"null")?;
                Value::Null
            }
            b'[' | b'{' => {
                self.skip(depth)?;
                Value::Container
            }
            b'0'..=b'9' | b'-' => {
                let start = self.i;
                let mut n: u64 = 0;
                while let Some(&c) = self.b.get(self.i) {
                    if !c.is_ascii_digit() {
                        break;
                    }
                    // At most 18 digits are used, which cannot overflow.
                    n = n.wrapping_mul(10).wrapping_add(u64::from(c - b'0'));
                    self.i += 1;
                }
                let digits = self.i - start;
                let plain =
                    (1..=18).contains(&digits) && (digits == 1 || self.b.get(start) != Some(&b'0'));
                if plain
                    && !self
                        .peek()
                        .is_some_and(|c| matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
                {
                    Value::Uint(n)
                } else {
                    while self.peek().is_some_and(|c| {
                        matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                    }) {
                        self.i += 1;
                    }
                    Value::Token(self.b.get(start..self.i)?)
                }
            }
            _ => return None,
        })
    }

    /// Steps over one value inside `depth` containers, checking it as
    /// serde_json's `IgnoredAny` does.
    fn skip(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' => {
                self.i += 1;
                self.number()
            }
            b'0'..=b'9' => self.number(),
            open @ (b'[' | b'{') => {
                if depth >= MAX_SCAN_DEPTH {
                    return None;
                }
                let close = if open == b'[' { b']' } else { b'}' };
                self.i += 1;
                self.ws();
                if self.peek()? == close {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        if self.peek()? != b'"' {
                            return None;
                        }
                        self.string()?;
                        self.ws();
                        self.eat(b':')?;
                        self.ws();
                    }
                    self.skip(depth + 1)?;
                    if !self.next_member(close)? {
                        return Some(());
                    }
                }
            }
            _ => None,
        }
    }

    /// A number after its sign, checked as serde_json's `ignore_integer`
    /// checks it.
    fn number(&mut self) -> Option<()> {
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            let start = self.i;
            self.digits();
            if self.i == start {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            let start = self.i;
            self.digits();
            if self.i == start {
                return None;
            }
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    /// A string at the cursor. Escapes are checked as serde_json's
    /// `ignore_str` checks them; a control character gives up.
    fn string(&mut self) -> Option<Text<'a>> {
        let open = self.i;
        self.eat(b'"')?;
        let start = self.i;
        self.i = special(self.b, self.i, &mut self.seen);
        match self.peek()? {
            b'"' => {
                self.i += 1;
                return Some(Text::Plain(self.b.get(start..self.i - 1)?));
            }
            b'\\' => {}
            _ => return None,
        }
        loop {
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(Text::Escaped(self.b.get(open..self.i)?));
                }
                b'\\' => {
                    self.i += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                c => {
                    self.seen |= u64::from(c);
                    self.i += 1;
                }
            }
            self.i = special(self.b, self.i, &mut self.seen);
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    fn eat(&mut self, byte: u8) -> Option<()> {
        (self.peek()? == byte).then(|| self.i += 1)
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// Steps over whitespace as serde_json knows it.
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }
}

/// A value serde_json reads for the [`Scanner`], as the serde path would.
fn serde_token<T: de::DeserializeOwned>(token: &[u8]) -> Option<T> {
    serde_json::from_str(&utf8(token)).ok()
}

/// `bytes` as text, invalid sequences replaced (`from_utf8_lossy` is slow
/// on the valid text almost every value is).
fn utf8(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Whether two short byte strings are equal, compared inline.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (mut a, mut b) = (a, b);
    while let (Some((x, rest_a)), Some((y, rest_b))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        if x != y {
            return false;
        }
        (a, b) = (rest_a, rest_b);
    }
    a.iter().zip(b).all(|(x, y)| x == y)
}

/// The index of the first `"`, `\` or control character in `b` at or after
/// `i` (`b.len()` when there is none), eight bytes at a time; the bytes
/// stepped over are or-ed into `seen`.
fn special(b: &[u8], mut i: usize, seen: &mut u64) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    const QUOTE: u64 = u64::from_le_bytes([b'"'; 8]);
    const BACKSLASH: u64 = u64::from_le_bytes([b'\\'; 8]);
    const SPACE: u64 = u64::from_le_bytes([0x20; 8]);
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        // Little-endian, so the first byte is the lowest.
        let v = u64::from_le_bytes(*chunk);
        // Bytes below 0x20 (the high bit is left to non-ASCII bytes by `!v`).
        let control = v.wrapping_sub(SPACE) & !v & HIGH;
        let found = zero(v ^ QUOTE) | zero(v ^ BACKSLASH) | control;
        if found != 0 {
            // The lowest flag is exact (a borrow only runs upwards, so only
            // flags above a real one can be false): the first special byte.
            let at = found.trailing_zeros() / 8;
            *seen |= v & ((1u64 << (at * 8)) - 1);
            return i + at as usize;
        }
        *seen |= v;
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            break;
        }
        *seen |= u64::from(c);
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The official example response of the API page (shared/seeds), verbatim.
    const SEED_EXAMPLE: &str = r#"{
"total_num" : 3,
"data_list" : [ {
"id" : "111(私有镜像举例)",
"image_digest" : "sha256:cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_id" : "cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_name" : "centos7",
"image_size" : "1000 单位(Bytes)",
"image_type" : "private_image",
"image_version" : "common",
"latest_scan_time" : 1691748641788,
"latest_update_time" : 1687664346000,
"latest_version" : false,
"malicious_file_num" : 0,
"namespace" : "aaa",
"scan_status" : "success",
"scannable" : true,
"unsafe_setting_num" : 1,
"vul_num" : 111,
"instance_name" : "",
"instance_id" : "",
"instance_url" : ""
}, {
"id" : "222(共享镜像举例)",
"domain_name" : "scc_cgs_XXX",
"shared_status" : "effective",
"image_digest" : "sha256:cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_id" : "cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_name" : "mysql",
"image_size" : "1000 单位(Bytes)",
"image_type" : "shared_image",
"image_version" : "5.5",
"latest_scan_time" : 1691748641788,
"latest_update_time" : 1687664346000,
"latest_version" : false,
"malicious_file_num" : 0,
"namespace" : "aaa",
"scan_status" : "success",
"scannable" : true,
"unsafe_setting_num" : 1,
"vul_num" : 111,
"instance_name" : "",
"instance_id" : "",
"instance_url" : ""
}, {
"id" : "333(企业镜像举例)",
"domain_name" : "scc_cgs_XXX",
"shared_status" : "effective",
"image_digest" : "sha256:cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_id" : "cebcdacde18091448a5040dc55bb1a9f6540b093db8XXXXXX",
"image_name" : "mysql",
"image_size" : "1000 单位(Bytes)",
"image_type" : "shared_image",
"image_version" : "5.5",
"latest_scan_time" : 1691748641788,
"latest_update_time" : 1687664346000,
"latest_version" : false,
"malicious_file_num" : 0,
"namespace" : "aaa",
"scan_status" : "success",
"scannable" : true,
"unsafe_setting_num" : 1,
"vul_num" : 111,
"instance_name" : "企业实例名称",
"instance_id" : "",
"instance_url" : ""
} ]
}"#;

    /// A small deterministic generator for the differential test.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    /// Values the scanner reads itself, for any field.
    const VALUES: &[&str] = &[
        "0",
        "1",
        "7",
        "2",
        "-1",
        "-0",
        "1.0",
        "2.5",
        "1e3",
        "1E+2",
        "-2.0e-1",
        "123456789012345678",
        "1234567890123456789",
        "true",
        "false",
        "null",
        r#""""#,
        r#""  ""#,
        r#""12""#,
        r#"" 3 ""#,
        r#""1.5""#,
        r#""true""#,
        r#""False""#,
        r#""lots""#,
        r#""success""#,
        r#""支付-团队""#,
        r#""a\"b""#,
        r#""\u00e9t\u00E9""#,
        r#""\ud83d\ude00""#,
        r#""\/x\\y\n""#,
        "[]",
        "{}",
        "[1,[2,{}]]",
        r#"{"a":[1,"x",null],"b":{"c":-1.5e2}}"#,
        r#"[" ",true]"#,
    ];

    /// Values only some of which serde_json takes, and only in some places.
    const ODD_VALUES: &[&str] = &[
        "01",
        "99999999999999999999999",
        "1e400",
        r#""\ud800""#,
        r#""\x""#,
        "nul",
        "tru",
        "[1,]",
        r#"{"a"}"#,
        "+1",
        ".5",
        "-",
        "1.",
        "1e",
        "0x1",
        "\"\t\"",
    ];

    fn value(rng: &mut Rng) -> &'static str {
        if rng.below(20) == 0 {
            rng.pick(ODD_VALUES)
        } else {
            rng.pick(VALUES)
        }
    }

    const KEYS: &[&str] = &[
        "id",
        "namespace",
        "image_name",
        "image_version",
        "image_digest",
        "scan_status",
        "scan_failed_desc",
        "scan_failed_code",
        "latest_scan_time",
        "latest_update_time",
        "vul_num",
        "unsafe_setting_num",
        "malicious_file_num",
        "instance_name",
        "instance_id",
        "latest_version",
        "registry_name",
        "severity_level",
        "image_size",
        "association_images",
        "image_type",
        r"name\u0073pace",
        r"vul_nu\u006d",
        "total_num",
        "data_list",
    ];

    fn generated_body(rng: &mut Rng) -> String {
        // Real pages list the same keys in the same order in every row.
        let order: Vec<&str> = (0..rng.below(12)).map(|_| rng.pick(KEYS)).collect();
        let same_order = rng.below(2) == 0;
        let mut rows = Vec::new();
        for _ in 0..rng.below(5) {
            match rng.below(8) {
                0 => rows.push(value(rng).to_string()),
                _ => {
                    let fields: Vec<String> = if same_order {
                        order
                            .iter()
                            .map(|key| format!(r#""{key}":{}"#, value(rng)))
                            .collect()
                    } else {
                        (0..rng.below(12))
                            .map(|_| format!(r#""{}":{}"#, rng.pick(KEYS), value(rng)))
                            .collect()
                    };
                    rows.push(format!("{{{}}}", fields.join(",")));
                }
            }
        }
        let mut members = vec![format!(r#""data_list":[{}]"#, rows.join(","))];
        for _ in 0..rng.below(3) {
            let key = rng.pick(&[
                "total_num",
                "other",
                "total_num",
                "data_list",
                r"total\u005fnum",
            ]);
            let value = if key == "data_list" && rng.below(2) == 0 {
                "null"
            } else {
                value(rng)
            };
            members.insert(rng.below(members.len() + 1), format!(r#""{key}":{value}"#));
        }
        let ws = rng.pick(&["", " ", "\n", "\t", "\r\n  "]);
        format!("{ws}{{{ws}{}{ws}}}{ws}", members.join(&format!(",{ws}")))
    }

    fn mutated(rng: &mut Rng, body: &str) -> Vec<u8> {
        const BYTES: &[u8] = b"{}[]\",:\\ -0123456789.eE+tfnul\t\n\x01\x7fx\x80\xc3\xe4\xff";
        let mut bytes = body.as_bytes().to_vec();
        for _ in 0..=rng.below(3) {
            if bytes.is_empty() {
                break;
            }
            let at = rng.below(bytes.len());
            match rng.below(4) {
                0 => {
                    bytes.remove(at);
                }
                1 => bytes.insert(at, BYTES[rng.below(BYTES.len())]),
                2 => bytes[at] = BYTES[rng.below(BYTES.len())],
                _ => bytes.truncate(at),
            }
        }
        bytes
    }

    /// Whether the scanner read `text` itself; panics when it disagrees with
    /// serde_json.
    fn agrees(body: &[u8]) -> bool {
        let Some(fast) = Scanner::new(body).page(0) else {
            return false;
        };
        let text = String::from_utf8_lossy(body);
        match serde_parts(&text) {
            Ok(slow) => assert_eq!(page_of(fast, false), page_of(slow, false), "{text}"),
            Err(error) => panic!("the scanner accepts what serde_json refuses ({error}): {text}"),
        }
        true
    }

    #[test]
    fn the_scanner_reads_every_page_as_serde_json_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut fixed = vec![
            SEED_EXAMPLE.to_string(),
            r#"{"total_num":0,"data_list":[]}"#.to_string(),
            r#"{"total_num":"4","data_list":[{"id":7,"vul_num":"12","malicious_file_num":2.0,"unsafe_setting_num":null},{"id":"8","vul_num":" 3 "},{"id":null,"vul_num":"lots","malicious_file_num":-1,"latest_scan_time":"1700000000000"},{"vul_num":true,"scan_status":null,"latest_version":"true"}]}"#.to_string(),
            r#"{"total_num":{"x":1},"data_list":[1,"x",null,[],{"namespace":["a"],"image_name":5,"extra":{"deep":[1,2]}}]}"#.to_string(),
        ];
        let deep = format!(
            r#"{{"data_list":[{{"x":{}{}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        fixed.push(deep);
        let (mut fast, mut total) = (0, 0);
        for body in &fixed {
            total += 1;
            fast += usize::from(agrees(body.as_bytes()));
            for _ in 0..500 {
                total += 1;
                fast += usize::from(agrees(&mutated(&mut rng, body)));
            }
        }
        assert!(
            agrees(SEED_EXAMPLE.as_bytes()),
            "the official example takes the fast path"
        );
        for _ in 0..20_000 {
            let body = generated_body(&mut rng);
            total += 2;
            fast += usize::from(agrees(body.as_bytes()));
            fast += usize::from(agrees(&mutated(&mut rng, &body)));
        }
        // Both paths are exercised.
        assert!(
            fast > total / 10 && fast < total * 9 / 10,
            "{fast} of {total}"
        );
    }

    #[test]
    fn the_official_example_response_parses() {
        let page = parse_page(SEED_EXAMPLE.as_bytes()).unwrap();
        assert_eq!(page.total_num, Some(3));
        assert_eq!(page.to_rows().len(), 3);
        let first = &page.to_rows()[0];
        assert_eq!(first.id, None);
        assert_eq!(first.namespace, "aaa");
        assert_eq!(first.image_name, "centos7");
        assert_eq!(first.scan_status.as_deref(), Some("success"));
        assert_eq!(first.vul_num, 111);
        assert_eq!(first.unsafe_setting_num, 1);
        assert_eq!(first.latest_scan_time, Some(1_691_748_641_788));
        assert_eq!(page.to_rows()[2].instance_name, "企业实例名称");
        // The ids are text, not numbers; image_size is not read at all.
        assert_eq!(page.invalid_fields, vec![("id", 3)]);
    }

    #[test]
    fn numbers_come_as_numbers_strings_null_or_not_at_all() {
        let page = parse_page(
            br#"{"total_num":"4","data_list":[
                {"id":7,"vul_num":"12","malicious_file_num":2.0,"unsafe_setting_num":null},
                {"id":"8","vul_num":" 3 "},
                {"id":null,"vul_num":"lots","malicious_file_num":-1,"latest_scan_time":"1700000000000"},
                {"vul_num":true,"scan_status":null,"latest_version":"true"}
            ]}"#,
        )
        .unwrap();
        assert_eq!(page.total_num, Some(4));
        let r = &page.to_rows();
        assert_eq!(
            (
                r[0].id,
                r[0].vul_num,
                r[0].malicious_file_num,
                r[0].unsafe_setting_num
            ),
            (Some(7), 12, 2, 0)
        );
        assert_eq!((r[1].id, r[1].vul_num), (Some(8), 3));
        assert_eq!(
            (r[2].id, r[2].vul_num, r[2].malicious_file_num),
            (None, 0, 0)
        );
        assert_eq!(r[2].latest_scan_time, Some(1_700_000_000_000));
        assert_eq!(r[3].vul_num, 0);
        assert_eq!(r[3].scan_status, None);
        assert_eq!(r[3].latest_version, Some(true));
        let mut invalid = page.invalid_fields.clone();
        invalid.sort();
        assert_eq!(invalid, vec![("malicious_file_num", 1), ("vul_num", 2)]);
    }

    #[test]
    fn strange_rows_and_values_never_fail_the_page() {
        let page = parse_page(
            br#"{"total_num":{"x":1},"data_list":[1,"x",null,[],{"namespace":["a"],"image_name":5,"extra":{"deep":[1,2]}}]}"#,
        )
        .unwrap();
        assert_eq!(page.total_num, None);
        assert_eq!(page.to_rows().len(), 1);
        assert_eq!(page.to_rows()[0].namespace, "");
        assert_eq!(page.to_rows()[0].image_name, "5");
        let mut invalid = page.invalid_fields.clone();
        invalid.sort();
        assert_eq!(
            invalid,
            vec![("data_list", 4), ("namespace", 1), ("total_num", 1)]
        );
    }

    #[test]
    fn unknown_enum_values_pass_through() {
        let page = parse_page(
            br#"{"total_num":1,"data_list":[{"scan_status":"quantum_scanning","scan_failed_desc":"new_reason"}]}"#,
        )
        .unwrap();
        assert_eq!(
            page.to_rows()[0].scan_status.as_deref(),
            Some("quantum_scanning")
        );
        assert_eq!(page.to_rows()[0].scan_failed_desc, "new_reason");
        assert!(page.invalid_fields.is_empty());
    }

    #[test]
    fn cut_off_or_shapeless_bodies_are_errors() {
        let cut = &SEED_EXAMPLE.as_bytes()[..200];
        assert!(matches!(parse_page(cut), Err(ModelError::Malformed(_))));
        for body in [&b"[]"[..], b"[0, []]", b"null", b"\"page\"", b"42", b""] {
            assert!(
                matches!(parse_page(body), Err(ModelError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert!(
            parse_page(b"<html>")
                .unwrap_err()
                .to_string()
                .starts_with("malformed page")
        );
    }

    #[test]
    fn a_page_without_data_list_or_with_null_is_empty() {
        for body in [
            &br#"{"total_num":0}"#[..],
            br#"{"total_num":0,"data_list":null}"#,
            br#"{"data_list":null,"total_num":"0"}"#,
        ] {
            let page = parse_page(body).unwrap();
            assert_eq!(
                page,
                Page {
                    total_num: Some(0),
                    ..Page::default()
                },
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        // total_num is kept as given, even when it promises rows.
        let page = parse_page(br#"{"total_num":7,"error_code":null}"#).unwrap();
        assert_eq!((page.total_num, page.to_rows().len()), (Some(7), 0));
        assert!(page.invalid_fields.is_empty());
        // A data_list that is neither an array nor null still breaks the page.
        assert!(parse_page(br#"{"total_num":1,"data_list":{"id":1}}"#).is_err());
    }

    #[test]
    fn more_rows_than_the_limit_is_malformed() {
        let body = br#"{"total_num":9,"data_list":[{"id":1},{"id":2},"junk"]}"#;
        assert_eq!(parse_page_limited(body, 3).unwrap().len(), 2);
        let error = parse_page_limited(body, 2).unwrap_err();
        assert!(
            matches!(error, ModelError::TooManyRows { rows: 3, limit: 2 }),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "malformed page: 3 rows, more than the limit of 2 asked for"
        );
        // The unlimited parser takes it.
        assert_eq!(parse_page(body).unwrap().len(), 2);
        assert_eq!(
            parse_page_limited(br#"{"total_num":0}"#, 1)
                .unwrap()
                .rows
                .len(),
            0
        );
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary_and_counted() {
        let long_ns = "n".repeat(2048);
        // 1023 ASCII bytes then a 3-byte char across the cap.
        let long_name = format!("{}漢漢", "a".repeat(1023));
        let exact = "v".repeat(MAX_LABEL_BYTES);
        let body = serde_json::json!({
            "total_num": 1,
            "data_list": [{
                "namespace": long_ns,
                "image_name": long_name,
                "image_version": exact,
                "scan_status": "s".repeat(5000),
                "scan_failed_code": "c".repeat(1025),
                "registry_name": "r".repeat(1025),
                "severity_level": "h".repeat(1025),
            }]
        });
        let page = parse_page(body.to_string().as_bytes()).unwrap();
        let row = &page.to_rows()[0];
        assert_eq!(row.namespace, "n".repeat(MAX_LABEL_BYTES));
        assert_eq!(row.image_name, "a".repeat(1023));
        assert_eq!(
            row.image_version.len(),
            MAX_LABEL_BYTES,
            "not cut: not counted"
        );
        assert_eq!(
            row.scan_status.as_deref().map(str::len),
            Some(MAX_LABEL_BYTES)
        );
        assert_eq!(row.scan_failure_reason().len(), MAX_LABEL_BYTES);
        assert_eq!(row.registry_name.len(), MAX_LABEL_BYTES);
        assert_eq!(
            row.severity_level.as_deref().map(str::len),
            Some(MAX_LABEL_BYTES)
        );
        let mut invalid = page.invalid_fields.clone();
        invalid.sort();
        assert_eq!(
            invalid,
            vec![
                ("image_name", 1),
                ("namespace", 1),
                ("registry_name", 1),
                ("scan_failed_code", 1),
                ("scan_status", 1),
                ("severity_level", 1),
            ]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted_once_per_page() {
        let mut body = br#"{"total_num":2,"data_list":[{"id":1,"namespace":"bad-"#.to_vec();
        body.extend_from_slice(&[0xff, 0xfe]);
        body.extend_from_slice(br#"","vul_num":3},{"id":2,"image_name":"x"#);
        body.push(0xc3);
        body.extend_from_slice(br#"","vul_num":4}]}"#);
        let page = parse_page(&body).unwrap();
        assert_eq!(page.total_num, Some(2));
        assert_eq!(page.to_rows().len(), 2);
        assert_eq!(page.to_rows()[0].namespace, "bad-\u{fffd}\u{fffd}");
        assert_eq!(page.to_rows()[1].image_name, "x\u{fffd}");
        assert_eq!(
            (page.to_rows()[0].vul_num, page.to_rows()[1].vul_num),
            (3, 4)
        );
        assert_eq!(page.invalid_fields, vec![("utf8", 1)]);
        // Valid UTF-8 is not counted.
        assert!(
            parse_page("{\"data_list\":[{\"namespace\":\"团队\"}]}".as_bytes())
                .unwrap()
                .invalid_fields
                .is_empty()
        );
        // Replacing bytes does not rescue a body that is not JSON.
        assert!(parse_page(&[0xff, b'{']).is_err());
    }

    #[test]
    fn the_failure_reason_is_the_code_when_there_is_one() {
        let page = parse_page(
            br#"{"total_num":3,"data_list":[
                {"id":1,"scan_status":"failed","scan_failed_code":"download_failed","scan_failed_desc":"Image download failed"},
                {"id":2,"scan_status":"failed","scan_failed_code":"","scan_failed_desc":"database_error"},
                {"id":3,"scan_status":"failed","scan_failed_desc":"response_timed_out"}
            ]}"#,
        )
        .unwrap();
        let reasons: Vec<String> = page
            .rows()
            .map(|r| r.scan_failure_reason().to_owned())
            .collect();
        assert_eq!(
            reasons,
            vec!["download_failed", "database_error", "response_timed_out"]
        );
        assert_eq!(page.to_rows()[0].scan_failed_desc, "Image download failed");
        assert_eq!(Row::default().scan_failure_reason(), "");
    }

    #[test]
    fn association_images_are_not_rows() {
        // A multi-arch parent with two per-architecture images that carry
        // counts of their own (registry-images' AssociateImagesInfo), one of
        // which the listing also returns as a row of its own.
        let page = parse_page(
            br#"{"total_num":2,"data_list":[
                {"id":10,"namespace":"ns","image_name":"multi","image_version":"1","vul_num":5,
                 "is_multiple_arch":true,
                 "association_images":[
                    {"id":11,"namespace":"ns","image_name":"multi","image_version":"1","vul_num":2,"malicious_file_num":1},
                    {"id":12,"namespace":"ns","image_name":"multi","image_version":"1","vul_num":3}
                 ]},
                {"id":11,"namespace":"ns","image_name":"multi","image_version":"1","vul_num":2,"malicious_file_num":1}
            ]}"#,
        )
        .unwrap();
        let ids: Vec<Option<u64>> = page.to_rows().iter().map(|r| r.id).collect();
        assert_eq!(ids, vec![Some(10), Some(11)]);
        assert_eq!(page.to_rows()[0].vul_num, 5);
        assert_eq!(page.to_rows()[0].malicious_file_num, 0);
        assert!(page.invalid_fields.is_empty());
        // Whatever association_images holds, it never breaks the page.
        let odd = parse_page(br#"{"data_list":[{"id":1,"association_images":"x"},{"id":2,"association_images":[1,[2]]}]}"#)
            .unwrap();
        assert_eq!(odd.to_rows().len(), 2);
        assert!(odd.invalid_fields.is_empty());
    }

    #[test]
    fn registry_fields_of_the_successor_api_are_read() {
        let page = parse_page(
            br#"{"total_num":1,"data_list":[{"id":1,"namespace":"library","registry_name":"harbor-prod",
                "registry_type":"Harbor","severity_level":"High","latest_sync_time":1700000000000,
                "scan_failed_code":"","vul_num":3}]}"#,
        )
        .unwrap();
        assert_eq!(page.to_rows()[0].registry_name, "harbor-prod");
        assert_eq!(page.to_rows()[0].severity_level.as_deref(), Some("High"));
        assert!(page.invalid_fields.is_empty());
    }

    #[test]
    fn empty_page_parses() {
        let page = parse_page(br#"{"total_num":0,"data_list":[]}"#).unwrap();
        assert_eq!(
            page,
            Page {
                total_num: Some(0),
                ..Page::default()
            }
        );
    }
}
