//! `access_log`: a switch or a file with a format.

use super::*;

#[test]
fn access_log_takes_a_switch_or_a_file_with_a_format() {
    use crate::access_log::{AccessLogConfig, Format};
    let c = ok(&format!(
        "access_log = {{ path = \"/var/log/rondo/access.log\" }}\n{MINIMAL}"
    ));
    assert_eq!(
        c.access_log,
        AccessLogConfig::File {
            path: "/var/log/rondo/access.log".into(),
            format: Format::Combined
        }
    );
    let c = ok(&format!(
        "[access_log]\npath = \"a.log\"\nformat = \"json\"\n{MINIMAL}"
    ));
    assert!(matches!(
        c.access_log,
        AccessLogConfig::File {
            format: Format::Json,
            ..
        }
    ));

    let (line, column) = one_error(
        &format!("access_log = {{ path = \"a.log\", format = \"$status $nope\" }}\n{MINIMAL}"),
        "unknown variable `$nope` in access log format; known: $remote_addr",
    );
    assert_eq!((line, column), (1, 41));
    one_error(
        &format!("access_log = \"yes\"\n{MINIMAL}"),
        "expected true, false, or a table such as { path =",
    );
    one_error(
        &format!("access_log = {{ format = \"json\" }}\n{MINIMAL}"),
        "`path`",
    );
}
