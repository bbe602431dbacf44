//! The UniFFI generator, pinned to the same uniffi version as the scaffolding:
//! `cargo run -p doorstep-bindings --bin uniffi-bindgen -- generate --library ...`
//! (bindings/generate.sh runs it).
fn main() {
    uniffi::uniffi_bindgen_main()
}
