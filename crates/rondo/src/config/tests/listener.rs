//! `[[listeners]]` and `[[listeners.routes]]`: names, addresses, references to upstreams,
//! routes.

use super::*;

/// `MINIMAL` with `route` (the lines of one `[[listeners.routes]]` table) after the listener.
fn with_route(route: &str) -> String {
    MINIMAL.replace(
        "upstream = \"app\"\n",
        &format!("upstream = \"app\"\n\n[[listeners.routes]]\n{route}\n"),
    )
}

#[test]
fn references_to_unknown_upstreams_are_errors_with_a_suggestion() {
    assert_marked(
        r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "ap"
           ^^^^ unknown upstream `ap`, did you mean `app`? defined upstreams: `app`

[[upstreams]]
name = "app"
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
    assert_marked(&with_route(
        r#"path_prefix = "/x"
upstream = "nope"
           ^^^^^^ unknown upstream `nope`"#,
    ));
}

#[test]
fn routes_need_a_host_or_a_path_prefix_that_makes_sense() {
    for route in [
        "",
        "path_prefix = \"api\"\n              ^^^^^ must start with `/`",
        "host = \"example.com:8080\"\n       ^^^^^^^^^^^^^^^^^^ leave the port out",
        "host = \"*.example.com\"\n       ^^^^^^^^^^^^^^^ wildcards are not supported",
    ] {
        let fixture = with_route(format!("{route}\nupstream = \"app\"").trim_start());
        let fixture = if route.contains('^') {
            fixture
        } else {
            fixture.replace(
                "[[listeners.routes]]\n",
                "[[listeners.routes]]\n^^^^^^^^^^^^^^^^^^^^ a route needs `host` or `path_prefix`\n",
            )
        };
        assert_marked(&fixture);
    }
    let c = ok(&with_route("host = \"Example.COM\"\nupstream = \"app\""));
    assert_eq!(
        c.listeners[0].routes[0].host.as_deref(),
        Some("example.com")
    );
}

#[test]
fn names_are_unique_and_usable_in_urls() {
    assert_marked(&format!(
        r#"{MINIMAL}
[[upstreams]]
name = "app"
       ^^^^^ duplicate upstream name `app`: already defined on line 8
backends = [{{ address = "127.0.0.1:9002" }}]
"#
    ));
    assert_marked(&format!(
        r#"{MINIMAL}
[[listeners]]
name = "web"
       ^^^^^ duplicate listener name `web`
bind = "127.0.0.1:8081"
upstream = "app"
"#
    ));
    assert_marked(
        r#"
[[listeners]]
name = "web"
bind = "127.0.0.1:8080"
upstream = "my app"

[[upstreams]]
name = "my app"
       ^^^^^^^^ invalid upstream name "my app"
backends = [{ address = "127.0.0.1:9001" }]
"#,
    );
}

#[test]
fn two_listeners_cannot_bind_the_same_address() {
    assert_marked(&format!(
        r#"{MINIMAL}
[[listeners]]
name = "other"
bind = "127.0.0.1:8080"
       ^^^^^^^^^^^^^^^^ `bind` 127.0.0.1:8080 is already used by listener `web` on line 4
upstream = "app"
"#
    ));
    assert_marked(&MINIMAL.replace(
        "bind = \"127.0.0.1:8080\"\n",
        "bind = \"127.0.0.1:9901\"\n       ^^^^^^^^^^^^^^^^ also the admin listener's address\n",
    ));
    // Port 0: the system picks a free port for each.
    let text = format!(
        "{}\n[[listeners]]\nname = \"other\"\nbind = \"127.0.0.1:0\"\nupstream = \"app\"\n",
        MINIMAL.replace("127.0.0.1:8080", "127.0.0.1:0")
    );
    ok(&text);
}

#[test]
fn a_bind_without_a_host_suggests_every_interface() {
    assert_marked(&MINIMAL.replace(
        "bind = \"127.0.0.1:8080\"\n",
        r#"bind = ":8080"
       ^^^^^^^ the IP address is missing; write "0.0.0.0:8080" for every IPv4 interface, "[::]:8080" for IPv6, or "127.0.0.1:8080" for this machine only
"#,
    ));
}
