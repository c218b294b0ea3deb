//! Model versions as contracts: what changed between two versions of a canonical model, whom the
//! change affects, and whether the declared version says so.
//!
//! A canonical model is a contract between the mappings that *write* its rows and the analysts
//! (and downstream jobs) that *read* what jobs load. [`diff`] compares two versions field by field
//! and classifies every change; [`ModelDiff::check_version`] checks the declared version against
//! [Semantic Versioning 2.0.0](https://semver.org): breaking → major, additive → minor,
//! neutral → patch. Version `0.y.z` is semver's initial development (item 4): anything may change,
//! but a changed model must still carry a greater version.
//!
//! The classification follows the "full" (backward + forward) compatibility thinking of Avro schema
//! resolution and the Confluent Schema Registry
//! (<https://avro.apache.org/docs/1.11.1/specification/#schema-resolution>,
//! <https://docs.confluent.io/platform/current/schema-registry/fundamentals/schema-evolution.html>):
//! - **Breaking**: a row valid under the old version may be invalid under the new one (rows already
//!   loaded, or produced by yesterday's mapping), or a reader of the old shape loses something: a
//!   removed field, a narrowed or changed type, a tightened constraint, a new required field (Avro:
//!   a field added without a default breaks backward compatibility; our models have no defaults).
//! - **Additive**: every old row stays valid and readers of the old shape keep working: an optional
//!   field added (Avro: a field with a null default is fully compatible), a loosened constraint, or
//!   an *exact* widening of a type (`int32 → int64`, `int32 → float64`, a decimal gaining integer
//!   digits and/or scale, an integer into a decimal with enough integer digits). Unlike Avro's
//!   promotions, `int64 → float64` is breaking (a double is exact only up to 2^53), and so is any
//!   change to `string` (analysts' comparisons, sorting and arithmetic change).
//! - **Neutral**: neither the shape nor the rules of canonical rows change: descriptions,
//!   `missing_values` (which raw inputs a mapping reads as null), field order.

use crate::invalid;
use crate::invalid::InvalidValue;
use std::cmp::Ordering;
use std::fmt;

use crate::model::{CanonicalModel, Field, FieldType, Literal, Version};

/// How a change affects readers and writers of the canonical data (see the module doc for the
/// rules and their source). Ordered from most to least severe: `Breaking < Additive < Neutral`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compatibility {
    /// Old rows or old readers may fail: requires a major version bump.
    Breaking,
    /// Old rows stay valid and old readers keep working: requires a minor version bump.
    Additive,
    /// Shape and rules unchanged (documentation, order, missing-value spellings): a patch bump.
    Neutral,
}

impl Compatibility {
    /// The semver bump a change of this kind requires.
    pub fn bump(self) -> Bump {
        match self {
            Compatibility::Breaking => Bump::Major,
            Compatibility::Additive => Bump::Minor,
            Compatibility::Neutral => Bump::Patch,
        }
    }
}

impl fmt::Display for Compatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Compatibility::Breaking => "breaking",
            Compatibility::Additive => "additive",
            Compatibility::Neutral => "neutral",
        })
    }
}

/// A semantic-version bump, ordered from smallest to largest (`None < Patch < Minor < Major`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Bump {
    /// Nothing changed; the version may stay.
    None,
    /// `x.y.z → x.y.(z+1)`.
    Patch,
    /// `x.y.z → x.(y+1).0`.
    Minor,
    /// `x.y.z → (x+1).0.0`.
    Major,
}

impl Bump {
    /// The smallest version after `v` that makes this bump (saturating at `u64::MAX`).
    pub fn apply(self, v: Version) -> Version {
        let Version {
            major,
            minor,
            patch,
        } = v;
        let (major, minor, patch) = match self {
            Bump::None => (major, minor, patch),
            Bump::Patch => (major, minor, patch.saturating_add(1)),
            Bump::Minor => (major, minor.saturating_add(1), 0),
            Bump::Major => (major.saturating_add(1), 0, 0),
        };
        Version {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Bump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Bump::None => "none",
            Bump::Patch => "patch",
            Bump::Minor => "minor",
            Bump::Major => "major",
        })
    }
}

/// One difference between two versions of a model.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    /// The field concerned (its new name, or the old name if removed); `None` for model-level
    /// changes (model name, description, field order).
    pub field: Option<String>,
    /// How the change affects readers and writers.
    pub compatibility: Compatibility,
    /// One line for humans, e.g. ``removed field `tailnum` ``.
    pub message: String,
}

/// Every change between two versions of a canonical model, with both declared versions.
///
/// Changes are ordered by the new model's field order, each removed field at its old position
/// (before the new field now at that index), model-level changes first (rename) or last
/// (description, order).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelDiff {
    /// Name of the new model.
    pub model: String,
    /// Version declared by the old model.
    #[serde(serialize_with = "version_string")]
    pub old_version: Version,
    /// Version declared by the new model.
    #[serde(serialize_with = "version_string")]
    pub new_version: Version,
    /// The changes, in the order described above; empty when the content is identical.
    pub changes: Vec<Change>,
}

fn version_string<S: serde::Serializer>(v: &Version, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

impl ModelDiff {
    /// True if any change is [`Compatibility::Breaking`].
    pub fn is_breaking(&self) -> bool {
        self.first(Compatibility::Breaking).is_some()
    }

    /// The smallest version bump the changes require: `Major` for breaking, `Minor` for additive,
    /// `Patch` for neutral-only, `None` when nothing changed.
    pub fn required_bump(&self) -> Bump {
        self.changes
            .iter()
            .map(|c| c.compatibility.bump())
            .max()
            .unwrap_or(Bump::None)
    }

    /// The smallest version the new model may declare: [`Self::required_bump`] applied to the old
    /// version, except that under `0.y.z` any change only needs the next patch version.
    pub fn required_version(&self) -> Version {
        let bump = self.required_bump();
        if self.old_version.major == 0 && bump > Bump::Patch {
            Bump::Patch.apply(self.old_version)
        } else {
            bump.apply(self.old_version)
        }
    }

    fn first(&self, kind: Compatibility) -> Option<&Change> {
        self.changes.iter().find(|c| c.compatibility == kind)
    }

    /// Checks `new_version` against the changes (semver, <https://semver.org>).
    ///
    /// # Errors
    /// One message, for the first problem found: the version went backwards; the content changed
    /// but the version is identical; a breaking change within the same major version (names the
    /// first breaking change and says "bump the major version to X.0.0"); an additive change within
    /// the same minor version. Under `0.y.z` only the first two apply.
    pub fn check_version(&self) -> std::result::Result<(), InvalidValue> {
        let (old, new) = (self.old_version, self.new_version);
        if new < old {
            return Err(invalid!(
                "version went backwards from {old} to {new}; declare {} or later",
                self.required_version()
            ));
        }
        let Some(first) = self.changes.first() else {
            return Ok(());
        };
        if new == old {
            return Err(invalid!(
                "the model changed ({}) but its version is still {old}; declare {} or later",
                first.message,
                self.required_version()
            ));
        }
        if old.major == 0 {
            return Ok(());
        }
        if let Some(b) = self.first(Compatibility::Breaking) {
            if new.major == old.major {
                return Err(invalid!(
                    "breaking change within major version {}: {}; bump the major version to {}.0.0 \
                     (declared {new})",
                    old.major,
                    b.message,
                    old.major.saturating_add(1)
                ));
            }
        }
        if let Some(a) = self.first(Compatibility::Additive) {
            if new.major == old.major && new.minor == old.minor {
                return Err(invalid!(
                    "additive change within version {}.{}: {}; bump the minor version to {} \
                     (declared {new})",
                    old.major,
                    old.minor,
                    a.message,
                    Bump::Minor.apply(old)
                ));
            }
        }
        Ok(())
    }
}

/// A report like
/// ```text
/// flight 1.0.0 → 1.1.0
///   breaking  removed field `tailnum`
///   additive  added optional field `aircraft`
/// verdict: breaking; requires version 2.0.0 (declared 1.1.0)
/// ```
/// The verdict line ends with `; ok` when [`ModelDiff::check_version`] passes. No trailing newline.
impl fmt::Display for ModelDiff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} {} → {}",
            self.model, self.old_version, self.new_version
        )?;
        for c in &self.changes {
            writeln!(f, "  {:<8}  {}", c.compatibility, c.message)?;
        }
        let verdict = match self.required_bump() {
            Bump::None => "no changes",
            Bump::Patch => "neutral",
            Bump::Minor => "additive",
            Bump::Major => "breaking",
        };
        write!(
            f,
            "verdict: {verdict}; requires version {} (declared {})",
            self.required_version(),
            self.new_version
        )?;
        if self.check_version().is_ok() {
            f.write_str("; ok")?;
        }
        Ok(())
    }
}

/// Compares two versions of a model (see the module doc for the classification rules).
///
/// Fields are matched by name, so a rename shows as a removal plus an addition; a removed field
/// whose type matches an added field's gets a "(renamed to `y`?)" hint.
pub fn diff(old: &CanonicalModel, new: &CanonicalModel) -> ModelDiff {
    use Compatibility::{Additive, Breaking, Neutral};
    let model_change = |compatibility, message: String| Change {
        field: None,
        compatibility,
        message,
    };
    let mut changes = Vec::new();
    if old.name != new.name {
        let message = format!("renamed model from `{}` to `{}`", old.name, new.name);
        changes.push(model_change(Breaking, message));
    }
    let added: Vec<&Field> = new
        .fields
        .iter()
        .filter(|f| old.field(&f.name).is_none())
        .collect();
    let mut hinted = vec![false; added.len()];
    // ((position, 0 = removed / 1 = in the new model), field, kind, message), sorted stably.
    let mut keyed: Vec<((usize, u8), &str, Item)> = Vec::new();
    for (i, f) in old.fields.iter().enumerate() {
        if new.field(&f.name).is_some() {
            continue;
        }
        let mut message = format!("removed field `{}`", f.name);
        let same_type = |k: &usize| !hinted[*k] && added[*k].data_type == f.data_type;
        if let Some(k) = (0..added.len()).find(same_type) {
            hinted[k] = true;
            message.push_str(&format!(" (renamed to `{}`?)", added[k].name));
        }
        keyed.push(((i, 0), f.name.as_str(), (Breaking, message)));
    }
    for (i, f) in new.fields.iter().enumerate() {
        let items = match old.field(&f.name) {
            Some(o) => field_changes(o, f),
            None if f.required || f.primary_key => {
                let pk = if f.primary_key {
                    " (part of the primary key)"
                } else {
                    ""
                };
                let msg = format!(
                    "new required field `{}` (data already loaded has no value for it){pk}",
                    f.name
                );
                vec![(Breaking, msg)]
            }
            None => vec![(Additive, format!("added optional field `{}`", f.name))],
        };
        keyed.extend(
            items
                .into_iter()
                .map(|item| ((i, 1), f.name.as_str(), item)),
        );
    }
    keyed.sort_by_key(|(key, _, _)| *key);
    changes.extend(
        keyed
            .into_iter()
            .map(|(_, field, (compatibility, message))| Change {
                field: Some(field.to_string()),
                compatibility,
                message,
            }),
    );
    if old.description != new.description {
        changes.push(model_change(
            Neutral,
            "changed the model description".into(),
        ));
    }
    let kept = |a: &CanonicalModel, b: &CanonicalModel| -> Vec<String> {
        a.fields
            .iter()
            .filter(|f| b.field(&f.name).is_some())
            .map(|f| f.name.clone())
            .collect()
    };
    if kept(old, new) != kept(new, old) {
        let message = "reordered fields (the column order of targets changes)".to_string();
        changes.push(model_change(Neutral, message));
    }
    ModelDiff {
        model: new.name.clone(),
        old_version: old.version,
        new_version: new.version,
        changes,
    }
}

/// A classified change of one field, before it is given the field's name.
type Item = (Compatibility, String);

/// True when every value of `from` converts to `to` exactly: the only additive type changes.
fn widens(from: FieldType, to: FieldType) -> bool {
    let digits = |p: u8, s: i8| i16::from(p) - i16::from(s);
    match (from, to) {
        (FieldType::Int32, FieldType::Int64 | FieldType::Float64) => true,
        (
            FieldType::Decimal {
                precision: p,
                scale: s,
            },
            FieldType::Decimal { precision, scale },
        ) => digits(precision, scale) >= digits(p, s) && scale >= s,
        (FieldType::Int32, FieldType::Decimal { precision, scale }) => {
            digits(precision, scale) >= 10
        }
        (FieldType::Int64, FieldType::Decimal { precision, scale }) => {
            digits(precision, scale) >= 19
        }
        _ => false,
    }
}

/// Changes of a field present in both versions (`o` old, `n` new).
fn field_changes(o: &Field, n: &Field) -> Vec<Item> {
    use Compatibility::{Additive, Breaking, Neutral};
    let name = n.name.as_str();
    let mut v: Vec<Item> = Vec::new();
    macro_rules! push {
        ($kind:expr, $($msg:tt)+) => { v.push(($kind, format!($($msg)+))) };
    }
    let (from, to) = (o.data_type, n.data_type);
    if from != to && widens(from, to) {
        push!(Additive, "widened type of `{name}` from {from} to {to}");
    } else if from != to && widens(to, from) {
        push!(Breaking, "narrowed type of `{name}` from {from} to {to}");
    } else if from != to {
        let why = match (from, to) {
            (FieldType::Int64, FieldType::Float64) => " (float64 is exact only up to 2^53)",
            (_, FieldType::String) => " (text compares, sorts and aggregates differently)",
            _ => "",
        };
        push!(
            Breaking,
            "changed type of `{name}` from {from} to {to}{why}"
        );
    }
    match (o.required, n.required) {
        (false, true) => push!(Breaking, "tightened `{name}` from optional to required"),
        (true, false) => push!(Additive, "loosened `{name}` from required to optional"),
        _ => {}
    }
    match (o.primary_key, n.primary_key) {
        (false, true) => push!(Breaking, "added `{name}` to the primary key"),
        (true, false) => push!(Breaking, "removed `{name}` from the primary key"),
        _ => {}
    }
    let numeric = from.is_numeric() && to.is_numeric();
    match (&o.allowed, &n.allowed) {
        (None, Some(b)) => push!(Breaking, "added enum to `{name}`: only {}", list(b)),
        (Some(_), None) => push!(Additive, "removed the enum of `{name}`"),
        (Some(a), Some(b)) => {
            let (gone, fresh) = (missing(a, b, numeric), missing(b, a, numeric));
            if !gone.is_empty() {
                push!(
                    Breaking,
                    "narrowed enum of `{name}`: no longer allows {}",
                    list(&gone)
                );
            }
            if !fresh.is_empty() {
                push!(
                    Additive,
                    "extended enum of `{name}`: now also allows {}",
                    list(&fresh)
                );
            }
        }
        (None, None) => {}
    }
    v.extend(bound(name, "min", true, &o.min, &n.min, numeric));
    v.extend(bound(name, "max", false, &o.max, &n.max, numeric));
    match (&o.pattern, &n.pattern) {
        (None, Some(p)) => push!(Breaking, "added pattern `{p}` to `{name}`"),
        (Some(p), None) => push!(Additive, "removed pattern `{p}` from `{name}`"),
        (Some(a), Some(b)) if a != b => {
            push!(Breaking, "changed pattern of `{name}` from `{a}` to `{b}`")
        }
        _ => {}
    }
    match (o.max_length, n.max_length) {
        (None, Some(b)) => push!(Breaking, "added max_length {b} to `{name}`"),
        (Some(a), None) => push!(Additive, "removed max_length {a} from `{name}`"),
        (Some(a), Some(b)) if b < a => {
            push!(Breaking, "lowered max_length of `{name}` from {a} to {b}")
        }
        (Some(a), Some(b)) if b > a => {
            push!(Additive, "raised max_length of `{name}` from {a} to {b}")
        }
        _ => {}
    }
    if o.missing_values != n.missing_values {
        let (a, b) = (&o.missing_values, &n.missing_values);
        push!(
            Neutral,
            "changed missing_values of `{name}` from {a:?} to {b:?}"
        );
    }
    if o.description != n.description {
        push!(Neutral, "changed the description of `{name}`");
    }
    v
}

fn list(values: &[Literal]) -> String {
    values
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The values of `a` that `b` does not contain.
fn missing(a: &[Literal], b: &[Literal], numeric: bool) -> Vec<Literal> {
    let found = |x: &Literal| {
        b.iter()
            .any(|y| x == y || compare(x, y, numeric) == Some(Ordering::Equal))
    };
    a.iter().filter(|&x| !found(x)).cloned().collect()
}

/// Numeric when both are numbers (or, for numeric fields, decimal strings), lexicographic for
/// strings (ISO dates and timestamps compare correctly), `None` when incomparable.
fn compare(a: &Literal, b: &Literal, numeric: bool) -> Option<Ordering> {
    let number = |l: &Literal| match l {
        Literal::Int(i) => Some(*i as f64),
        Literal::Float(x) => Some(*x),
        Literal::Str(s) if numeric => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match (a, b) {
        (Literal::Int(x), Literal::Int(y)) => Some(x.cmp(y)),
        (Literal::Bool(x), Literal::Bool(y)) => Some(x.cmp(y)),
        (Literal::Str(x), Literal::Str(y)) if !numeric => Some(x.cmp(y)),
        _ => number(a)?.partial_cmp(&number(b)?),
    }
}

/// The change of one bound `what` of field `name`; `lower` is true for `min` (raising tightens).
fn bound(
    name: &str,
    what: &str,
    lower: bool,
    old: &Option<Literal>,
    new: &Option<Literal>,
    numeric: bool,
) -> Option<Item> {
    use Compatibility::{Additive, Breaking};
    Some(match (old, new) {
        (None, None) => return None,
        (None, Some(b)) => (Breaking, format!("added {what} {b} to `{name}`")),
        (Some(a), None) => (Additive, format!("removed {what} {a} from `{name}`")),
        (Some(a), Some(b)) => {
            let (kind, verb) = match compare(a, b, numeric) {
                Some(Ordering::Equal) => return None,
                None if a == b => return None,
                None => (Breaking, "changed"),
                Some(Ordering::Less) => (if lower { Breaking } else { Additive }, "raised"),
                Some(Ordering::Greater) => (if lower { Additive } else { Breaking }, "lowered"),
            };
            (kind, format!("{verb} {what} of `{name}` from {a} to {b}"))
        }
    })
}

/// Checks a project's model against the newest version of it that a committed run loaded
/// (the state store's `models` table, see [`crate::state`]), the way a schema registry
/// checks a new schema against the latest registered one. `None` when there is no store, no
/// registered version, or the change is versioned correctly.
///
/// The diagnostic points at the model's `version` line and says which version is needed.
pub fn check_registered(
    project: &crate::config::Project,
    model: &CanonicalModel,
) -> Option<crate::diagnostic::Diagnostic> {
    let state_dir = project.path(&project.settings.state_dir);
    if project.settings.state_url.is_none() && !state_dir.join("state.db").is_file() {
        return None;
    }
    let store = crate::state::StateStore::of(project).ok()?;
    let registered = store.registered_models(&model.name).ok()?;
    let (text, old) = registered
        .into_iter()
        .filter_map(|(_, text)| {
            let src = crate::diagnostic::SourceText::new("(registered)", text.clone());
            crate::config::parse_model(&src).ok().map(|m| (text, m))
        })
        .max_by(|a, b| a.1.version.cmp(&b.1.version))?;
    let _ = text;
    let d = diff(&old, model);
    let problem = d.check_version().err()?;
    let path = project.path(&model.file);
    let file_text = std::fs::read_to_string(&path).unwrap_or_default();
    let src = crate::diagnostic::SourceText::new(model.file.clone(), file_text);
    let span = crate::config::key_path_span(&src, "version");
    let changes: Vec<String> = d
        .changes
        .iter()
        .filter(|c| c.compatibility != Compatibility::Neutral)
        .map(|c| format!("{}: {}", c.compatibility, c.message))
        .collect();
    let mut diag = src.diagnostic(
        span,
        "version",
        format!(
            "model `{}` {}: {problem} (compared with {}, the newest version a run has loaded)",
            model.name, model.version, old.version
        ),
    );
    diag.hint = Some(format!(
        "changes: {}; `sluice model diff` compares two model files",
        changes.join("; ")
    ));
    Some(diag)
}

#[cfg(test)]
mod tests {
    use super::Compatibility::{Additive, Breaking, Neutral};
    use super::*;

    fn field(name: &str, ty: &str) -> Field {
        Field {
            name: name.into(),
            data_type: FieldType::parse(ty).expect("type"),
            required: false,
            primary_key: false,
            allowed: None,
            min: None,
            max: None,
            pattern: None,
            max_length: None,
            missing_values: Vec::new(),
            description: None,
        }
    }

    fn with(name: &str, ty: &str, edit: impl FnOnce(&mut Field)) -> Field {
        let mut f = field(name, ty);
        edit(&mut f);
        f
    }

    fn model(version: &str, fields: Vec<Field>) -> CanonicalModel {
        CanonicalModel {
            name: "flight".into(),
            version: Version::parse(version).expect("version"),
            description: None,
            fields,
            file: "mappings/canonical/flight.toml".into(),
        }
    }

    /// Diff of `old` (1.0.0) and `new` (2.0.0).
    fn d(old: Vec<Field>, new: Vec<Field>) -> ModelDiff {
        diff(&model("1.0.0", old), &model("2.0.0", new))
    }

    fn kinds(d: &ModelDiff) -> Vec<Compatibility> {
        d.changes.iter().map(|c| c.compatibility).collect()
    }

    fn strs(values: &[&str]) -> Option<Vec<Literal>> {
        Some(values.iter().map(|s| Literal::Str(s.to_string())).collect())
    }

    #[test]
    fn removed_field_is_breaking_with_rename_hint() {
        let x = d(
            vec![field("id", "int64"), field("tailnum", "string")],
            vec![field("id", "int64"), field("tail_number", "string")],
        );
        assert_eq!(
            x.changes[0].message,
            "removed field `tailnum` (renamed to `tail_number`?)"
        );
        assert_eq!(x.changes[0].field.as_deref(), Some("tailnum"));
        assert_eq!(kinds(&x), [Breaking, Additive]);
        assert!(x.is_breaking());
        assert_eq!(x.required_bump(), Bump::Major);
    }

    #[test]
    fn added_optional_is_additive_required_is_breaking() {
        let optional = d(
            vec![field("id", "int64")],
            vec![field("id", "int64"), field("gate", "string")],
        );
        assert_eq!(kinds(&optional), [Additive]);
        assert_eq!(optional.required_bump(), Bump::Minor);
        let req = with("gate", "string", |f| f.required = true);
        let required = d(vec![field("id", "int64")], vec![field("id", "int64"), req]);
        assert_eq!(kinds(&required), [Breaking]);
        assert_eq!(
            required.changes[0].message,
            "new required field `gate` (data already loaded has no value for it)"
        );
    }

    #[test]
    fn widening_is_additive_anything_else_breaking() {
        let t = |a: &str, b: &str| kinds(&d(vec![field("x", a)], vec![field("x", b)]));
        for (a, b) in [
            ("int32", "int64"),
            ("int32", "float64"),
            ("decimal(10,2)", "decimal(12,3)"),
        ] {
            assert_eq!(t(a, b), [Additive], "{a} -> {b}");
        }
        assert_eq!(t("int32", "decimal(12,2)"), [Additive]);
        for (a, b) in [
            ("int64", "int32"),
            ("int64", "float64"),
            ("int32", "string"),
        ] {
            assert_eq!(t(a, b), [Breaking], "{a} -> {b}");
        }
        assert_eq!(t("date", "timestamp"), [Breaking]);
        assert_eq!(t("decimal(10,2)", "decimal(10,4)"), [Breaking]);
        let narrowed = d(vec![field("x", "int64")], vec![field("x", "int32")]);
        assert_eq!(
            narrowed.changes[0].message,
            "narrowed type of `x` from int64 to int32"
        );
    }

    #[test]
    fn enum_narrowed_is_breaking_extended_additive() {
        let a = with("status", "string", |f| {
            f.allowed = strs(&["on_time", "late"])
        });
        let b = with("status", "string", |f| {
            f.allowed = strs(&["on_time", "cancelled"])
        });
        let x = d(vec![a], vec![b]);
        assert_eq!(kinds(&x), [Breaking, Additive]);
        assert_eq!(
            x.changes[0].message,
            "narrowed enum of `status`: no longer allows 'late'"
        );
    }

    #[test]
    fn bounds_raised_min_or_lowered_max_is_breaking() {
        let lo = with("km", "float64", |f| f.min = Some(Literal::Int(0)));
        let hi = with("km", "float64", |f| f.min = Some(Literal::Float(1.5)));
        let raised = d(vec![lo.clone()], vec![hi.clone()]);
        assert_eq!(kinds(&raised), [Breaking]);
        assert_eq!(
            raised.changes[0].message,
            "raised min of `km` from 0 to 1.5"
        );
        assert_eq!(kinds(&d(vec![hi], vec![lo])), [Additive]);
        let max = |s: &str| with("day", "date", |f| f.max = Some(Literal::Str(s.into())));
        assert_eq!(
            kinds(&d(vec![max("2030-12-31")], vec![max("2029-01-01")])),
            [Breaking]
        );
        assert_eq!(
            kinds(&d(vec![max("2029-01-01")], vec![field("day", "date")])),
            [Additive]
        );
        let text = with("day", "date", |f| f.max = Some(Literal::Int(3)));
        assert_eq!(kinds(&d(vec![max("2029-01-01")], vec![text])), [Breaking]);
    }

    #[test]
    fn check_version_refuses_breaking_change_within_major() {
        let old = model(
            "1.0.0",
            vec![field("id", "int64"), field("tailnum", "string")],
        );
        let x = diff(&old, &model("1.1.0", vec![field("id", "int64")]));
        let err = x.check_version().expect_err("breaking within 1.x");
        assert!(err.0.contains("removed field `tailnum`"), "{err}");
        assert!(err.0.contains("bump the major version to 2.0.0"), "{err}");
        assert_eq!(x.required_version(), Version::parse("2.0.0").expect("v"));
        assert_eq!(
            diff(&old, &model("2.0.0", vec![field("id", "int64")])).check_version(),
            Ok(())
        );
    }

    #[test]
    fn version_must_move_forward_with_content() {
        let old = model("1.2.0", vec![field("id", "int64")]);
        let described = vec![with("id", "int64", |f| {
            f.description = Some("flight id".into())
        })];
        let same = diff(&old, &model("1.2.0", described.clone()));
        assert_eq!(
            (kinds(&same), same.required_bump()),
            (vec![Neutral], Bump::Patch)
        );
        assert!(same.check_version().is_err());
        assert_eq!(
            diff(&old, &model("1.2.1", described.clone())).check_version(),
            Ok(())
        );
        assert!(diff(&old, &model("1.1.9", described))
            .check_version()
            .is_err());
        let gate = vec![field("id", "int64"), field("gate", "string")];
        assert!(diff(&old, &model("1.2.1", gate)).check_version().is_err());
    }

    #[test]
    fn initial_development_allows_anything_but_same_version() {
        let old = model(
            "0.3.0",
            vec![field("id", "int64"), field("tailnum", "string")],
        );
        assert_eq!(
            diff(&old, &model("0.3.1", vec![field("id", "int64")])).check_version(),
            Ok(())
        );
        assert!(diff(&old, &model("0.3.0", vec![field("id", "int64")]))
            .check_version()
            .is_err());
    }

    #[test]
    fn no_change_needs_no_bump() {
        let m = model("1.0.0", vec![with("id", "int64", |f| f.required = true)]);
        let x = diff(&m, &m.clone());
        assert!(x.changes.is_empty());
        assert_eq!(x.required_bump(), Bump::None);
        assert_eq!(x.check_version(), Ok(()));
    }

    #[test]
    fn reorder_is_neutral_and_report_reads_well() {
        let old = model("1.0.0", vec![field("a", "int64"), field("b", "int64")]);
        let x = diff(
            &old,
            &model("1.0.1", vec![field("b", "int64"), field("a", "int64")]),
        );
        assert_eq!((kinds(&x), x.check_version()), (vec![Neutral], Ok(())));

        let old = model(
            "1.0.0",
            vec![field("id", "int64"), field("tailnum", "string")],
        );
        let x = diff(
            &old,
            &model(
                "1.1.0",
                vec![field("id", "int64"), field("aircraft", "int32")],
            ),
        );
        let expected = "flight 1.0.0 → 1.1.0\n  breaking  removed field `tailnum`\n  \
                        additive  added optional field `aircraft`\n\
                        verdict: breaking; requires version 2.0.0 (declared 1.1.0)";
        assert_eq!(x.to_string(), expected);
    }
}
