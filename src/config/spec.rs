//! The on-disk TOML spec: exactly what the file may say, nothing checked beyond types.
//! `config::load` turns it into a validated [`super::Config`]; unknown fields are rejected
//! so a typo is an error, never a silently ignored setting.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Spec {
    /// Format version; only 1 exists.
    pub(crate) version: Option<Spanned<i64>>,
    pub(crate) server: Option<ServerSpec>,
    #[serde(default)]
    pub(crate) zone: Vec<ZoneSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ServerSpec {
    pub(crate) listen: Option<Vec<Spanned<String>>>,
    pub(crate) shards: Option<Spanned<toml::Value>>,
    pub(crate) io: Option<Spanned<String>>,
    pub(crate) udp_payload: Option<Spanned<i64>>,
    pub(crate) tcp_max_connections: Option<Spanned<i64>>,
    pub(crate) tcp_idle_timeout: Option<Spanned<f64>>,
    pub(crate) identity: Option<Spanned<String>>,
    pub(crate) version_string: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ZoneSpec {
    pub(crate) name: Spanned<String>,
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) ttl: Option<Spanned<i64>>,
    pub(crate) soa: Option<Spanned<SoaSpec>>,
    pub(crate) ns: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub(crate) records: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct SoaSpec {
    pub(crate) mname: Spanned<String>,
    pub(crate) rname: Spanned<String>,
    pub(crate) serial: Option<Spanned<i64>>,
    pub(crate) refresh: Option<Spanned<i64>>,
    pub(crate) retry: Option<Spanned<i64>>,
    pub(crate) expire: Option<Spanned<i64>>,
    pub(crate) minimum: Option<Spanned<i64>>,
    pub(crate) ttl: Option<Spanned<i64>>,
}
