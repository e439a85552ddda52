//! `access_log`: `true`/`false` (a line per request on the process log, or none), or a
//! table `{ path, format }` for a file of its own. Both spellings are one key, so a file
//! written for an older rondo keeps its meaning.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::defaults;
use crate::access_log::{AccessLogConfig, Format};
use toml::Spanned;

/// `access_log` as written.
#[derive(Debug)]
pub(crate) enum RawAccessLog {
    /// `access_log = true | false`.
    Switch(bool),
    /// `access_log = { path = …, format = … }` or an `[access_log]` table.
    File(RawAccessLogFile),
}

/// `[access_log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccessLogFile {
    /// File path, required.
    pub(crate) path: Spanned<String>,
    /// "combined", "json" or a `$variable` template. Default "combined".
    pub(crate) format: Option<Spanned<String>>,
}

impl<'de> Deserialize<'de> for RawAccessLog {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawAccessLog;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "true, false, or a table such as { path = \"/var/log/rondo/access.log\", \
                     format = \"combined\" }",
                )
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<RawAccessLog, E> {
                Ok(RawAccessLog::Switch(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawAccessLog, A::Error> {
                RawAccessLogFile::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawAccessLog::File)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// The configuration `raw` describes, or the place and text of what is wrong.
pub(crate) fn validate(
    raw: Option<&RawAccessLog>,
) -> Result<AccessLogConfig, (Range<usize>, String)> {
    let file = match raw {
        None => return Ok(switch(defaults::ACCESS_LOG)),
        Some(RawAccessLog::Switch(on)) => return Ok(switch(*on)),
        Some(RawAccessLog::File(file)) => file,
    };
    let path = file.path.get_ref();
    if path.trim().is_empty() {
        return Err((
            file.path.span(),
            "`path` is empty: name the access log file, e.g. \"/var/log/rondo/access.log\", \
             or write `access_log = true` for the process log"
                .to_owned(),
        ));
    }
    let format = match &file.format {
        None => defaults::ACCESS_LOG_FORMAT
            .parse::<Format>()
            .map_err(|e| (file.path.span(), e.to_string()))?,
        Some(f) => f
            .get_ref()
            .parse::<Format>()
            .map_err(|e| (f.span(), e.to_string()))?,
    };
    Ok(AccessLogConfig::File {
        path: PathBuf::from(path),
        format,
    })
}

fn switch(on: bool) -> AccessLogConfig {
    if on {
        AccessLogConfig::ProcessLog
    } else {
        AccessLogConfig::Off
    }
}
