//! `[listeners.tls]`, `mode`, `redirect_https` and an upstream's `tls`.

use super::*;

/// The one diagnostic of `text`, which must contain `needle`.
fn one_error(text: &str, needle: &str) {
    let all = errors(text);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    assert!(all[0].2.contains(needle), "{:?} lacks {needle:?}", all[0].2);
}

/// `MINIMAL` with `extra` appended to the listener.
fn listener_with(extra: &str) -> String {
    MINIMAL.replacen(
        "upstream = \"app\"\n",
        &format!("upstream = \"app\"\n{extra}\n"),
        1,
    )
}

#[test]
fn tls_certificates_are_read_with_their_names_and_the_default() {
    let c = ok(&listener_with(
        "[listeners.tls]\ncertificates = [{ cert = \"a.pem\", key = \"a.key\", server_names = \
         [\"API.example.com\", \"*.example.com\"] }, { cert = \"s.pem\", key = \"s.key\" }]\n\
         min_version = \"1.3\"",
    ));
    let tls = c.listeners[0].tls.as_ref().unwrap();
    assert_eq!(tls.min_version, TlsVersion::Tls13);
    assert_eq!(
        tls.certificates[0].server_names,
        ["api.example.com", "*.example.com"]
    );
    assert_eq!(tls.default_certificate(), 1);
    assert_eq!(c.listeners[0].mode, ListenerMode::Http);
}

#[test]
fn tls_mistakes_point_at_the_value() {
    let two_defaults = listener_with(
        "tls = { certificates = [{ cert = \"a\", key = \"a\" }, { cert = \"b\", key = \"b\" }] }",
    );
    one_error(&two_defaults, "only one can be the default");
    let twice = listener_with(
        "tls = { certificates = [{ cert = \"a\", key = \"a\", server_names = [\"x.org\"] }, \
         { cert = \"b\", key = \"b\", server_names = [\"x.org\"] }] }",
    );
    one_error(
        &twice,
        "server name `x.org` is already served by the certificate on line 6",
    );
    one_error(
        &listener_with(
            "tls = { certificates = [{ cert = \"a\", key = \"a\", server_names = [\"a.*.org\"] }] }",
        ),
        "a wildcard is allowed only as a whole first label",
    );
    one_error(
        &listener_with("tls = { certificates = [] }"),
        "at least one certificate",
    );
    one_error(
        &listener_with(
            "tls = { certificates = [{ cert = \"a\", key = \"a\" }], min_version = \"1.1\" }",
        ),
        "`min_version` must be \"1.2\" or \"1.3\"",
    );
    one_error(
        &listener_with(
            "redirect_https = true\ntls = { certificates = [{ cert = \"a\", key = \"a\" }] }",
        ),
        "would redirect to itself",
    );
    one_error(
        &listener_with("mode = \"tcp\"\nredirect_https = true"),
        "`redirect_https` needs HTTP requests",
    );
}

#[test]
fn upstream_tls_verifies_by_default_and_refuses_contradictions() {
    let c = ok(&upstream_with("tls = { server_name = \"App.internal\" }"));
    let tls = c.upstreams[0].tls.as_ref().unwrap();
    assert!(tls.verify);
    assert_eq!(tls.server_name.as_deref(), Some("app.internal"));
    one_error(
        &upstream_with("tls = { verify = false, ca = \"ca.pem\" }"),
        "`ca` is unused with `verify = false`",
    );
    one_error(
        &upstream_with("tls = { cert = \"c.pem\" }"),
        "needs both `cert` and `key`",
    );
}

#[test]
fn relative_certificate_paths_are_relative_to_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rondo.toml");
    std::fs::write(
        &file,
        listener_with(
            "tls = { certificates = [{ cert = \"site.pem\", key = \"/abs/site.key\" }] }",
        ),
    )
    .unwrap();
    let c = load(&file).unwrap();
    let cert = &c.listeners[0].tls.as_ref().unwrap().certificates[0];
    assert_eq!(cert.cert, dir.path().join("site.pem"));
    assert_eq!(cert.key, std::path::Path::new("/abs/site.key"));
}
