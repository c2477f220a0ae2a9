//! The daemon's TOML config from a string, then `STINT_*` environment overrides over it,
//! then validation and the redacted dump. Input: `toml \0 VAR=value lines`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use stint::config::Config;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (toml, env) = text.split_once('\0').unwrap_or((&text, ""));
    let env: Vec<(String, String)> = env
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();

    let mut defaults = Config::default();
    let _ = defaults.apply_env(&env);
    let _ = defaults.validate();

    let Ok(mut config) = Config::from_toml_str(toml, Path::new("fuzz.toml")) else {
        return;
    };
    let _ = config.validate();
    let _ = config.issuer();
    let _ = config.to_redacted_toml();
    if config.apply_env(&env).is_ok() && config.validate().is_ok() {
        // A valid config's redacted dump is itself a config file that loads.
        let dumped = config.to_redacted_toml();
        let _ = Config::from_toml_str(&dumped, Path::new("dumped.toml"));
    }
});
