//! The one place that writes rondo configuration for programs rather than people: the
//! integration tests, `rondo demo` and `rondo compare --live` describe the proxy they want
//! with these builders, and the `toml` crate writes the text that
//! [`config::parse`](crate::config::parse) then reads like any user's file — so what they run
//! is exactly what a user could have written, and no caller concatenates TOML by hand.
//!
//! ```
//! use rondo::lab::config::{ConfigBuilder, Section, UpstreamBuilder};
//! use std::time::Duration;
//!
//! let config = ConfigBuilder::proxy(
//!     UpstreamBuilder::new("app")
//!         .algorithm("smooth-weighted")
//!         .backend("a", "127.0.0.1:9001".parse().unwrap(), 1.0)
//!         .backend("b", "127.0.0.1:9002".parse().unwrap(), 1.5)
//!         .health_check(
//!             Section::new()
//!                 .duration("interval", Duration::from_millis(500))
//!                 .duration("timeout", Duration::from_millis(200)),
//!         ),
//! );
//! let parsed = config.parse().unwrap();
//! assert_eq!(parsed.upstreams[0].backends.len(), 2);
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use toml::{Table, Value};

use crate::config::{Config, ConfigError};

/// The name of the listener [`ConfigBuilder::proxy`] creates.
pub const LISTENER: &str = "web";

/// A TOML value for a duration, in the form users write (`"150ms"`, `"2s"`).
pub fn duration(d: Duration) -> Value {
    Value::String(humantime::format_duration(d).to_string())
}

/// A weight as TOML: an integer when it is whole (as users write `weight = 1`), a float
/// otherwise.
fn weight(w: f64) -> Value {
    if w.fract() == 0.0 && w.abs() < 1e15 {
        Value::Integer(w as i64)
    } else {
        Value::Float(w)
    }
}

/// A table of keys (`[upstreams.health_check]`, `[admin]`, a backend's fields…).
#[derive(Debug, Clone, Default)]
pub struct Section {
    table: Table,
}

impl Section {
    /// An empty table.
    pub fn new() -> Section {
        Section::default()
    }

    /// Sets `key` to `value`.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> Section {
        self.table.insert(key.to_owned(), value.into());
        self
    }

    /// Sets `key` to a duration.
    pub fn duration(self, key: &str, d: Duration) -> Section {
        self.set(key, duration(d))
    }

    /// `enabled = false`: the table's feature switched off.
    pub fn disabled() -> Section {
        Section::new().set("enabled", false)
    }
}

impl From<Section> for Value {
    fn from(s: Section) -> Value {
        Value::Table(s.table)
    }
}

/// One `[[upstreams]]` table.
#[derive(Debug, Clone)]
pub struct UpstreamBuilder {
    table: Table,
    backends: Vec<Value>,
}

impl UpstreamBuilder {
    /// An upstream called `name`, with no backend yet.
    pub fn new(name: &str) -> UpstreamBuilder {
        let mut table = Table::new();
        table.insert("name".into(), name.into());
        UpstreamBuilder {
            table,
            backends: Vec::new(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.table.get("name").and_then(Value::as_str).unwrap_or("")
    }

    /// `algorithm = "…"`.
    pub fn algorithm(self, algorithm: impl std::fmt::Display) -> UpstreamBuilder {
        self.set("algorithm", algorithm.to_string())
    }

    /// Sets any upstream key.
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> UpstreamBuilder {
        self.table.insert(key.to_owned(), value.into());
        self
    }

    /// Sets an upstream key to a duration.
    pub fn duration(self, key: &str, d: Duration) -> UpstreamBuilder {
        self.set(key, duration(d))
    }

    /// Adds backend `id` at `addr` with `weight`.
    pub fn backend(self, id: &str, addr: SocketAddr, w: f64) -> UpstreamBuilder {
        self.backend_with(id, addr, w, Section::new())
    }

    /// Adds a backup backend: it takes traffic only when no primary is available.
    pub fn backup(self, id: &str, addr: SocketAddr, w: f64) -> UpstreamBuilder {
        self.backend_with(id, addr, w, Section::new().set("backup", true))
    }

    /// Adds a backend with more fields (`max_connections`, `backup`…).
    pub fn backend_with(
        mut self,
        id: &str,
        addr: SocketAddr,
        w: f64,
        more: Section,
    ) -> UpstreamBuilder {
        let mut t = Table::new();
        t.insert("id".into(), id.into());
        t.insert("address".into(), addr.to_string().into());
        t.insert("weight".into(), weight(w));
        t.extend(more.table);
        self.backends.push(Value::Table(t));
        self
    }

    /// `[upstreams.health_check]`.
    pub fn health_check(self, section: Section) -> UpstreamBuilder {
        self.set("health_check", section)
    }

    /// `[upstreams.circuit_breaker]`.
    pub fn circuit_breaker(self, section: Section) -> UpstreamBuilder {
        self.set("circuit_breaker", section)
    }

    fn into_value(mut self) -> Value {
        self.table
            .insert("backends".into(), Value::Array(self.backends));
        Value::Table(self.table)
    }
}

/// A whole configuration file.
#[derive(Debug, Clone)]
pub struct ConfigBuilder {
    root: Table,
    listeners: Vec<Value>,
    upstreams: Vec<Value>,
}

impl Default for ConfigBuilder {
    fn default() -> Self {
        ConfigBuilder::new()
    }
}

impl ConfigBuilder {
    /// Two workers, no access log, and the admin API on a free loopback port (so programs
    /// run side by side); no listener and no upstream yet.
    pub fn new() -> ConfigBuilder {
        let mut root = Table::new();
        root.insert("workers".into(), 2.into());
        root.insert("access_log".into(), false.into());
        let mut admin = Table::new();
        admin.insert("listen".into(), "127.0.0.1:0".into());
        root.insert("admin".into(), Value::Table(admin));
        ConfigBuilder {
            root,
            listeners: Vec::new(),
            upstreams: Vec::new(),
        }
    }

    /// The usual shape: [`new`](ConfigBuilder::new), one listener [`LISTENER`] on a free
    /// loopback port in front of `upstream`.
    pub fn proxy(upstream: UpstreamBuilder) -> ConfigBuilder {
        let name = upstream.name().to_owned();
        ConfigBuilder::new()
            .listener(LISTENER, "127.0.0.1:0", &name)
            .upstream(upstream)
    }

    /// Sets a top-level key (`workers`, `shutdown_grace`…).
    pub fn set(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        self.root.insert(key.to_owned(), value.into());
        self
    }

    /// Sets a top-level key to a duration.
    pub fn duration(self, key: &str, d: Duration) -> ConfigBuilder {
        self.set(key, duration(d))
    }

    /// Sets a key of the `[admin]` table.
    pub fn admin(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        if let Some(Value::Table(admin)) = self.root.get_mut("admin") {
            admin.insert(key.to_owned(), value.into());
        }
        self
    }

    /// Adds a listener `name` bound to `bind` whose default upstream is `upstream`.
    pub fn listener(self, name: &str, bind: &str, upstream: &str) -> ConfigBuilder {
        self.listener_with(
            Section::new()
                .set("name", name)
                .set("bind", bind)
                .set("upstream", upstream),
        )
    }

    /// Adds a listener with any fields.
    pub fn listener_with(mut self, listener: Section) -> ConfigBuilder {
        self.listeners.push(listener.into());
        self
    }

    /// Changes a key of every listener (e.g. `idle_timeout`).
    pub fn listeners_set(mut self, key: &str, value: impl Into<Value>) -> ConfigBuilder {
        let value = value.into();
        for l in &mut self.listeners {
            if let Value::Table(t) = l {
                t.insert(key.to_owned(), value.clone());
            }
        }
        self
    }

    /// Adds an upstream.
    pub fn upstream(mut self, upstream: UpstreamBuilder) -> ConfigBuilder {
        self.upstreams.push(upstream.into_value());
        self
    }

    /// The configuration as TOML text.
    pub fn to_toml(&self) -> String {
        let mut root = self.root.clone();
        root.insert("listeners".into(), Value::Array(self.listeners.clone()));
        root.insert("upstreams".into(), Value::Array(self.upstreams.clone()));
        toml::to_string(&root).unwrap_or_default()
    }

    /// The configuration as rondo reads it.
    pub fn parse(&self) -> Result<Config, ConfigError> {
        crate::config::parse(&self.to_toml(), "generated.toml")
    }
}
