//! `[server]`: listeners, shards, the UDP backend, TCP limits, the CH TXT and NSID
//! identities and DNS cookies, validated into a [`Server`].

use std::net::SocketAddr;
use std::time::Duration;

use toml::Spanned;

use super::spec::ServerSpec;
use super::validate::{Ctx, Seconds};
use super::{IoMode, Server, Shards, Xdp};

impl Server {
    /// The settings of a file without `[server]`.
    fn defaults() -> Self {
        Self {
            listen: vec!["127.0.0.1:5300".parse().expect("literal")],
            shards: Shards::Auto,
            io: IoMode::Auto,
            xdp: None,
            udp_payload: 1232,
            tcp_max_connections: 1024,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_millis(500),
            tcp_max_connections_per_source: 64,
            identity: None,
            version_string: None,
            ecs: true,
            probe_before_ready: true,
            nsid: None,
            cookies: true,
            require_cookie: false,
            cookie_secret: None,
            cookie_secret_previous: None,
        }
    }
}

/// `[server]`, or its defaults when the file has none.
pub(super) fn validate(spec: Option<&ServerSpec>, ctx: &mut Ctx<'_>) -> Server {
    spec.map_or_else(Server::defaults, |spec| spec.validate(ctx))
}

impl ServerSpec {
    fn validate(&self, ctx: &mut Ctx<'_>) -> Server {
        let mut s = Server::defaults();
        s.cookies = self.cookies.unwrap_or(true);
        s.require_cookie = self.require_cookie.unwrap_or(false);
        if let Some(n) = &self.nsid {
            match nsid(n.get_ref()) {
                Ok(v) => s.nsid = Some(v),
                Err(why) => ctx.err(n, "server.nsid", why),
            }
        }
        self.cookie_secrets(ctx, &mut s);
        s.ecs = self.ecs.unwrap_or(true);
        s.probe_before_ready = self.probe_before_ready.unwrap_or(true);
        if let Some(listen) = &self.listen {
            s.listen = listeners(listen, ctx);
        }
        if let Some(sh) = &self.shards {
            s.shards = shards(sh, ctx);
        }
        if let Some(io) = &self.io {
            let modes = [
                ("auto", IoMode::Auto),
                ("io-uring", IoMode::IoUring),
                ("mmsg", IoMode::Mmsg),
                ("xdp", IoMode::Xdp),
            ];
            s.io = ctx.keyword(io, "server.io", &modes).unwrap_or(IoMode::Auto);
        }
        s.xdp = self.xdp.as_ref().and_then(|x| xdp(x, ctx));
        if let Some(io) = self.io.as_ref().filter(|_| s.io == IoMode::Xdp) {
            if self.xdp.is_none() {
                ctx.err(
                    io,
                    "server.io",
                    "\"xdp\" needs a [server.xdp] table with interface = \"NAME\"",
                );
            }
        }
        if let Some(v) = ctx.int(&self.udp_payload, "server.udp-payload", 512..=4096) {
            s.udp_payload = v;
        }
        self.tcp(ctx, &mut s);
        s.identity = txt(&self.identity, "server.identity", ctx);
        s.version_string = txt(&self.version_string, "server.version-string", ctx);
        s
    }

    /// The TCP limits (RFC 7766): connections, per source, and the two timeouts.
    fn tcp(&self, ctx: &mut Ctx<'_>, s: &mut Server) {
        let field = "server.tcp-max-connections";
        if let Some(v) = ctx.int(&self.tcp_max_connections, field, 1..=1_000_000) {
            s.tcp_max_connections = v;
        }
        let (field, ok) = ("server.tcp-idle-timeout", Seconds::Above(0.0, 3600.0));
        if let Some(t) = ctx.seconds(&self.tcp_idle_timeout, field, ok, "") {
            s.tcp_idle_timeout = t;
        }
        let (field, ok) = ("server.tcp-io-timeout", Seconds::Above(0.0, 60.0));
        let note = " (in seconds: 500 ms is 0.5)";
        if let Some(t) = ctx.seconds(&self.tcp_io_timeout, field, ok, note) {
            s.tcp_io_timeout = t;
        }
        let v = &self.tcp_max_connections_per_source;
        let field = "server.tcp-max-connections-per-source";
        if let Some(n) = ctx.int_noted(v, field, 0..=1_000_000, " (0: no limit)") {
            s.tcp_max_connections_per_source = n;
        }
    }

    /// `cookie-secret-file` (one secret, or the current and the previous on two lines) and
    /// `cookie-secret-previous-file`: 32 hexadecimal digits each.
    fn cookie_secrets(&self, ctx: &mut Ctx<'_>, s: &mut Server) {
        if let Some(f) = &self.cookie_secret_file {
            let v = read_secrets(f, "server.cookie-secret-file", ctx);
            s.cookie_secret = v.first().copied();
            s.cookie_secret_previous = v.get(1).copied();
        }
        let Some(f) = &self.cookie_secret_previous_file else {
            return;
        };
        let field = "server.cookie-secret-previous-file";
        let v = read_secrets(f, field, ctx);
        if v.is_empty() {
            // unreadable or malformed: reported
        } else if self.cookie_secret_file.is_none() {
            ctx.err(f, field, "needs cookie-secret-file (the current secret)");
        } else if s.cookie_secret_previous.is_some() || v.len() != 1 {
            ctx.err(
                f,
                field,
                "one previous secret only: this file holds two, or cookie-secret-file has a second line",
            );
        } else {
            s.cookie_secret_previous = v.first().copied();
        }
    }
}

/// `[server.xdp]`: `interface` (required, an interface name) and `queues` (1 to 256).
fn xdp(spec: &Spanned<super::spec::XdpSpec>, ctx: &mut Ctx<'_>) -> Option<Xdp> {
    let queues = ctx.int(&spec.get_ref().queues, "server.xdp.queues", 1..=256);
    let Some(name) = &spec.get_ref().interface else {
        ctx.err(
            spec,
            "server.xdp.interface",
            "missing: the network interface to attach to (e.g. \"eth0\")",
        );
        return None;
    };
    let n = name.get_ref();
    let ok = !n.is_empty()
        && n.len() < libc::IFNAMSIZ
        && !n.contains(|c: char| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    let interface = ctx.check(name, "server.xdp.interface", ok.then(|| n.clone()), || {
        format!("'{n}' is not an interface name (1 to 15 octets, no '/', ':' or spaces)")
    })?;
    Some(Xdp {
        interface,
        queues: queues.unwrap_or(1),
    })
}

/// `listen`: addresses with ports, each once.
fn listeners(listen: &[Spanned<String>], ctx: &mut Ctx<'_>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for l in listen {
        match l.get_ref().parse::<SocketAddr>() {
            Ok(a) if out.contains(&a) => {
                ctx.err(l, "server.listen", format!("{a} is listed twice"));
            }
            Ok(a) => out.push(a),
            Err(_) => ctx.err(
                l,
                "server.listen",
                format!(
                    "'{}' is not an address:port (e.g. \"127.0.0.1:53\" or \"[::1]:53\")",
                    l.get_ref()
                ),
            ),
        }
    }
    out
}

/// `shards`: "auto", or the CPUs (each one this process may run on, once).
fn shards(sh: &Spanned<toml::Value>, ctx: &mut Ctx<'_>) -> Shards {
    let cpus = match sh.get_ref() {
        toml::Value::String(v) if v == "auto" => return Shards::Auto,
        toml::Value::Array(cpus) if !cpus.is_empty() => cpus,
        other => {
            ctx.err(
                sh,
                "server.shards",
                format!("{other} is neither \"auto\" nor a non-empty list of CPU numbers"),
            );
            return Shards::Auto;
        }
    };
    let usable = crate::sys::usable_cpus();
    let mut list = Vec::new();
    for c in cpus {
        match c.as_integer() {
            Some(n) if n >= 0 && usable.contains(&(n as usize)) => {
                if list.contains(&(n as usize)) {
                    ctx.err(sh, "server.shards", format!("CPU {n} is listed twice"));
                }
                list.push(n as usize);
            }
            _ => ctx.err(
                sh,
                "server.shards",
                format!(
                    "'{c}' is not a CPU this process may run on (here: {})",
                    cpu_list(&usable)
                ),
            ),
        }
    }
    Shards::Cpus(list)
}

/// `0-3,6` for [0, 1, 2, 3, 6].
fn cpu_list(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(",")
}

/// `identity`, `version-string`: one TXT string.
fn txt(v: &Option<Spanned<String>>, field: &str, ctx: &mut Ctx<'_>) -> Option<String> {
    let v = v.as_ref()?;
    let value = (v.get_ref().len() <= 255).then(|| v.get_ref().clone());
    ctx.check(v, field, value, || {
        "longer than 255 octets (one TXT string)".into()
    })
}

/// `nsid = "text"` or `nsid = "0x..."` (hex, as Knot's `nsid`).
fn nsid(text: &str) -> Result<Vec<u8>, String> {
    let v = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => {
            if hex.is_empty() || hex.len() % 2 != 0 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!(
                    "'{text}' is not an even number of hexadecimal digits after 0x"
                ));
            }
            (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digits"))
                .collect()
        }
        None => text.as_bytes().to_vec(),
    };
    if v.is_empty() {
        return Err("empty: omit nsid to send none".into());
    }
    if v.len() > 255 {
        return Err("longer than 255 octets".into());
    }
    Ok(v)
}

/// One or two cookie secrets from the file `f` names (none when it is unreadable or
/// malformed, which is reported).
fn read_secrets(f: &Spanned<String>, field: &str, ctx: &mut Ctx<'_>) -> Vec<[u8; 16]> {
    let path = ctx.path(f.get_ref());
    super::reads::note(&path);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            ctx.err(f, field, format!("cannot read {}: {e}", path.display()));
            return Vec::new();
        }
    };
    let secrets: Option<Vec<[u8; 16]>> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(crate::dns::cookie::parse_secret)
        .collect();
    match secrets {
        Some(v) if (1..=2).contains(&v.len()) => v,
        _ => {
            ctx.err(
                f,
                field,
                format!(
                    "{} does not hold one or two secrets of 32 hexadecimal digits, one a line",
                    path.display()
                ),
            );
            Vec::new()
        }
    }
}
