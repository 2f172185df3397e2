//! The TOML file (`--config`): the same options, keys named as the flags, unknown keys refused.

use std::path::Path;

use super::{Options, Problem};

/// The options in `path`, each problem reported against `--config`.
pub(super) fn read(path: &Path) -> Result<Options, Vec<Problem>> {
    let problem = |message: String| {
        vec![Problem {
            option: "config",
            message: format!("{}: {message}", path.display()),
        }]
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
    toml::from_str::<Options>(&text).map_err(|e| problem(e.message().to_owned()))
}
