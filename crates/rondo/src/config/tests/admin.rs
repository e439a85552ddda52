//! `[admin]`: the listen address and the token that guards mutations.

use super::*;

#[test]
fn admin_token_comes_from_the_environment_when_named() {
    let admin = "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken_env = \"ADMIN_T\"\n";
    let env = |name: &str| (name == "ADMIN_T").then(|| "from-env".to_owned());
    let c = parse_with_env(&format!("{admin}{MINIMAL}"), "t.toml", &env).unwrap();
    assert_eq!(c.admin.token.as_deref(), Some("from-env"));

    let fixture = |state: &str| {
        format!(
            r#"[admin]
listen = "0.0.0.0:9901"
token_env = "ADMIN_T"
            ^^^^^^^^^ `ADMIN_T` named by `token_env` {state}
{MINIMAL}"#
        )
    };
    assert_marked(&fixture("is not set"));
    let empty = |_: &str| Some(String::new());
    assert_marked_with(&fixture("is empty"), &empty);
}

#[test]
fn non_loopback_admin_needs_a_token() {
    assert_marked(&format!(
        r#"[admin]
listen = "0.0.0.0:9901"
         ^^^^^^^^^^^^^^ admin listens on 0.0.0.0:9901, which is not loopback: set `token` or `token_env`
{MINIMAL}"#
    ));
    ok(&format!("[admin]\nlisten = \"[::1]:9901\"\n{MINIMAL}"));
    ok(&format!(
        "[admin]\nlisten = \"0.0.0.0:9901\"\ntoken = \"t\"\n{MINIMAL}"
    ));
    assert_marked(&format!(
        r#"[admin]
token = "t"
token_env = "X"
            ^^^ either `token` or `token_env`, not both
{MINIMAL}"#
    ));
}

#[test]
fn a_disabled_admin_api_needs_no_token_and_frees_its_port() {
    let c = ok(&format!(
        "[admin]\nenabled = false\nlisten = \"0.0.0.0:9901\"\n{}",
        MINIMAL.replace("127.0.0.1:8080", "0.0.0.0:9901")
    ));
    assert!(!c.admin.enabled);
    assert!(ok(MINIMAL).admin.enabled);
}
