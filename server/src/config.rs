//! Server configuration: command line, environment, and an optional TOML file for limits.

use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::Deserialize;

/// Limits on what clients may send and on what the server keeps in memory; set in the
/// TOML file given with `--config`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest request body accepted (compressed), in bytes; larger gets 413.
    pub max_request_bytes: usize,
    /// Largest request once decompressed, in bytes; larger gets 400.
    pub max_decoded_bytes: usize,
    /// How many household documents stay in memory, the least recently used dropped
    /// first: about 26 KB each for a household with a school year's visits. The default
    /// holds a district of 11,180 households (about 300 MB); one not in memory is loaded
    /// when a phone pushes to it.
    pub cached_households: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 16 * 1024 * 1024,
            max_decoded_bytes: 64 * 1024 * 1024,
            cached_households: NonZeroUsize::new(16_384).expect("not zero"),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(toml: &str) -> Result<Limits, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doorstep.toml");
        std::fs::write(&path, toml).unwrap();
        Limits::from_file(&path)
    }

    #[test]
    fn the_file_sets_how_many_households_stay_in_memory_and_refuses_none() {
        let set = limits("[limits]\ncached_households = 2000\n").unwrap();
        assert_eq!(set.cached_households.get(), 2000);
        assert_eq!(set.max_request_bytes, Limits::default().max_request_bytes, "the others keep their defaults");
        assert_eq!(limits("").unwrap().cached_households.get(), 16_384);
        let refused = limits("[limits]\ncached_households = 0\n").unwrap_err();
        assert!(refused.contains("nonzero"), "{refused}");
        let unknown = limits("[limits]\ncache = 10\n").unwrap_err();
        assert!(unknown.contains("unknown field"), "{unknown}");
    }
}
