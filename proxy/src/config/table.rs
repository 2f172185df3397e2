//! The macro that turns the option table (in `options.rs`) into [`Options`](super::Options)
//! (every option optional: clap flags and env, TOML keys), [`Config`](super::Config) (defaults
//! applied), the merge of two `Options` layers, and the default shown in `--help`, so that each
//! option's name, environment variable, help, type and default are written once.

use std::net::SocketAddr;

use super::{Dur, ListenAddr, LogFormat, Mode, UpstreamMode};

/// Defines the options. Each entry:
///
/// ```text
/// /// Help text (the `--help` line and the rustdoc of both fields).
/// #[arg(env = "SIGSCI_PROXY_NAME", value_name = "...")]   // clap attributes (`long` is implied)
/// name: OptionType => ConfigType = default,               // `= default` may be left out
/// ```
///
/// `OptionType` is what the flag, the variable and the TOML key parse into; `ConfigType` is what
/// the proxy uses, reached through `From`. An entry without a default resolves to `None`
/// unless given (`ConfigType` is then an `Option`).
macro_rules! options {
    (
        $(
            $(#[doc = $doc:literal])+
            #[arg($($arg:tt)*)]
            $name:ident: $opt:ty => $cfg:ty $(= $default:expr)?
        ),+ $(,)?
    ) => {
        /// Every proxy option, as given on the command line, in the environment or in the TOML
        /// file.
        ///
        /// Each field is optional so that the three layers can be merged; [`Config`] holds the
        /// result with defaults applied. Keys in the TOML file are the flag names
        /// (`rpc-timeout = "80ms"`).
        #[derive(Debug, Default, Clone, clap::Args, serde::Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "kebab-case")]
        pub struct Options {
            /// TOML file with any of these options (keys are the flag names); flags and
            /// environment win over it.
            #[arg(long, env = "SIGSCI_PROXY_CONFIG", value_name = "FILE")]
            #[serde(skip)]
            pub config: Option<std::path::PathBuf>,
            $(
                $(#[doc = $doc])+
                #[arg(long, $($arg)*)]
                pub $name: Option<$opt>,
            )+
        }

        /// The resolved configuration of one proxy: [`Options`] merged, defaults applied.
        #[derive(Debug, Clone)]
        pub struct Config {
            $(
                $(#[doc = $doc])+
                $(
                    #[doc = ""]
                    #[doc = concat!("Default: `", stringify!($default), "`.")]
                )?
                pub $name: $cfg,
            )+
        }

        impl Config {
            /// Applies the defaults to merged options.
            pub fn from_options(o: Options) -> Self {
                Self {
                    $( $name: options!(@resolve o.$name $(, $default)?), )+
                }
            }
        }

        /// Field by field: the first layer that sets an option wins.
        pub(super) fn merge(high: Options, low: Options) -> Options {
            Options {
                config: high.config.or(low.config),
                $( $name: high.$name.or(low.$name), )+
            }
        }

        /// Each option's default as `--help` shows it, by clap argument id (the field name).
        pub(super) fn default_texts() -> Vec<(&'static str, String)> {
            #[allow(unused_mut)]
            let mut texts = Vec::new();
            $($(
                if let Some(text) = <$opt as $crate::config::table::DefaultText>::default_text(&$default) {
                    texts.push((stringify!($name), text));
                }
            )?)+
            texts
        }
    };
    (@resolve $value:expr, $default:expr) => {
        $value.unwrap_or_else(|| $default).into()
    };
    (@resolve $value:expr) => {
        $value.map(Into::into)
    };
}

pub(super) use options;

/// How a default reads in `--help`: the text its option would be given as; `None` shows none.
pub(crate) trait DefaultText {
    fn default_text(&self) -> Option<String>;
}

macro_rules! displayed {
    ($($t:ty),*) => {$(
        impl DefaultText for $t {
            fn default_text(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}

displayed!(
    u32,
    usize,
    f64,
    bool,
    String,
    SocketAddr,
    ListenAddr,
    Dur,
    Mode,
    UpstreamMode,
    LogFormat
);

/// A list reads comma-separated, as `value_delimiter = ','` takes it; an empty one shows none.
impl<T: DefaultText> DefaultText for Vec<T> {
    fn default_text(&self) -> Option<String> {
        let texts: Option<Vec<String>> = self.iter().map(T::default_text).collect();
        texts.filter(|t| !t.is_empty()).map(|t| t.join(","))
    }
}
