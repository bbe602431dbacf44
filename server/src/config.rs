//! Server configuration: command line, environment, and an optional TOML file for limits
//! (`[limits]`) and the backups the server takes on its own (`[backups]`).

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

/// Backups the server takes on a schedule while it runs (`crate::backups`), set in the
/// TOML file's `[backups]` table; none without it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Backups {
    /// Where they go: a directory for this server's backups alone (the oldest beyond
    /// `keep` are deleted from it). Created if missing.
    pub dir: PathBuf,
    /// Seconds from one backup to the next (default a day). The first comes that long
    /// after the newest backup already in `dir`, or at once if there is none.
    #[serde(default = "Backups::a_day")]
    pub every_seconds: u64,
    /// How many to keep (default 14); older ones are deleted after each new one.
    #[serde(default = "Backups::two_weeks")]
    pub keep: usize,
}

impl Backups {
    /// The longest interval: a year.
    pub const A_YEAR: u64 = 365 * 86_400;

    fn a_day() -> u64 {
        86_400
    }

    fn two_weeks() -> usize {
        14
    }
}

/// What the TOML file given with `--config` sets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub limits: Limits,
    pub backups: Option<Backups>,
}

/// Everything `serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    pub limits: Limits,
    pub backups: Option<Backups>,
    pub demo: bool,
    /// The bearer token `/metrics` asks for; `None`: open (the default listen address is
    /// loopback, and the metrics hold only counts and timings, no personal data).
    pub metrics_token: Option<String>,
}

impl ConfigFile {
    pub fn read(path: &std::path::Path) -> Result<ConfigFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(backups) = &file.backups {
            if !(1..=Backups::A_YEAR).contains(&backups.every_seconds) || backups.keep == 0 {
                return Err(format!(
                    "{}: [backups] every_seconds 须在 1 到 {year}（一年）之间，keep 须至少为 1 / every_seconds must be \
                     between 1 and {year} (a year), and keep at least 1",
                    path.display(),
                    year = Backups::A_YEAR
                ));
            }
        }
        Ok(file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(toml: &str) -> Result<ConfigFile, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("doorstep.toml");
        std::fs::write(&path, toml).unwrap();
        ConfigFile::read(&path)
    }

    fn limits(toml: &str) -> Result<Limits, String> {
        file(toml).map(|f| f.limits)
    }

    #[test]
    fn the_file_may_ask_for_backups_and_refuses_a_zero_interval_or_count() {
        assert_eq!(file("").unwrap().backups, None);
        let daily = file("[backups]\ndir = \"/var/backups/doorstep\"\n").unwrap().backups.unwrap();
        assert_eq!(daily, Backups { dir: "/var/backups/doorstep".into(), every_seconds: 86_400, keep: 14 });
        let hourly = file("[backups]\ndir = \"b\"\nevery_seconds = 3600\nkeep = 48\n").unwrap().backups.unwrap();
        assert_eq!((hourly.every_seconds, hourly.keep), (3600, 48));
        for wrong in ["every_seconds = 0", "every_seconds = 31536001", "keep = 0"] {
            let refused = file(&format!("[backups]\ndir = \"b\"\n{wrong}\n")).unwrap_err();
            assert!(refused.contains("between 1 and 31536000 (a year), and keep at least 1"), "{refused}");
        }
        assert!(file("[backups]\nkeep = 3\n").unwrap_err().contains("missing field `dir`"));
        assert!(file("[backups]\ndir = \"b\"\nevery = 3\n").unwrap_err().contains("unknown field"));
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
