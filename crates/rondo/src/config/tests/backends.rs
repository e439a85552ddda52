//! `backends`: addresses, weights, ids.

use super::*;

/// `MINIMAL` with its `backends = [...]` line replaced by `backends` (and what follows it).
fn with_backends(backends: &str) -> String {
    MINIMAL.replace("backends = [{ address = \"127.0.0.1:9001\" }]\n", backends)
}

#[test]
fn fractional_weights_are_exact() {
    let c = ok(&with_backends(
        r#"backends = [
  { address = "127.0.0.1:9001", weight = 1 },
  { address = "127.0.0.1:9002", weight = 2 },
  { address = "127.0.0.1:9003", weight = 3.0 },
  { address = "127.0.0.1:9004", weight = 1.5 },
  { address = "127.0.0.1:9005", weight = 0.1 },
  { address = "127.0.0.1:9006", weight = 2.675 },
]
"#,
    ));
    let t: Vec<u32> = c.upstreams[0]
        .backends
        .iter()
        .map(|b| b.weight.thousandths())
        .collect();
    assert_eq!(t, [1000, 2000, 3000, 1500, 100, 2675]);
}

#[test]
fn bad_weights_reuse_the_library_messages() {
    for case in [
        r#"backends = [{ address = "127.0.0.1:9001", weight = 0 }]
                                                   ^ weight 0 is not a positive number"#,
        r#"backends = [{ address = "127.0.0.1:9001", weight = 1.2345 }]
                                                   ^^^^^^ weight 1.2345 has more than three decimal places"#,
        r#"backends = [{ address = "127.0.0.1:9001", weight = -2 }]
                                                   ^^ is not a positive number"#,
        r#"backends = [{ address = "127.0.0.1:9001", weight = 1e9 }]
                                                   ^^^ is too large"#,
        r#"backends = [{ address = "127.0.0.1:9001", weight = "2" }]
                                                   ^^^ expected a number"#,
    ] {
        assert_marked(&with_backends(&format!("{case}\n")));
    }
}

#[test]
fn backends_need_valid_addresses_and_unique_ids() {
    assert_marked(&with_backends(
        r#"backends = [
  { address = "127.0.0.1:9001" },
  { address = "127.0.0.1:9001" },
              ^^^^^^^^^^^^^^^^ duplicate backend id `127.0.0.1:9001` in upstream `app`: already defined on line 10; give one of them a distinct `id`
]
"#,
    ));
    ok(&with_backends(
        "backends = [{ address = \"127.0.0.1:9001\" }, { address = \"127.0.0.1:9001\", id = \"again\" }]\n",
    ));
    ok(&with_backends(
        "backends = [{ address = \"localhost:9001\" }]\n",
    ));
    for case in [
        r#"backends = [{ address = "127.0.0.1:9001", id = "x" }, { address = "127.0.0.1:9002", id = "x" }]
                                                                                         ^^^ duplicate backend id `x`"#,
        r#"backends = [{ address = "bad name:9001" }]
                        ^^^^^^^^^^^^^^^ host names are not resolved here"#,
        r#"backends = [{ address = "127.0.0.1" }]
                        ^^^^^^^^^^^ the port is missing"#,
        r#"backends = [{ address = "::1:80" }]
                        ^^^^^^^^ the port is missing"#,
        r#"backends = [{ address = "127.0.0.1:0" }]
                        ^^^^^^^^^^^^^ backend `address` "127.0.0.1:0" has port 0, where nothing listens"#,
        r#"backends = [{ weight = 2 }]
            ^^^^^^^^^^^^^^ missing key `address`"#,
        r#"backends = []
           ^^ upstream `app` has no backends"#,
        r#"backends = [{ address = "127.0.0.1:1", max_connections = 0 }]
                                                         ^ `max_connections` must be at least 1"#,
        r#"backends = [{ address = "127.0.0.1:9001", wieght = 2 }]
                                          ^^^^^^ unknown key `wieght`, did you mean `weight`?"#,
    ] {
        assert_marked(&with_backends(&format!("{case}\n")));
    }
    assert_marked(&MINIMAL.replace(
        "name = \"app\"\nbackends = [{ address = \"127.0.0.1:9001\" }]\n",
        "name = \"app\"\n       ^^^^^ upstream `app` has no `backends`\n",
    ));
}

#[test]
fn an_address_with_a_scheme_says_to_drop_it() {
    assert_marked(&with_backends(
        r#"backends = [{ address = "http://127.0.0.1:9002" }]
                        ^^^^^^^^^^^^^^^^^^^^^^^ a scheme (`http://`) is not allowed, only an IP address and port; write "127.0.0.1:9002"
"#,
    ));
}

#[test]
fn a_backend_written_as_a_string_shows_the_table_to_write() {
    assert_marked(&with_backends(
        r#"backends = ["127.0.0.1:9001"]
            ^^^^^^^^^^^^^^^^ a backend is a table, not a string: write { address = "127.0.0.1:9001" }
"#,
    ));
}
