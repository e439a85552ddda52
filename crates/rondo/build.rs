//! Release builds of the `rondo` binary link its code in the order of `symbol-order.txt`: the
//! functions `rondo serve` runs first, everything else (the load generator, the demo, the chart
//! writer, help text) after, so a running balancer maps under 2 MB of the binary's 8 MB of
//! code instead of almost 5 MB (`bench/order-code.sh` writes the file; docs/performance.md,
//! "Memory"). Only when the linker takes the option (lld, Rust's default on x86_64 Linux; a
//! probe links an empty program with it first): with another linker, and in debug builds, the
//! binary links as before.

use std::path::Path;
use std::process::{Command, Stdio};

/// The ordering file, next to this script.
const ORDER_FILE: &str = "symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed={ORDER_FILE}");
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let file = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    // `-Wl,` splits its argument at commas.
    let path = file.to_string_lossy();
    if var("PROFILE") != "release" || !file.is_file() || path.contains(',') {
        return;
    }
    // Names the file lists that the binary no longer has are skipped without a warning.
    let arg = format!("-Wl,--symbol-ordering-file={path},--no-warn-symbol-ordering");
    if links_with(&arg) {
        println!("cargo::rustc-link-arg-bin=rondo={arg}");
    }
}

/// Whether rustc, with this build's target, flags and linker, links an empty program with the
/// linker argument `arg`.
fn links_with(arg: &str) -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let out = Path::new(&var("OUT_DIR")).join("link-probe");
    if std::fs::create_dir_all(&out).is_err()
        || std::fs::write(out.join("probe.rs"), "fn main() {}\n").is_err()
    {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let (target, rustflags) = (var("TARGET"), var("CARGO_ENCODED_RUSTFLAGS"));
    let mut probe = Command::new(rustc);
    probe
        .current_dir(&out)
        .args(["--target", &target, "-o", "probe", "probe.rs"])
        .arg(format!("-Clink-arg={arg}"))
        .args(rustflags.split('\x1f').filter(|flag| !flag.is_empty()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(linker) = std::env::var_os("RUSTC_LINKER") {
        probe.arg("-C").arg({
            let mut flag = std::ffi::OsString::from("linker=");
            flag.push(linker);
            flag
        });
    }
    probe.status().is_ok_and(|status| status.success())
}
