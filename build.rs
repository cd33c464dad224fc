// Tells the integration tests which target they were built for, so they can start the
// `tether` binary through the same runner cargo uses (qemu-user for foreign targets).
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let host = std::env::var("HOST").unwrap_or_default();
    println!("cargo:rustc-env=TETHER_BUILD_TARGET={target}");
    println!("cargo:rustc-env=TETHER_BUILD_HOST={host}");
    println!("cargo:rerun-if-changed=build.rs");
}
