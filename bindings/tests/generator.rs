//! The pinned generator reads the built library and honours uniffi.toml, and the sync API
//! has the shape the Kotlin and Python layers rely on.
//!
//! Being an integration test, this also makes `cargo test` build the `uniffi-bindgen`
//! binary (target/<profile>/) and the cdylib (target/<profile>/deps/) with the workspace's
//! test features, so bindings/ci.sh generates from exactly the build `cargo test
//! --workspace` made.

use std::path::PathBuf;
use std::process::Command;

/// The cdylib of this build: `cargo test` leaves it in target/<profile>/deps/, next to
/// this test's own executable.
fn library() -> PathBuf {
    let name = if cfg!(target_os = "macos") {
        "libdoorstep_bindings.dylib"
    } else {
        "libdoorstep_bindings.so"
    };
    std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .join(name)
}

#[test]
fn generates_kotlin_and_python_with_flat_readable_errors() {
    let lib = library();
    assert!(lib.exists(), "{} was not built", lib.display());
    let out = tempfile::tempdir().unwrap();
    for language in ["kotlin", "python"] {
        let status = Command::new(env!("CARGO_BIN_EXE_uniffi-bindgen"))
            .args([
                "generate",
                "--no-format",
                "--language",
                language,
                "--library",
            ])
            .arg(&lib)
            .arg("--out-dir")
            .arg(out.path().join(language))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "uniffi-bindgen generate --language {language} failed"
        );
    }
    let kotlin =
        std::fs::read_to_string(out.path().join("kotlin/app/doorstep/ffi/doorstep.kt")).unwrap();
    assert!(
        kotlin.contains("package app.doorstep.ffi"),
        "uniffi.toml's package name is used"
    );
    // Flat error: `message` is the Rust Display text, not a list of fields.
    assert!(kotlin.contains("class NotFound(message: String) : DoorstepException(message)"));
    assert!(kotlin.contains("interface ChangeListener"));
    // `sync` is async and posts through the app's transport (a foreign trait whose one
    // method is async too): suspend functions, with default options.
    assert!(kotlin.contains(
        "suspend fun `sync`(`serverUrl`: kotlin.String, `deviceToken`: kotlin.String, `transport`: HttpTransport, `options`: SyncOptions = SyncOptions())"
    ));
    assert!(kotlin.contains("public interface HttpTransport {"));
    assert!(kotlin.contains("suspend fun `post`(`request`: HttpRequest): HttpResponse"));
    assert!(kotlin.contains("sealed class TransportException: kotlin.Exception()"));
    let python = std::fs::read_to_string(out.path().join("python/doorstep.py")).unwrap();
    assert!(python.contains("class DoorstepError(Exception)"));
    assert!(python.contains(
        "async def sync(self, server_url: str,device_token: str,transport: HttpTransport,"
    ));
    assert!(python.contains("async def post(self, request: HttpRequest) -> HttpResponse:"));
}
