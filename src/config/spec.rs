//! The on-disk TOML spec: exactly what the file may say, nothing checked beyond types.
//! Each table's `validate` (in the file named after it) turns it into its part of a
//! validated [`super::Config`]; unknown fields are rejected so a typo is an error, never a
//! silently ignored setting.

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
    pub(crate) control: Option<ControlSpec>,
    pub(crate) geoip: Option<GeoipSpec>,
    pub(crate) alerts: Option<Spanned<AlertsSpec>>,
    pub(crate) rrl: Option<RrlSpec>,
    pub(crate) metrics: Option<MetricsSpec>,
    pub(crate) log: Option<LogSpec>,
    pub(crate) dnstap: Option<Spanned<DnstapSpec>>,
    pub(crate) fleet: Option<Spanned<FleetSpec>>,
    #[serde(default)]
    pub(crate) line: Vec<LineSpec>,
    #[serde(default)]
    pub(crate) health_check: Vec<HealthCheckSpec>,
    #[serde(default)]
    pub(crate) address: Vec<AddressSpec>,
    #[serde(default)]
    pub(crate) pool: Vec<PoolSpec>,
    #[serde(default)]
    pub(crate) access_domain: Vec<AccessDomainSpec>,
    /// Files of more `[[access-domain]]` tables (paths or `dir/*.toml` patterns).
    pub(crate) include: Option<Vec<Spanned<String>>>,
}

/// An included file: access domains only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct IncludeSpec {
    #[serde(default)]
    pub(crate) access_domain: Vec<AccessDomainSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ControlSpec {
    pub(crate) listen: Option<Spanned<String>>,
    pub(crate) allow_remote: Option<bool>,
    pub(crate) state_file: Option<Spanned<String>>,
    /// Seconds after which saved health and active pools are not restored.
    pub(crate) state_max_age: Option<Spanned<f64>>,
    /// A file of `name:token` lines: bearer tokens that may change state.
    pub(crate) token_file: Option<Spanned<String>>,
    /// `Host` header values accepted besides the listener's address and `localhost`.
    pub(crate) allowed_hosts: Option<Vec<Spanned<String>>>,
    /// PEM certificate chain and private key: the API speaks HTTPS.
    pub(crate) tls_cert: Option<Spanned<String>>,
    pub(crate) tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AlertsSpec {
    /// Receives every state change.
    pub(crate) webhook: Option<Spanned<String>>,
    pub(crate) retries: Option<Spanned<i64>>,
    pub(crate) timeout: Option<Spanned<f64>>,
    /// PEM CA certificates trusted for https webhooks, besides the system's.
    pub(crate) ca_file: Option<Spanned<String>>,
    /// Further webhooks, each for the events its rule selects.
    #[serde(default)]
    pub(crate) rule: Vec<AlertRuleSpec>,
}

/// `[[alerts.rule]]`: which events go to which webhook.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AlertRuleSpec {
    pub(crate) name: Option<Spanned<String>>,
    pub(crate) webhook: Spanned<String>,
    /// `address-down`, `address-up`, `pool-down`, `pool-up`, `pool-switch` (default: all).
    pub(crate) events: Option<Vec<Spanned<String>>>,
    /// Events that concern these access domains.
    pub(crate) access_domains: Option<Vec<Spanned<String>>>,
    /// Events that concern these pools.
    pub(crate) pools: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct MetricsSpec {
    /// Count GSLB answers per access domain and per line.
    pub(crate) per_domain: Option<bool>,
    /// Most series per label (access domains, lines, routes); the rest share `_other`.
    pub(crate) max_series: Option<Spanned<i64>>,
}

/// `[log]`: the process's own log lines.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct LogSpec {
    /// "text" (default) or "json".
    pub(crate) format: Option<Spanned<String>>,
    /// The least severe level written: error, warn, info (default), debug, trace.
    pub(crate) level: Option<Spanned<String>>,
}

/// `[dnstap]`: the query log, as dnstap frames to a socket or a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct DnstapSpec {
    /// A Frame Streams reader's Unix socket (bidirectional handshake).
    pub(crate) socket: Option<Spanned<String>>,
    /// A Frame Streams file (written whole: START, frames, STOP at shutdown).
    pub(crate) file: Option<Spanned<String>>,
    /// Log one query in N (per shard thread).
    pub(crate) sample: Option<Spanned<i64>>,
    pub(crate) log_queries: Option<bool>,
    pub(crate) log_responses: Option<bool>,
    /// AUTH_RESPONSE frames carry the query too.
    pub(crate) responses_with_queries: Option<bool>,
    pub(crate) identity: Option<Spanned<String>>,
    pub(crate) version: Option<Spanned<String>>,
}

/// `[fleet]`: this node is an edge of a fleet fed by `gtmd publish` over NATS JetStream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct FleetSpec {
    /// NATS server URLs (`nats://host:port`).
    pub(crate) nats: Option<Spanned<Vec<Spanned<String>>>>,
    /// This edge's name in the fleet.
    pub(crate) edge: Option<Spanned<String>>,
    /// Where the last-known-good epoch is kept.
    pub(crate) state_dir: Option<Spanned<String>>,
    /// Whether this edge shares its health verdicts with the fleet and counts theirs.
    pub(crate) share_health: Option<Spanned<bool>>,
    /// Copies the engine keeps of each bucket gtmd creates.
    pub(crate) replicas: Option<Spanned<i64>>,
    /// This edge's vantage group (probe sharding).
    pub(crate) group: Option<Spanned<String>>,
    /// Probers per check in each vantage group.
    pub(crate) probes_per_group: Option<Spanned<i64>>,
    /// Fresh votes needed before the fleet's verdict on a check changes.
    pub(crate) min_vantages: Option<Spanned<i64>>,
    /// Addresses probed to tell a target's failure from this edge's own isolation.
    pub(crate) anchors: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct GeoipSpec {
    pub(crate) databases: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct LineSpec {
    pub(crate) name: Spanned<String>,
    #[serde(default)]
    pub(crate) prefixes: Vec<Spanned<String>>,
    pub(crate) countries: Option<Spanned<Vec<String>>>,
    pub(crate) continents: Option<Spanned<Vec<String>>>,
    pub(crate) asns: Option<Spanned<Vec<i64>>>,
    pub(crate) file: Option<Spanned<String>>,
    pub(crate) parent: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct HealthCheckSpec {
    pub(crate) name: Spanned<String>,
    pub(crate) protocol: Spanned<String>,
    pub(crate) port: Option<Spanned<i64>>,
    pub(crate) interval: Option<Spanned<f64>>,
    pub(crate) timeout: Option<Spanned<f64>>,
    pub(crate) down_after: Option<Spanned<i64>>,
    pub(crate) up_after: Option<Spanned<i64>>,
    pub(crate) method: Option<Spanned<String>>,
    pub(crate) path: Option<Spanned<String>>,
    pub(crate) host: Option<Spanned<String>>,
    pub(crate) expect: Option<Spanned<Vec<i64>>>,
    pub(crate) body_contains: Option<Spanned<String>>,
    pub(crate) tls_verify: Option<bool>,
    pub(crate) sni: Option<Spanned<String>>,
    pub(crate) packets: Option<Spanned<i64>>,
    pub(crate) max_loss: Option<Spanned<f64>>,
    pub(crate) max_rtt: Option<Spanned<f64>>,
    pub(crate) sources: Option<Spanned<Vec<Spanned<String>>>>,
    pub(crate) failure_rate: Option<Spanned<i64>>,
    pub(crate) half_open: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AddressSpec {
    pub(crate) name: Spanned<String>,
    pub(crate) value: Spanned<String>,
    pub(crate) weight: Option<Spanned<i64>>,
    pub(crate) enabled: Option<bool>,
    pub(crate) mode: Option<Spanned<String>>,
    pub(crate) health_check: Option<Spanned<toml::Value>>,
    pub(crate) remarks: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct PoolSpec {
    pub(crate) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(crate) kind: Spanned<String>,
    pub(crate) addresses: Spanned<Vec<Spanned<String>>>,
    pub(crate) enabled: Option<bool>,
    pub(crate) health: Option<Spanned<String>>,
    pub(crate) policy: Option<Spanned<String>>,
    pub(crate) answers: Option<Spanned<i64>>,
    pub(crate) remarks: Option<String>,
}

/// `[access-domain.lines]`: line name -> pools.
pub(crate) type LineRoutes = std::collections::BTreeMap<String, Spanned<Vec<Spanned<String>>>>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct AccessDomainSpec {
    pub(crate) name: Spanned<String>,
    #[serde(rename = "type")]
    pub(crate) rtype: Spanned<String>,
    pub(crate) ttl: Option<Spanned<i64>>,
    pub(crate) enabled: Option<bool>,
    pub(crate) remarks: Option<String>,
    pub(crate) policy: Spanned<String>,
    pub(crate) preemptive: Option<bool>,
    pub(crate) pools: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub(crate) lines: Option<Spanned<LineRoutes>>,
    pub(crate) fallback: Option<Spanned<String>>,
    pub(crate) fallback_pool: Option<Spanned<String>>,
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
    pub(crate) tcp_io_timeout: Option<Spanned<f64>>,
    pub(crate) tcp_max_connections_per_source: Option<Spanned<i64>>,
    pub(crate) identity: Option<Spanned<String>>,
    pub(crate) version_string: Option<Spanned<String>>,
    pub(crate) ecs: Option<bool>,
    pub(crate) probe_before_ready: Option<bool>,
    pub(crate) nsid: Option<Spanned<String>>,
    pub(crate) cookies: Option<bool>,
    pub(crate) require_cookie: Option<bool>,
    pub(crate) cookie_secret_file: Option<Spanned<String>>,
    pub(crate) cookie_secret_previous_file: Option<Spanned<String>>,
    pub(crate) xdp: Option<Spanned<XdpSpec>>,
}

/// `[server.xdp]`: the AF_XDP data path (`io = "xdp"`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct XdpSpec {
    pub(crate) interface: Option<Spanned<String>>,
    pub(crate) queues: Option<Spanned<i64>>,
}

/// `[rrl]`: response rate limiting.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RrlSpec {
    pub(crate) rate: Option<Spanned<i64>>,
    pub(crate) slip: Option<Spanned<i64>>,
    pub(crate) table_size: Option<Spanned<i64>>,
    pub(crate) ipv4_prefix: Option<Spanned<i64>>,
    pub(crate) ipv6_prefix: Option<Spanned<i64>>,
    pub(crate) exempt: Option<Vec<Spanned<String>>>,
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
