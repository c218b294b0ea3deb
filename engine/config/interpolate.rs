//! `${env:NAME}` and `${file:PATH}` interpolation, with redaction.
//!
//! What is secret: the pieces resolved into connection settings (credentials). Paths (sources,
//! targets, quarantine, `warehouse`, `state_dir`) may use `${env:...}` too, but a path is not a
//! secret: it resolves with [`Redactor::resolve_path`] and is shown as it resolves.
//!
//! Secrets never live in TOML: a value such as
//! `url = "postgres://loader:${env:PGPASSWORD}@db/warehouse"` is kept as written (the
//! *template*) everywhere Sluice prints it — `plan`, errors, reports — and is resolved only when a
//! connection or file is opened. Every resolved piece is registered with a [`Redactor`], which
//! replaces it by `***` in any message that might quote it (a driver error echoing a URL, say).
//!
//! `$$` writes a literal `$`.

use crate::invalid;
use crate::invalid::InvalidValue;
use std::sync::{Arc, Mutex};

/// A resolved template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The value with every `${...}` replaced.
    pub value: String,
    /// The pieces that came from the environment or a file, to redact from messages.
    pub secrets: Vec<String>,
}

/// Resolves `template`, reading variables with `env` (normally `std::env::var`) and files with
/// `read_file` (normally `std::fs::read_to_string`, trailing newline trimmed).
///
/// # Errors
/// A message naming the first unresolved reference (`environment variable PGPASSWORD is not
/// set`), or a malformed `${...}`. The message never contains a resolved value.
pub fn resolve_with(
    template: &str,
    env: &dyn Fn(&str) -> Option<String>,
    read_file: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Resolved, InvalidValue> {
    let mut value = String::with_capacity(template.len());
    let mut secrets = Vec::new();
    let mut rest = template;
    while let Some(pos) = rest.find('$') {
        value.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(r) = after.strip_prefix('$') {
            value.push('$');
            rest = r;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            value.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(
                "unclosed `${`: write `${env:NAME}`, `${file:PATH}` or `$$` for a literal `$`"
                    .into(),
            );
        };
        let reference = &body[..end];
        let piece = match reference.split_once(':') {
            Some(("env", name)) if is_env_name(name) => {
                env(name).ok_or_else(|| invalid!("environment variable `{name}` is not set"))?
            }
            Some(("env", name)) => {
                return Err(invalid!("`{name}` is not an environment variable name"))
            }
            Some(("file", path)) if !path.is_empty() => read_file(path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .map_err(|e| invalid!("cannot read secret file `{path}`: {e}"))?,
            _ => {
                return Err(invalid!(
                    "unknown reference `${{{reference}}}`: use `${{env:NAME}}` or `${{file:PATH}}`"
                ))
            }
        };
        if !piece.is_empty() {
            secrets.push(piece.clone());
        }
        value.push_str(&piece);
        rest = &body[end + 1..];
    }
    value.push_str(rest);
    Ok(Resolved { value, secrets })
}

/// [`resolve_with`] on the process environment and file system; `${file:PATH}` is relative to
/// `root` (the project root) unless absolute.
///
/// # Errors
/// As [`resolve_with`].
pub fn resolve(
    template: &str,
    root: &std::path::Path,
) -> std::result::Result<Resolved, InvalidValue> {
    resolve_with(template, &|name| std::env::var(name).ok(), &|path| {
        std::fs::read_to_string(root.join(path)).map_err(|e| e.to_string())
    })
}

fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// True when `template` is exactly one reference, `${env:NAME}` or `${file:PATH}` (how
/// credentials must be written).
pub fn is_reference(template: &str) -> bool {
    let t = template.trim();
    (t.starts_with("${env:") || t.starts_with("${file:"))
        && t.ends_with('}')
        && t[2..t.len() - 1].find(['{', '}']).is_none()
}

/// The password `url_template` holds written in plain text (not as `${env:…}` or
/// `${file:…}`), if any: the userinfo's password (`postgres://u:PASSWORD@h/db`), or a
/// `password=` parameter of a URL or a `key=value` connection string.
pub fn plaintext_password(url_template: &str) -> Option<&str> {
    let lower = url_template.to_ascii_lowercase();
    for (i, _) in lower.match_indices("password=") {
        let boundary = i == 0 || matches!(lower.as_bytes()[i - 1], b'?' | b'&' | b' ' | b';');
        let value = &url_template[i + "password=".len()..];
        let value = value.split(['&', ' ', ';']).next().unwrap_or("");
        if boundary && !value.is_empty() && !value.starts_with("${") {
            return Some(value);
        }
    }
    let (_, rest) = url_template.split_once("://")?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty() && !password.starts_with("${")).then_some(password)
}

/// Replaces every registered secret by `***` in messages. Cheap to clone; shared by a run.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Arc<Mutex<Vec<String>>>,
}

impl Redactor {
    /// Resolves `template` (see [`resolve`]) and registers its secrets.
    ///
    /// # Errors
    /// As [`resolve_with`].
    pub fn resolve(
        &self,
        template: &str,
        root: &std::path::Path,
    ) -> std::result::Result<String, InvalidValue> {
        let r = resolve(template, root)?;
        self.add(&r.secrets);
        Ok(r.value)
    }

    /// Resolves a path template (see [`resolve`]) without registering anything: a path is
    /// where data lives, not a credential, and is shown as it resolves (a credential that also
    /// appears in a path is still hidden, since [`redact`](Self::redact) hides every credential
    /// registered in the process).
    ///
    /// # Errors
    /// As [`resolve_with`].
    pub fn resolve_path(
        &self,
        template: &str,
        root: &std::path::Path,
    ) -> std::result::Result<String, InvalidValue> {
        resolve(template, root).map(|r| r.value)
    }

    /// The process-wide redactor: every secret any redactor registers is also registered
    /// here, so that log lines (at any `SLUICE_LOG` level, from Sluice or a library) can be
    /// redacted as they are written (see [`crate::logging`]).
    pub fn process() -> &'static Redactor {
        static PROCESS: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
        PROCESS.get_or_init(Redactor::default)
    }

    /// Registers secrets to hide. A secret that is an absolute path is also hidden without its
    /// leading `/`, the form DataFusion prints file locations in.
    pub fn add(&self, secrets: &[String]) {
        let process = Redactor::process();
        if !Arc::ptr_eq(&self.secrets, &process.secrets) {
            process.add(secrets);
        }
        if let Ok(mut s) = self.secrets.lock() {
            for secret in secrets {
                let trimmed = secret.trim_start_matches('/').to_string();
                for v in [secret.clone(), trimmed] {
                    if !v.is_empty() && !s.contains(&v) {
                        s.push(v);
                    }
                }
            }
            // Longest first, so a secret containing another is hidden whole.
            s.sort_by_key(|x| std::cmp::Reverse(x.len()));
        }
    }

    /// `message` with every secret registered here or in the process replaced by `***`.
    pub fn redact(&self, message: &str) -> String {
        let mut out = message.to_string();
        let process = Redactor::process();
        let mut lists = vec![&self.secrets];
        if !Arc::ptr_eq(&self.secrets, &process.secrets) {
            lists.push(&process.secrets);
        }
        for list in lists {
            if let Ok(s) = list.lock() {
                for secret in s.iter() {
                    out = out.replace(secret.as_str(), "***");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "PGPASSWORD").then(|| "s3cr3t".to_string())
    }
    fn no_files(_: &str) -> Result<String, String> {
        Err("no such file".into())
    }

    #[test]
    fn resolves_env_and_records_secret() {
        let r = resolve_with("postgres://u:${env:PGPASSWORD}@h/db", &env, &no_files).unwrap();
        assert_eq!(r.value, "postgres://u:s3cr3t@h/db");
        assert_eq!(r.secrets, vec!["s3cr3t".to_string()]);
    }

    #[test]
    fn missing_variable_is_named_without_values() {
        let e = resolve_with("${env:NOPE}", &env, &no_files).unwrap_err();
        assert!(e.0.contains("`NOPE` is not set"), "{e}");
    }

    #[test]
    fn dollar_escapes_and_bad_references() {
        assert_eq!(resolve_with("a$$b", &env, &no_files).unwrap().value, "a$b");
        assert_eq!(
            resolve_with("cost $5", &env, &no_files).unwrap().value,
            "cost $5"
        );
        assert!(resolve_with("${env:PGPASSWORD", &env, &no_files).is_err());
        assert!(resolve_with("${vault:x}", &env, &no_files).is_err());
        assert!(resolve_with("${file:/x}", &env, &no_files)
            .unwrap_err()
            .0
            .contains("/x"));
    }

    #[test]
    fn detects_plaintext_passwords() {
        assert_eq!(
            plaintext_password("postgres://u:hunter2@h/db"),
            Some("hunter2")
        );
        assert_eq!(
            plaintext_password("host=h password=hunter2 user=u"),
            Some("hunter2")
        );
        assert_eq!(
            plaintext_password("mysql://h/db?user=u&password=hunter2&ssl=1"),
            Some("hunter2")
        );
        assert_eq!(plaintext_password("postgres://u:${env:P}@h/db"), None);
        assert_eq!(plaintext_password("postgres://u@h/db"), None);
        assert_eq!(plaintext_password("sqlite://data/x.db"), None);
    }

    #[test]
    fn redactor_hides_every_occurrence() {
        let r = Redactor::default();
        r.add(&["s3cr3t".to_string()]);
        assert_eq!(
            r.redact("auth failed for u:s3cr3t (s3cr3t)"),
            "auth failed for u:*** (***)"
        );
    }
}
