//! Release builds of the `rondo` binary link its code in the order of `symbol-order.txt`: the
//! functions `rondo serve` runs first, everything else (the load generator, the demo, the chart
//! writer, help text) after, so a running balancer maps under 2 MB of the binary's 8 MB of
//! code instead of almost 5 MB (`bench/order-code.sh` writes the file; docs/performance.md,
//! "Memory"). Only with the linker Rust uses by default on x86_64 Linux (its own `lld`): a
//! build with another linker, a debug build or another target links as before.

use std::path::Path;

/// The ordering file, next to this script.
const ORDER_FILE: &str = "symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed={ORDER_FILE}");
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let Ok(dir) = std::env::var("CARGO_MANIFEST_DIR") else {
        return;
    };
    let file = Path::new(&dir).join(ORDER_FILE);
    let rustflags = var("CARGO_ENCODED_RUSTFLAGS");
    let default_lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        // A linker chosen in `.cargo/config.toml` or the environment: maybe not lld.
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !rustflags.contains("linker")
        && !rustflags.contains("fuse-ld");
    // `-Wl,` splits its argument at commas.
    let path = file.to_string_lossy();
    if var("PROFILE") == "release" && default_lld && file.is_file() && !path.contains(',') {
        // Names the file lists that the binary no longer has are skipped without a warning.
        println!(
            "cargo::rustc-link-arg-bin=rondo=-Wl,--symbol-ordering-file={path},--no-warn-symbol-ordering"
        );
    }
}
