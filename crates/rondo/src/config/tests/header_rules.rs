//! A listener's and a route's `request_headers` and `response_headers`.

use super::*;

#[test]
fn header_rules_are_read_per_listener_and_route() {
    let text = MINIMAL.replacen(
        "upstream = \"app\"\n",
        "upstream = \"app\"\nrequest_headers = { set = { \"X-Real-IP\" = \"$remote_addr\" }, remove = [\"x-debug\"] }\n\
         response_headers = { remove = [\"server\"] }\n\
         [[listeners.routes]]\npath_prefix = \"/api\"\nupstream = \"app\"\n\
         request_headers = { set = { \"x-id\" = \"id-$request_id\" } }\n",
        1,
    );
    let c = ok(&text);
    let l = &c.listeners[0];
    assert_eq!(l.headers.request.remove, ["x-debug"]);
    assert_eq!(l.headers.request.set[0].0, "x-real-ip");
    assert_eq!(l.headers.request.set[0].1.to_string(), "$remote_addr");
    assert_eq!(l.headers.response.remove, ["server"]);
    assert_eq!(
        l.routes[0].headers.request.set[0].1.to_string(),
        "id-$request_id"
    );
}

#[test]
fn header_rules_refuse_framing_headers_bad_names_and_unknown_variables() {
    let with = |rules: &str| {
        MINIMAL.replacen(
            "upstream = \"app\"\n",
            &format!("upstream = \"app\"\n{rules}\n"),
            1,
        )
    };
    one_error(
        &with("request_headers = { remove = [\"Content-Length\"] }"),
        "`request_headers` may not change `content-length`: rondo writes the framing",
    );
    one_error(
        &with("response_headers = { set = { \"x a\" = \"1\" } }"),
        "\"x a\" in `response_headers` is not a header name",
    );
    one_error(
        &with("request_headers = { set = { \"x-a\" = \"$remote_port\" } }"),
        "`request_headers.set.x-a`: unknown variable `$remote_port`; a header value may use $remote_addr, $host, $request_id",
    );
    one_error(
        &with("request_headers = { set = { \"x-a\" = \"1\" }, remove = [\"X-A\"] }"),
        "`request_headers` both sets and removes `x-a`: keep one",
    );
    one_error(&with("request_headers = { add = {} }"), "unknown key `add`");
}
