//! A canonical model file (`mappings/canonical/<entity>.toml`): name, version and typed
//! fields with their constraints, read with every mistake reported.

use super::*;

pub(super) const MODEL_KEYS: &[&str] = &["name", "version", "description", "fields"];

/// Loads one canonical model from its text (any file, or a version kept in the state store;
/// unlike in a project, the file need not be named after the model).
///
/// # Errors
/// Every problem of the file, as diagnostics.
pub fn parse_model(src: &SourceText) -> Result<CanonicalModel, Diagnostics> {
    let mut diags = Diagnostics::default();
    match load_model(src, &mut diags, false) {
        Some(m) if diags.is_empty() => Ok(m),
        _ => Err(diags),
    }
}

/// Loads a model file; `in_project` also requires the file to be named after the model.
pub(super) fn load_model(
    src: &SourceText,
    diags: &mut Diagnostics,
    in_project: bool,
) -> Option<CanonicalModel> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut name = None;
    let mut version = None;
    let mut description = None;
    let mut fields = Vec::new();
    for (key, item) in table.iter() {
        match key {
            "name" => name = r.entry::<Spanned<String>>(key, item),
            "version" => {
                if let Some(v) = r.entry::<Spanned<String>>(key, item) {
                    match Version::parse(v.get_ref()) {
                        Some(parsed) => version = Some(parsed),
                        None => r.error(
                            Some(v.span()),
                            "version",
                            format!("`{}` is not a semantic version", v.get_ref()),
                            Some(
                                "write MAJOR.MINOR.PATCH, e.g. \"1.0.0\" (https://semver.org)"
                                    .into(),
                            ),
                        ),
                    }
                }
            }
            "description" => description = r.entry::<String>(key, item),
            "fields" => {
                for (fname, spec, span) in entries::<FieldSpec>(&mut r, &table, key) {
                    if let Some(f) = validate_field(&mut r, &fname, spec, span) {
                        fields.push(f);
                    }
                }
            }
            other => r.unknown_key(&table, other, "", MODEL_KEYS),
        }
    }
    let expected = stem(src);
    match &name {
        None => r.missing_key(None, "", "name", &format!("add `name = \"{expected}\"`")),
        Some(n) if in_project && n.get_ref() != &expected => r.error(
            Some(n.span()),
            "name",
            format!(
                "model name `{}` differs from its file name `{expected}.toml`",
                n.get_ref()
            ),
            Some("name the file after the model, so it can be found".into()),
        ),
        Some(_) => {}
    }
    if version.is_none() && !table.contains_key("version") {
        r.missing_key(None, "", "version", "add `version = \"1.0.0\"`");
    }
    if fields.is_empty() && !table.contains_key("fields") {
        r.missing_key(
            None,
            "",
            "fields",
            "add at least one `[fields.<name>]` section with a `type`",
        );
    }
    if r.diags.len() > before {
        return None;
    }
    Some(CanonicalModel {
        name: name?.into_inner(),
        version: version?,
        description,
        fields,
        file: src.path.clone(),
    })
}

pub(super) fn validate_field(
    r: &mut Reader<'_>,
    name: &str,
    spec: FieldSpec,
    key_span: Option<Range<usize>>,
) -> Option<Field> {
    let path = format!("fields.{name}");
    let mut ok = true;
    if !is_identifier(name) {
        r.error(
            key_span.clone(),
            &path,
            format!("field name `{name}` is not snake_case"),
            Some("use lowercase letters, digits and `_`, starting with a letter".into()),
        );
        ok = false;
    }
    let data_type = match FieldType::parse(spec.data_type.get_ref()) {
        Ok(t) => Some(t),
        Err(e) => {
            let hint = type_hint(spec.data_type.get_ref());
            r.error(
                Some(spec.data_type.span()),
                &format!("{path}.type"),
                e,
                Some(hint),
            );
            None
        }
    };
    let data_type = data_type?;
    let mut check_bound = |r: &mut Reader<'_>, which: &str, b: &Option<Spanned<Literal>>| {
        if let Some(b) = b {
            if !data_type.is_ordered() {
                r.error(
                    Some(b.span()),
                    &format!("{path}.{which}"),
                    format!("`{which}` does not apply to {data_type} fields"),
                    None,
                );
                ok = false;
            } else if let Err(e) = crate::model::literal_for(b.get_ref(), data_type) {
                r.error(Some(b.span()), &format!("{path}.{which}"), e, None);
                ok = false;
            }
        }
    };
    check_bound(r, "min", &spec.min);
    check_bound(r, "max", &spec.max);
    if let Some(values) = &spec.allowed {
        if values.get_ref().is_empty() {
            r.error(
                Some(values.span()),
                &format!("{path}.enum"),
                "`enum = []` allows no value, so every row would fail",
                Some("list the allowed values, or remove `enum`".into()),
            );
            ok = false;
        }
        for v in values.get_ref() {
            if let Err(e) = crate::model::literal_for(v, data_type) {
                r.error(Some(values.span()), &format!("{path}.enum"), e, None);
                ok = false;
            }
        }
    }
    if let Some(p) = &spec.pattern {
        if data_type != FieldType::String {
            r.error(
                Some(p.span()),
                &format!("{path}.pattern"),
                "`pattern` applies only to string fields",
                None,
            );
            ok = false;
        } else if let Err(e) = regex::Regex::new(p.get_ref()) {
            r.error(
                Some(p.span()),
                &format!("{path}.pattern"),
                format!(
                    "invalid regular expression: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
                Some("the syntax is Rust `regex` (https://docs.rs/regex/#syntax)".into()),
            );
            ok = false;
        }
    }
    if spec.max_length.is_some() && data_type != FieldType::String {
        r.error(
            key_span,
            &format!("{path}.max_length"),
            "`max_length` applies only to string fields",
            None,
        );
        ok = false;
    }
    ok.then(|| Field {
        name: name.to_string(),
        data_type,
        required: spec.required || spec.primary_key,
        primary_key: spec.primary_key,
        allowed: spec.allowed.map(Spanned::into_inner),
        min: spec.min.map(Spanned::into_inner),
        max: spec.max.map(Spanned::into_inner),
        pattern: spec.pattern.map(Spanned::into_inner),
        max_length: spec.max_length,
        missing_values: spec.missing_values,
        description: spec.description,
    })
}

/// Hint for an unknown type name: a synonym or a close spelling, and the list of types.
pub(super) fn type_hint(written: &str) -> String {
    let written = written.trim().to_ascii_lowercase();
    match type_synonym(&written).or_else(|| did_you_mean(&written, TYPE_NAMES.iter().copied())) {
        Some(s) => format!("did you mean `{s}`? (types: {})", TYPE_NAMES.join(", ")),
        None => format!("types: {}", TYPE_NAMES.join(", ")),
    }
}

/// Sluice's name for a type name from SQL or other tools, for hints.
pub(super) fn type_synonym(name: &str) -> Option<&'static str> {
    Some(match name {
        "int" | "integer" | "int4" => "int32",
        "bigint" | "long" | "int8" => "int64",
        "text" | "varchar" | "str" | "utf8" | "char" => "string",
        "bool" => "boolean",
        "double" | "float" | "float8" | "real" | "number" => "float64",
        "numeric" | "decimal" => "decimal(p,s)",
        "datetime" | "instant" => "timestamp",
        _ => return None,
    })
}
