//! Server configuration: command line, environment, and an optional TOML file for limits.

use std::path::PathBuf;

use serde::Deserialize;

/// Limits on what clients may send; set in the TOML file given with `--config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (compressed), in bytes; larger gets 413.
    pub max_request_bytes: usize,
    /// Largest request once decompressed, in bytes; larger gets 400.
    pub max_decoded_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_request_bytes: 16 * 1024 * 1024, max_decoded_bytes: 64 * 1024 * 1024 }
    }
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub demo: bool,
    /// The bearer token `/metrics` asks for; `None`: open (the default listen address is
    /// loopback, and the metrics hold only counts and timings, no personal data).
    pub metrics_token: Option<String>,
}

impl Limits {
    pub fn from_file(path: &std::path::Path) -> Result<Limits, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            limits: Limits,
        }
        let file: File = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(file.limits)
    }
}
