//! A mapping file (`mappings/<name>.toml`): the model it maps to, its sources and joins,
//! `[let]` helpers, one expression per field, rules, actions and tests.

use super::*;

pub(super) const MAPPING_KEYS: &[&str] = &[
    "model",
    "description",
    "from",
    "join",
    "let",
    "fields",
    "rule",
    "actions",
    "test",
];

pub(super) fn load_mapping(src: &SourceText, diags: &mut Diagnostics) -> Option<Mapping> {
    let before = diags.len();
    let mut r = Reader::new(src, diags);
    let table = r.parse()?;
    let mut model = None;
    let mut from = None;
    let mut joins = Vec::new();
    let mut lets = Vec::new();
    let mut fields = Vec::new();
    let mut rules = Vec::new();
    let mut actions = Vec::new();
    let mut tests = Vec::new();
    for (key, item) in table.iter() {
        match key {
            "test" => tests = array_entries::<TestSpec>(&mut r, &table, key),
            "actions" => {
                if let Some(a) = r.entry::<IndexMap<String, Spanned<RuleAction>>>(key, item) {
                    for (rule, action) in a {
                        let span = Some(action.span());
                        actions.push((rule, action.into_inner(), span));
                    }
                }
            }
            "model" => {
                if let Some(m) = r.entry::<Spanned<String>>(key, item) {
                    model = Some(model_ref(&mut r, m));
                }
            }
            "description" => {
                r.entry::<String>(key, item);
            }
            "from" => {
                if let Some(s) = r.entry::<Spanned<String>>(key, item) {
                    from = Some(SourceUse {
                        source: s.get_ref().clone(),
                        alias: s.get_ref().clone(),
                        span: Some(s.span()),
                    });
                }
            }
            "join" => {
                let specs = array_entries::<JoinSpec>(&mut r, &table, key);
                joins.extend(specs.into_iter().map(Join::from));
            }
            "let" => lets = expressions(&mut r, &table, key),
            "fields" => fields = expressions(&mut r, &table, key),
            "rule" => rules = array_entries::<RuleSpec>(&mut r, &table, key),
            other => r.unknown_key(&table, other, "", MAPPING_KEYS),
        }
    }
    if model.is_none() && !table.contains_key("model") {
        r.missing_key(
            None,
            "",
            "model",
            "add `model = \"<entity>@<major>\"`, e.g. `model = \"flight@1\"`",
        );
    }
    if from.is_none() && !table.contains_key("from") {
        r.missing_key(
            None,
            "",
            "from",
            "add `from = \"<source>\"`: the source with one row per canonical row",
        );
    }
    check_names(&mut r, from.as_ref(), &joins, &lets);
    let mut rule_names = BTreeSet::new();
    let business: Vec<BusinessRule> = rules
        .into_iter()
        .filter_map(|rule| business_rule(&mut r, rule, &mut rule_names))
        .collect();
    if r.diags.len() > before {
        return None;
    }
    Some(Mapping {
        name: stem(src),
        src: src.clone(),
        model: model?,
        from: from?,
        joins,
        lets,
        fields,
        rules: business,
        actions,
        tests,
    })
}

/// `model = "flight@1"`: the model's name and the pinned major version, if any.
pub(super) fn model_ref(r: &mut Reader<'_>, m: Spanned<String>) -> ModelRef {
    let span = Some(m.span());
    let text = m.into_inner();
    let (name, major) = match text.split_once('@') {
        Some((n, v)) => match v.parse::<u64>() {
            Ok(v) => (n.to_string(), Some(v)),
            Err(_) => {
                r.error(
                    span.clone(),
                    "model",
                    format!("`{text}`: the part after `@` must be a major version"),
                    Some("write `flight@1` to pin major version 1".into()),
                );
                (n.to_string(), None)
            }
        },
        None => (text.clone(), None),
    };
    ModelRef { name, major, span }
}

impl From<JoinSpec> for Join {
    fn from(j: JoinSpec) -> Join {
        let alias = j.alias.as_ref().unwrap_or(&j.source);
        Join {
            source: SourceUse {
                source: j.source.get_ref().clone(),
                alias: alias.get_ref().clone(),
                span: Some(alias.span()),
            },
            kind: j.kind,
            on: j.on,
        }
    }
}

/// Source aliases and let names are identifiers, each used once (a let cannot take an
/// alias's name).
pub(super) fn check_names(
    r: &mut Reader<'_>,
    from: Option<&SourceUse>,
    joins: &[Join],
    lets: &[NamedExpr],
) {
    let mut aliases: Vec<(String, Option<Range<usize>>)> = Vec::new();
    if let Some(f) = from {
        aliases.push((f.alias.clone(), f.span.clone()));
    }
    aliases.extend(
        joins
            .iter()
            .map(|j| (j.source.alias.clone(), j.source.span.clone())),
    );
    let mut seen = BTreeSet::new();
    for (alias, span) in &aliases {
        if !is_identifier(alias) {
            r.error(
                span.clone(),
                "join",
                format!("`{alias}` is not a valid source alias"),
                Some("use lowercase letters, digits and `_`".into()),
            );
        } else if !seen.insert(alias.clone()) {
            r.error(
                span.clone(),
                "join",
                format!("alias `{alias}` is used twice"),
                Some("give the second use its own name with `as = \"...\"`".into()),
            );
        }
    }
    let mut let_names = BTreeSet::new();
    for l in lets {
        if !is_identifier(&l.name) {
            r.error(
                l.span.clone(),
                &format!("let.{}", l.name),
                format!("`{}` is not snake_case", l.name),
                None,
            );
        }
        if seen.contains(&l.name) || !let_names.insert(l.name.clone()) {
            r.error(
                l.span.clone(),
                &format!("let.{}", l.name),
                format!("`{}` is already a source alias or let name", l.name),
                Some("give it another name".into()),
            );
        }
    }
}

/// One `[[rule]]` as written, checked: a snake_case name used once, a reason template that
/// parses, exactly one test. `None` (with the mistakes reported) when it cannot be used.
pub(super) fn business_rule(
    r: &mut Reader<'_>,
    rule: RuleSpec,
    rule_names: &mut BTreeSet<String>,
) -> Option<BusinessRule> {
    let name = rule.name.get_ref().clone();
    if !is_identifier(&name) {
        r.error(
            Some(rule.name.span()),
            "rule.name",
            format!("rule name `{name}` is not snake_case"),
            None,
        );
    } else if !rule_names.insert(name.clone()) {
        r.error(
            Some(rule.name.span()),
            "rule.name",
            format!("rule `{name}` is defined twice"),
            None,
        );
    }
    if let Some(reason) = &rule.reason {
        if let Err(e) = crate::reason::ReasonTemplate::parse(reason.get_ref()) {
            r.error(
                Some(reason.span()),
                &format!("rule.{name}.reason"),
                e,
                Some("quote a value as `{field}`; write `{{` for a literal brace".into()),
            );
        }
    }
    let span = Some(rule.name.span());
    let reason = rule.reason.clone().map(Spanned::into_inner);
    let (nulls, action) = (rule.nulls, rule.action);
    let test = rule_test(r, rule, &name)?;
    Some(BusinessRule {
        span,
        test,
        name,
        reason,
        nulls,
        action,
    })
}

/// What a `[[rule]]` tests: exactly one of `check`, `unique` (with its `order_by`) or `field`
/// with `references`.
pub(super) fn rule_test(r: &mut Reader<'_>, rule: RuleSpec, name: &str) -> Option<RuleTest> {
    let key = format!("rule.{name}");
    let given: Vec<&str> = [
        rule.check.as_ref().map(|_| "check"),
        rule.unique.as_ref().map(|_| "unique"),
        rule.references.as_ref().map(|_| "references"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if given.len() != 1 {
        r.error(
            Some(rule.name.span()),
            &key,
            if given.is_empty() {
                format!("rule `{name}` does not say what it tests")
            } else {
                format!("rule `{name}` has {}; a rule tests one thing", given.join(" and "))
            },
            Some("give exactly one of `check = \"<sql>\"`, `unique = [\"field\", ...]` or `field = \"...\"` with `references = { source = \"...\", column = \"...\" }`".into()),
        );
        return None;
    }
    if !rule.order_by.is_empty() && rule.unique.is_none() {
        r.error(
            rule.order_by.first().map(Spanned::span),
            &format!("{key}.order_by"),
            "`order_by` only applies to `unique` rules",
            None,
        );
    }
    if rule.field.is_some() != rule.references.is_some() {
        r.error(
            rule.field.as_ref().map(Spanned::span).or(Some(rule.name.span())),
            &key,
            "`field` and `references` go together",
            Some("write `field = \"destination\"` and `references = { source = \"airports\", column = \"faa\" }`".into()),
        );
        return None;
    }
    let named = |o: Spanned<String>| NamedExpr {
        name: name.to_string(),
        span: Some(o.span()),
        sql: o.into_inner(),
    };
    if let Some(check) = rule.check {
        return Some(RuleTest::Check(named(check)));
    }
    if let Some(unique) = rule.unique {
        if unique.get_ref().is_empty() {
            r.error(
                Some(unique.span()),
                &format!("{key}.unique"),
                "`unique` needs at least one field",
                None,
            );
        }
        return Some(RuleTest::Unique {
            fields: unique.into_inner(),
            order_by: rule.order_by.into_iter().map(named).collect(),
        });
    }
    let (Some(field), Some(refs)) = (rule.field, rule.references) else {
        return None;
    };
    let span = refs.span();
    let refs = refs.into_inner();
    let target = match (refs.source, refs.table) {
        (Some(s), None) => ReferenceTarget::Source(s.into_inner()),
        (None, Some(t)) => ReferenceTarget::Table(t.into_inner()),
        _ => {
            r.error(
                Some(span),
                &format!("{key}.references"),
                "`references` needs exactly one of `source` or `table`",
                Some("`source` names a source the job binds; `table` a table loaded in the warehouse".into()),
            );
            return None;
        }
    };
    Some(RuleTest::References {
        field: field.into_inner(),
        target,
        column: refs.column.into_inner(),
    })
}
