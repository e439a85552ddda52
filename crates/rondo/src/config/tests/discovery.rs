//! `[discovery.etcd]` and an upstream's `discovery`.

use super::*;

/// `MINIMAL` whose upstream reads etcd (`extra` goes into the upstream), with `etcd` as the
/// `[discovery.etcd]` table's body.
fn with_etcd(extra: &str, etcd: &str) -> String {
    format!("{MINIMAL}discovery = \"etcd\"\n{extra}\n[discovery.etcd]\n{etcd}\n")
}

#[test]
fn an_upstream_reads_etcd_with_the_default_prefix() {
    let c = ok(&with_etcd(
        "",
        r#"endpoints = ["http://127.0.0.1:2379", "10.0.0.2:2379/"]"#,
    ));
    let etcd = c.etcd.unwrap();
    assert_eq!(etcd.prefix, "/rondo");
    let authorities: Vec<&str> = etcd
        .endpoints
        .iter()
        .map(|e| e.authority.as_str())
        .collect();
    assert_eq!(authorities, ["127.0.0.1:2379", "10.0.0.2:2379"]);
    assert_eq!(c.upstreams[0].discovery, Some(Discovery::Etcd));
    // The file's backends stay, as the fallback before etcd is first read.
    assert_eq!(c.upstreams[0].backends.len(), 1);
    let c = ok(&with_etcd(
        "",
        "endpoints = [\"http://etcd.internal:2379\"]\nprefix = \"/fleet/a/\"",
    ));
    assert_eq!(c.etcd.unwrap().prefix, "/fleet/a");
}

#[test]
fn a_discovered_upstream_needs_no_backends_in_the_file() {
    let text = with_etcd("", r#"endpoints = ["http://127.0.0.1:2379"]"#)
        .replace("backends = [{ address = \"127.0.0.1:9001\" }]\n", "");
    assert!(ok(&text).upstreams[0].backends.is_empty());
    let text = with_etcd("", r#"endpoints = ["http://127.0.0.1:2379"]"#).replace(
        "backends = [{ address = \"127.0.0.1:9001\" }]\n",
        "backends = []\n",
    );
    assert!(ok(&text).upstreams[0].backends.is_empty());
}

#[test]
fn bad_discovery_settings_point_at_the_value() {
    for case in [
        r#"discovery = "consul"
            ^^^^^^^^ unknown discovery `consul`; expected `etcd`"#,
        r#"discovery = "etcd"
            ^^^^^^ `discovery = "etcd"` needs a `[discovery.etcd]` table"#,
    ] {
        let text = MINIMAL.replace(
            "backends = [{ address = \"127.0.0.1:9001\" }]\n",
            &format!("backends = [{{ address = \"127.0.0.1:9001\" }}]\n{case}\n"),
        );
        assert_marked(&text);
    }
    for etcd in [
        r#"endpoints = ["https://127.0.0.1:2379"]
             ^^^^^^^^^^^^^^^^^^^^^^^^ TLS to etcd is not supported yet"#,
        r#"endpoints = ["http://127.0.0.1"]
             ^^^^^^^^^^^^^^^^^^ is not an etcd client URL such as "http://127.0.0.1:2379""#,
        r#"endpoints = ["http://127.0.0.1:2379/v3"]
             ^^^^^^^^^^^^^^^^^^^^^^^^^^ is not an etcd client URL"#,
        r#"endpoints = []
            ^^ `endpoints` is empty: at least one etcd client URL is required"#,
        r#"endpoints = ["http://127.0.0.1:2379"]
prefix = "rondo"
         ^^^^^^^ `prefix` "rondo" must start with `/`"#,
    ] {
        assert_marked(&with_etcd("", etcd));
    }
}

#[test]
fn an_etcd_table_without_endpoints_says_what_to_add() {
    let all = errors(&with_etcd("", "prefix = \"/rondo\""));
    assert_eq!(all.len(), 1, "{all:?}");
    assert!(
        all[0]
            .2
            .contains("has no `endpoints`: add e.g. endpoints = [\"http://127.0.0.1:2379\"]"),
        "{all:?}"
    );
}
