//! Config errors: each problem with its YAML path and line, and the collector every section
//! pushes to, so one run reports all of them.

use std::fmt;
use std::path::Path;

use serde_saphyr::Spanned;

/// One problem in a config, located by YAML path (`upstream.timeout`) and line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub line: Option<u64>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub file: Option<String>,
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub(crate) fn single(e: ConfigError) -> Self {
        ConfigErrors {
            file: None,
            errors: vec![e],
        }
    }

    pub(super) fn in_file(mut self, path: &Path) -> Self {
        self.file = Some(path.display().to_string());
        self
    }
}

impl fmt::Display for ConfigErrors {
    /// One problem per line, compiler style: `FILE:LINE: path: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            match (&self.file, e.line) {
                (Some(file), Some(l)) => write!(f, "{file}:{l}: ")?,
                (Some(file), None) => write!(f, "{file}: ")?,
                (None, Some(l)) => write!(f, "line {l}: ")?,
                (None, None) => {}
            }
            if !e.path.is_empty() {
                write!(f, "{}: ", e.path)?;
            }
            f.write_str(&e.message)?;
        }
        Ok(())
    }
}

/// Collects errors while validating.
#[derive(Default)]
pub(super) struct Errors(Vec<ConfigError>);

impl Errors {
    pub(super) fn push<T>(&mut self, path: &str, at: &Spanned<T>, message: impl Into<String>) {
        let line = at.referenced.line();
        self.0.push(ConfigError {
            path: path.to_string(),
            line: (line > 0).then_some(line),
            message: message.into(),
        });
    }

    /// A problem located by line alone (a file named by a key that could not be read).
    pub(super) fn push_line(&mut self, path: &str, line: u64, message: impl Into<String>) {
        self.0.push(ConfigError {
            path: path.to_string(),
            line: (line > 0).then_some(line),
            message: message.into(),
        });
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// `Ok` when nothing was pushed; else every problem, in document order.
    pub(super) fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.0.is_empty() {
            return Ok(());
        }
        self.0.sort_by_key(|e| e.line.unwrap_or(0));
        Err(ConfigErrors {
            file: None,
            errors: self.0,
        })
    }
}
