//! `serve --config FILE`: a TOML file with `serve`'s flags as keys (`retention-seconds = 60`),
//! below flags and the environment, above the defaults.
//!
//! clap already settles flag > environment > default. The file fits between the last two: a
//! key of the file is applied only to a flag whose value came from its default (or that has
//! none), by parsing the command line again with `--key value` added for it. Every key is
//! first checked on its own against the flag's parser, so that a bad value names the file and
//! the key, and an unknown key is refused.

use std::{
    ffi::OsString,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use clap::{ArgAction, ArgMatches, CommandFactory, FromArgMatches, parser::ValueSource};

use crate::{Cli, Command, serve::ServeArgs};

/// Flags of `serve` that are no configuration: they choose the file or what to do with it.
const NOT_KEYS: [&str; 2] = ["config", "print-config"];

/// Keys whose values are never printed.
const SECRET_KEYS: [&str; 2] = ["signing-key", "api-key"];

/// `serve`'s arguments as the command line, the environment, the file and the defaults make
/// them, with where each value came from.
pub(crate) struct Resolved {
    pub(crate) args: ServeArgs,
    matches: ArgMatches,
    /// Keys the file set.
    from_file: Vec<String>,
}

/// Where a value came from, as `--print-config` says.
fn source_name(resolved: &Resolved, id: &str, key: &str) -> &'static str {
    if resolved.from_file.iter().any(|k| k == key) {
        return "file";
    }
    match resolved.matches.value_source(id) {
        Some(ValueSource::CommandLine) => "flag",
        Some(ValueSource::EnvVariable) => "environment",
        Some(ValueSource::DefaultValue) => "default",
        _ => "not set",
    }
}

/// The `serve` command as clap knows it.
fn serve_command() -> clap::Command {
    Cli::command()
        .find_subcommand("serve")
        .cloned()
        .expect("serve is a subcommand")
}

/// Parses `argv` (the whole command line, program name first) as `serve` with the file that
/// `--config` names, if any.
pub(crate) fn resolve(argv: Vec<OsString>) -> Result<Resolved, String> {
    let (args, matches) = parse(argv.clone())?;
    let Some(file) = args.config.clone() else {
        return Ok(Resolved {
            args,
            matches,
            from_file: Vec::new(),
        });
    };
    let extra = file_args(&file, &matches)?;
    let from_file = extra.iter().map(|(key, _)| key.clone()).collect();
    let mut argv = argv;
    argv.extend(extra.into_iter().flat_map(|(_, args)| args));
    let (args, matches) = parse(argv).map_err(|e| format!("{}: {e}", file.display()))?;
    Ok(Resolved {
        args,
        matches,
        from_file,
    })
}

fn parse(argv: Vec<OsString>) -> Result<(ServeArgs, ArgMatches), String> {
    let matches = Cli::command()
        .try_get_matches_from(argv)
        .map_err(|e| first_line(&e.to_string()))?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| first_line(&e.to_string()))?;
    let Command::Serve(args) = cli.command else {
        return Err("not the serve command".into());
    };
    let args = *args;
    let serve = matches
        .subcommand_matches("serve")
        .cloned()
        .ok_or("not the serve command")?;
    Ok((args, serve))
}

fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The `--key value` arguments the file adds: one entry per key it sets whose flag still has
/// its default.
fn file_args(file: &Path, matches: &ArgMatches) -> Result<Vec<(String, Vec<OsString>)>, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("config file {}: {e}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| format!("config file {}: {}", file.display(), e.message()))?;
    let command = serve_command();
    let mut extra = Vec::new();
    for (key, value) in table {
        let refuse = |why: String| format!("config file {}: key `{key}`: {why}", file.display());
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(key.as_str()) && !NOT_KEYS.contains(&key.as_str()))
            .ok_or_else(|| {
                refuse("unknown key (the keys are serve's flags, as in --help)".into())
            })?;
        let args = key_args(arg, &key, &value).map_err(refuse)?;
        let from_default = matches!(
            matches.value_source(arg.get_id().as_str()),
            None | Some(ValueSource::DefaultValue)
        );
        if from_default {
            extra.push((key, args));
        }
    }
    Ok(extra)
}

/// `--key value` for `value`, checked with the flag's own parser.
fn key_args(arg: &clap::Arg, key: &str, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let flag = format!("--{key}");
    if matches!(arg.get_action(), ArgAction::SetTrue) {
        return match value {
            toml::Value::Boolean(true) => Ok(vec![flag.into()]),
            toml::Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".into()),
        };
    }
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err("expected a string, a number or a boolean".to_owned()),
    };
    let values = match value {
        toml::Value::Array(items) if arg.get_value_delimiter().is_some() => {
            items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
        }
        toml::Value::Array(_) => return Err("takes one value, not a list".into()),
        value => vec![scalar(value)?],
    };
    // The flag alone, without the relations (`requires`, ...) that name other flags.
    let mut alone = clap::Arg::new("value")
        .long(key.to_owned())
        .value_parser(arg.get_value_parser().clone())
        .action(ArgAction::Append);
    if let Some(delimiter) = arg.get_value_delimiter() {
        alone = alone.value_delimiter(delimiter);
    }
    let mut args = Vec::new();
    for value in values {
        clap::Command::new("check")
            .no_binary_name(true)
            .arg(alone.clone())
            .try_get_matches_from([flag.as_str(), value.as_str()])
            .map_err(|e| first_line(&e.to_string()))?;
        args.push(flag.clone().into());
        args.push(value.into());
    }
    Ok(args)
}

/// The effective configuration as TOML, secrets redacted, each line with its source.
pub(crate) fn print(resolved: &Resolved) -> String {
    let mut out =
        String::from("# serve's effective configuration (flag > environment > file > default)\n");
    for arg in serve_command().get_arguments() {
        let (Some(key), id) = (arg.get_long(), arg.get_id().as_str()) else {
            continue;
        };
        if NOT_KEYS.contains(&key) || key == "help" {
            continue;
        }
        let source = source_name(resolved, id, key);
        let raw: Vec<String> = match resolved.matches.get_raw(id) {
            Some(values) => values.map(|v| v.to_string_lossy().into_owned()).collect(),
            None => Vec::new(),
        };
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        let values: Vec<String> = raw.into_iter().map(|value| redact(key, &value)).collect();
        let line = match (flag, values.as_slice()) {
            (true, _) => {
                let on = resolved.matches.get_flag(id);
                format!("{key} = {on}")
            }
            (false, []) => format!("# {key} ="),
            (false, [one]) if arg.get_value_delimiter().is_none() => {
                format!("{key} = {}", toml_value(one))
            }
            (false, many) => {
                let items: Vec<String> = many.iter().map(|v| toml_value(v)).collect();
                format!("{key} = [{}]", items.join(", "))
            }
        };
        let _ = writeln!(out, "{line:<60} # {source}");
    }
    out
}

fn toml_value(value: &str) -> String {
    match value.parse::<i64>() {
        Ok(n) => n.to_string(),
        Err(_) => toml::Value::String(value.to_owned()).to_string(),
    }
}

/// `value` of `key` fit to print: secrets replaced, a URL's password replaced.
fn redact(key: &str, value: &str) -> String {
    if SECRET_KEYS.contains(&key) {
        return "<redacted>".into();
    }
    redact_url_password(value)
}

/// `scheme://user:PASSWORD@host...` with the password replaced; anything else as it is.
fn redact_url_password(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return value.to_owned();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:<redacted>"),
        None => "<redacted>".to_owned(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// The signing keys and API keys as a reload finds them now: the files named by
/// `--signing-key-file`/`--api-key-file`, else the configuration file's keys, else what the
/// command line and the environment gave at start.
pub(crate) fn reload_keys(argv: Vec<OsString>) -> Result<(Vec<String>, Vec<String>), String> {
    let resolved = resolve(argv)?;
    let args = &resolved.args;
    let signing = crate::serve::signing_keys(args)?;
    let api = crate::serve::api_keys(args)?;
    Ok((signing, api))
}

/// One key per line of `path`; blank lines and lines starting with `#` are skipped.
pub(crate) fn read_key_file(path: &PathBuf) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let keys: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if keys.is_empty() {
        return Err(format!("{}: no key in the file", path.display()));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_in_urls_are_redacted() {
        let cases = [
            ("redis://:pw@host:6379/0", "redis://:<redacted>@host:6379/0"),
            ("redis://user:pw@host", "redis://user:<redacted>@host"),
            ("redis://token@host", "redis://<redacted>@host"),
            ("redis://host:6379", "redis://host:6379"),
            ("http://host/a@b", "http://host/a@b"),
            ("plain", "plain"),
        ];
        for (url, expected) in cases {
            assert_eq!(redact_url_password(url), expected, "{url}");
        }
        assert_eq!(redact("signing-key", "s3cret"), "<redacted>");
        assert_eq!(redact("api-key", "s3cret"), "<redacted>");
    }

    fn arg(key: &str) -> clap::Arg {
        serve_command()
            .get_arguments()
            .find(|a| a.get_long() == Some(key))
            .cloned()
            .unwrap()
    }

    #[test]
    fn a_value_is_checked_by_its_flags_parser() {
        let retention = arg("retention-seconds");
        let ok = key_args(&retention, "retention-seconds", &toml::Value::Integer(60)).unwrap();
        assert_eq!(ok, ["--retention-seconds", "60"]);
        let bad = key_args(&retention, "retention-seconds", &"soon".into()).unwrap_err();
        assert!(bad.contains("invalid"), "{bad}");
        let negative = key_args(&retention, "retention-seconds", &toml::Value::Integer(-1));
        assert!(negative.is_err());
        let list = toml::Value::Array(vec![1.into(), 2.into()]);
        assert!(key_args(&retention, "retention-seconds", &list).is_err());

        let store = arg("store");
        assert!(key_args(&store, "store", &"memory".into()).is_ok());
        assert!(key_args(&store, "store", &"floppy".into()).is_err());

        let dev_tls = arg("dev-tls");
        assert_eq!(
            key_args(&dev_tls, "dev-tls", &true.into()).unwrap(),
            ["--dev-tls"]
        );
        assert!(
            key_args(&dev_tls, "dev-tls", &false.into())
                .unwrap()
                .is_empty()
        );
        assert!(key_args(&dev_tls, "dev-tls", &"yes".into()).is_err());

        let keys = arg("signing-key");
        let two = toml::Value::Array(vec!["new".into(), "old".into()]);
        assert_eq!(
            key_args(&keys, "signing-key", &two).unwrap(),
            ["--signing-key", "new", "--signing-key", "old"]
        );
    }
}
