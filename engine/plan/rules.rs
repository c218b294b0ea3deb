//! The mapping's own rules, compiled over canonical fields after the model's constraints:
//! `check` (a boolean SQL condition), `references` (the value exists in a source or a loaded
//! table: a join to the distinct valid values) and `unique` (a window ranking the rows of each
//! key; the first by `order_by` is kept). Then `[actions]` and the values reasons quote.

use super::compile::Compiler;
use super::*;

/// A compiled mapping rule before it joins the rule list: its kind, failure condition,
/// default reason and description.
type RuleParts = (RuleKind, Expr, ReasonTemplate, String);

impl Compiler<'_> {
    /// Adds the mapping's rules: checks and references first, then duplicate keys (which
    /// prefer to keep a row that passes every other rule).
    pub(super) async fn mapping_rules(&mut self, mut frame: DataFrame) -> Result<DataFrame> {
        let (others, uniques): (Vec<_>, Vec<_>) = self
            .mapping
            .rules
            .iter()
            .cloned()
            .partition(|b| !matches!(b.test, RuleTest::Unique { .. }));
        for b in others.into_iter().chain(uniques) {
            let parts = match &b.test {
                RuleTest::Check(c) => self.check_rule(&b, c, &frame),
                RuleTest::References {
                    field,
                    target,
                    column,
                } => {
                    self.reference_rule(&b, field, target, column, &mut frame)
                        .await?
                }
                RuleTest::Unique {
                    fields: keys,
                    order_by,
                } => self.unique_rule(&b, keys, order_by, &mut frame).await?,
            };
            let Some((kind, failed, default_reason, description)) = parts else {
                continue;
            };
            let reason = match &b.reason {
                Some(t) => {
                    ReasonTemplate::parse(t).unwrap_or_else(|_| ReasonTemplate::literal(t.clone()))
                }
                None => default_reason,
            };
            self.flag_exprs.push(failed.clone());
            self.rules.push(RowRule {
                name: b.name.clone(),
                kind,
                field: None,
                failed,
                reason,
                description,
                action: b.action,
            });
        }
        Ok(frame)
    }

    /// Resolves bare names in rules: canonical fields first, then lets.
    fn rule_resolver(&self) -> impl Fn(&str) -> Option<&'static str> {
        let fields: Vec<String> = self.model.fields.iter().map(|f| f.name.clone()).collect();
        let lets = self.let_names.clone();
        move |n: &str| {
            if fields.iter().any(|x| x == n) {
                Some(CANONICAL)
            } else if lets.iter().any(|x| x == n) {
                Some(LET)
            } else {
                None
            }
        }
    }

    /// Canonical fields and every column a rule could name, for hints.
    fn rule_visible(&self, frame: &DataFrame) -> Vec<String> {
        let mut v = self.canonical_names();
        v.extend(self.visible(frame.schema()));
        v
    }

    fn canonical_names(&self) -> Vec<String> {
        self.model.fields.iter().map(|f| f.name.clone()).collect()
    }

    /// Reports that rule `b` names `f`, which is not a field of the model.
    fn unknown_field(&mut self, b: &BusinessRule, f: &str, what: &str) {
        let names = self.canonical_names();
        let hint = match did_you_mean(f, names.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("fields: {}", names.join(", ")),
        };
        let message = format!(
            "{what} of rule `{}` names `{f}`, which is not a field of model `{}`",
            b.name, self.model.name
        );
        self.err_at(
            b.span.clone(),
            format!("rule.{}", b.name),
            message,
            Some(hint),
        );
    }

    /// A `check` rule: the row fails when the condition is not true (nulls as `nulls` says).
    fn check_rule(
        &mut self,
        b: &BusinessRule,
        c: &NamedExpr,
        frame: &DataFrame,
    ) -> Option<RuleParts> {
        let key = format!("rule.{}", b.name);
        let typed = parse_expr(&self.ctx, &c.sql, frame.schema(), &self.rule_resolver())
            .and_then(|e| e.get_type(frame.schema()).map(|t| (e, t)));
        let check = match typed {
            Ok((e, DataType::Boolean | DataType::Null)) => e,
            Ok((_, t)) => {
                self.err_at(
                    c.span.clone(),
                    format!("{key}.check"),
                    format!("rule `{}` check is {t}, not a boolean", b.name),
                    Some(
                        "write a condition that is true for good rows, e.g. `distance_km > 0`"
                            .into(),
                    ),
                );
                return None;
            }
            Err(e) => {
                let visible = self.rule_visible(frame);
                self.expr_err(
                    c.span.clone(),
                    key,
                    format!("in rule `{}`", b.name),
                    &e,
                    &visible,
                );
                return None;
            }
        };
        Some((
            RuleKind::Business,
            failed_when_not(check, b.nulls),
            ReasonTemplate::literal(format!("failed: {}", c.sql)),
            c.sql.clone(),
        ))
    }

    /// A `references` rule: a join to the distinct valid values; the row fails when its value
    /// has no match.
    ///
    /// # Errors
    /// The valid values cannot be read (a run error; a missing table or column is a mistake
    /// reported in the diagnostics).
    async fn reference_rule(
        &mut self,
        b: &BusinessRule,
        field: &str,
        target: &ReferenceTarget,
        column: &str,
        frame: &mut DataFrame,
    ) -> Result<Option<RuleParts>> {
        let Some(f) = self.model.field(field).cloned() else {
            self.unknown_field(b, field, "`field`");
            return Ok(None);
        };
        let q = format!("__ref_{}", b.name);
        let looked_up = reference_frame(
            self.project,
            self.job,
            &self.ctx,
            target,
            column,
            &q,
            &self.redactor,
            self.inputs,
            &f.data_type.to_arrow(),
        )
        .await;
        let (lookup, shown) = match looked_up {
            Ok(x) => x,
            Err(RefError::Config(msg, hint)) => {
                let key = format!("rule.{}.references", b.name);
                self.err_at(b.span.clone(), key, msg, hint);
                return Ok(None);
            }
            Err(RefError::Run(e)) => return Err(e),
        };
        let value = qualified_col(CANONICAL, &f.name);
        let on = qualified_col(&q, "key").eq(value.clone());
        *frame = lookup
            .join_on(frame.clone(), JoinType::Right, vec![on])
            .map_err(self.to_err())?;
        let missing = qualified_col(&q, "hit").is_null();
        let failed = match b.nulls {
            NullPolicy::Pass => value.is_not_null().and(missing),
            NullPolicy::Fail => missing,
        };
        Ok(Some((
            RuleKind::References,
            failed,
            ReasonTemplate::with_value(
                &format!("{field} '"),
                field,
                format!("' is not in {shown}"),
            ),
            format!("{field} exists in {shown}"),
        )))
    }

    /// The sort of a `unique` rule's rows within a key: rows failing another rule last (so
    /// the kept row is a loadable one), then `order_by`, then source file and line. `None`
    /// when an `order_by` expression does not compile (reported).
    fn unique_sort(
        &mut self,
        b: &BusinessRule,
        order_by: &[NamedExpr],
        frame: &DataFrame,
    ) -> Option<Vec<datafusion::logical_expr::SortExpr>> {
        let other_failed = self
            .flag_exprs
            .iter()
            .map(|e| datafusion::functions::expr_fn::coalesce(vec![e.clone(), lit(false)]))
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        let mut sorts = vec![other_failed.sort(true, false)];
        let mut ok = true;
        let resolver = self.rule_resolver();
        for o in order_by {
            let (sql, asc, nulls_first) = split_sort(&o.sql);
            match parse_expr(&self.ctx, sql, frame.schema(), &resolver) {
                Ok(e) => sorts.push(e.sort(asc, nulls_first)),
                Err(e) => {
                    let visible = self.rule_visible(frame);
                    self.expr_err(
                        o.span.clone(),
                        format!("rule.{}.order_by", b.name),
                        format!("in `order_by` of rule `{}`", b.name),
                        &e,
                        &visible,
                    );
                    ok = false;
                }
            }
        }
        let driving = &self.sources[0].alias;
        sorts.push(qualified_col(driving, FILE_COLUMN).sort(true, true));
        sorts.push(qualified_col(driving, LINE_COLUMN).sort(true, true));
        ok.then_some(sorts)
    }

    /// A `unique` rule: a window numbers the rows of each key in `unique_sort` order and
    /// keeps the first; in a replay, a key the target already holds is a duplicate too.
    ///
    /// # Errors
    /// The target's keys cannot be read for a replay.
    async fn unique_rule(
        &mut self,
        b: &BusinessRule,
        keys: &[String],
        order_by: &[NamedExpr],
        frame: &mut DataFrame,
    ) -> Result<Option<RuleParts>> {
        let to_err = self.to_err();
        let mut ok = true;
        for k in keys {
            if self.model.field(k).is_none() {
                self.unknown_field(b, k, "`unique`");
                ok = false;
            }
        }
        let sorts = self.unique_sort(b, order_by, frame);
        let (Some(sorts), true) = (sorts, ok) else {
            return Ok(None);
        };
        let driving = self.sources[0].alias.clone();
        let partition: Vec<Expr> = keys.iter().map(|k| qualified_col(CANONICAL, k)).collect();
        let q = TableReference::bare(DUPLICATE);
        let rn = row_number()
            .partition_by(partition.clone())
            .order_by(sorts.clone())
            .build()
            .map_err(&to_err)?
            .alias_qualified(Some(q.clone()), format!("{}_rank", b.name));
        let location = datafusion::functions::expr_fn::concat(vec![
            qualified_col(&driving, FILE_COLUMN),
            lit(":"),
            cast(qualified_col(&driving, LINE_COLUMN), DataType::Utf8),
        ]);
        let first = first_value(location)
            .partition_by(partition.clone())
            .order_by(sorts)
            .build()
            .map_err(&to_err)?
            .alias_qualified(Some(q.clone()), format!("{}_first", b.name));
        *frame = frame.clone().window(vec![rn, first]).map_err(&to_err)?;
        let any_null = partition
            .iter()
            .map(|k| k.clone().is_null())
            .reduce(Expr::or)
            .unwrap_or(lit(false));
        let mut later = qualified_col(DUPLICATE, &format!("{}_rank", b.name)).gt(lit(1u64));
        let mut shown_expr = qualified_col(DUPLICATE, &format!("{}_first", b.name));
        if let Some(in_target) = self.join_target_keys(b, keys, frame).await? {
            shown_expr = when(
                in_target.clone(),
                lit("a row already loaded into the target"),
            )
            .otherwise(shown_expr)
            .map_err(&to_err)?;
            later = later.or(in_target);
        }
        let mut exprs = all_columns(frame.schema());
        exprs.push(shown_expr.alias_qualified(
            Some(TableReference::bare(DUPLICATE)),
            format!("{}_kept", b.name),
        ));
        *frame = frame.clone().select(exprs).map_err(&to_err)?;
        let failed = match b.nulls {
            NullPolicy::Pass => any_null.not().and(later),
            NullPolicy::Fail => any_null.or(later),
        };
        let key_text = keys
            .iter()
            .map(|k| format!("{k}={{{k}}}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Some((
            RuleKind::Unique,
            failed,
            ReasonTemplate::parse(&format!(
                "duplicate key ({key_text}); the first occurrence, which is kept, is {{{DUPLICATE}.{}_kept}}",
                b.name
            ))
            .unwrap_or_else(|_| ReasonTemplate::literal("duplicate key".into())),
            format!("({}) unique within the run", keys.join(", ")),
        )))
    }

    /// In a replay (which sees only the rejected rows), joins the keys the target already
    /// holds and returns "this row's key is in the target"; `None` outside a replay or when
    /// there is no target yet.
    ///
    /// # Errors
    /// The target's keys cannot be read.
    async fn join_target_keys(
        &mut self,
        b: &BusinessRule,
        keys: &[String],
        frame: &mut DataFrame,
    ) -> Result<Option<Expr>> {
        let is_replay = self
            .inputs
            .values()
            .any(|i| matches!(i, SourceInput::Replay(_)));
        if !is_replay {
            return Ok(None);
        }
        let qt = format!("__dupt_{}", b.name);
        let lookup = target_keys(
            self.project,
            self.job,
            &self.model,
            keys,
            &qt,
            &self.ctx,
            &self.redactor,
        )
        .await?;
        let Some(lookup) = lookup else {
            return Ok(None);
        };
        let on: Vec<Expr> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| qualified_col(&qt, &format!("k{i}")).eq(qualified_col(CANONICAL, k)))
            .collect();
        *frame = lookup
            .join_on(frame.clone(), JoinType::Right, on)
            .map_err(self.to_err())?;
        Ok(Some(qualified_col(&qt, "hit").is_not_null()))
    }

    /// `[actions]` set the action of built-in rules.
    pub(super) fn apply_actions(&mut self) {
        for (name, action, span) in self.mapping.actions.clone() {
            let Some(i) = self.rules.iter().position(|r| r.name == name) else {
                let names: Vec<&str> = self.rules.iter().map(|r| r.name.as_str()).collect();
                let hint = match did_you_mean(&name, names.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("rules: {}", names.join(", ")),
                };
                self.err_at(
                    span,
                    format!("actions.{name}"),
                    format!("no rule named `{name}` in this mapping"),
                    Some(hint),
                );
                continue;
            };
            let kind = self.rules[i].kind;
            if action == RuleAction::Flag
                && matches!(kind, RuleKind::Required | RuleKind::Malformed)
            {
                self.err_at(
                    span,
                    format!("actions.{name}"),
                    format!("rule `{name}` cannot be `flag`: the row has no value to load"),
                    Some("use `quarantine` or `drop`".into()),
                );
                continue;
            }
            self.rules[i].action = action;
        }
    }

    /// The values reasons quote, each once, as (placeholder, expression); a placeholder that
    /// names nothing the row has is reported at its rule.
    pub(super) fn reason_exprs(&mut self, frame: &DataFrame) -> Vec<(String, Expr)> {
        let mut out: Vec<(String, Expr)> = Vec::new();
        let placeholders: Vec<(String, String)> = self
            .rules
            .iter()
            .flat_map(|r| {
                r.reason
                    .placeholders()
                    .map(|p| (r.name.clone(), p.to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (rule, p) in placeholders {
            if out.iter().any(|(n, _)| *n == p) {
                continue;
            }
            let e = self.placeholder_expr(&p, frame.schema());
            if e.get_type(frame.schema()).is_ok() {
                out.push((p, e));
                continue;
            }
            let span = self
                .mapping
                .rules
                .iter()
                .find(|b| b.name == rule)
                .and_then(|b| b.span.clone());
            let all = self.rule_visible(frame);
            let hint = match did_you_mean(&p, all.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `{{{s}}}`?"),
                None => format!("valid names: {}", all.join(", ")),
            };
            self.err_at(
                span,
                format!("rule.{rule}.reason"),
                format!("reason of rule `{rule}` quotes `{{{p}}}`, which is not a field or column"),
                Some(hint),
            );
        }
        out
    }

    /// The column a reason placeholder names: `qualifier.name`, a canonical field, a let,
    /// or a source column.
    fn placeholder_expr(&self, p: &str, schema: &DFSchema) -> Expr {
        match p.split_once('.') {
            Some((q, n)) => qualified_col(q, n),
            None if self.model.field(p).is_some() => qualified_col(CANONICAL, p),
            None if self.let_names.iter().any(|l| l == p) => qualified_col(LET, p),
            None => match unique_source_column(schema, p) {
                Some(c) => Expr::Column(c),
                None => Expr::Column(Column::new_unqualified(p)),
            },
        }
    }
}

/// `"updated_at DESC NULLS LAST"` → (`"updated_at"`, ascending?, nulls first?). SQL defaults:
/// ascending; nulls last when ascending, first when descending.
fn split_sort(sql: &str) -> (&str, bool, bool) {
    let mut rest = sql.trim();
    let mut nulls_first = None;
    let upper = rest.to_ascii_uppercase();
    if upper.ends_with(" NULLS FIRST") {
        nulls_first = Some(true);
        rest = rest[..rest.len() - 12].trim_end();
    } else if upper.ends_with(" NULLS LAST") {
        nulls_first = Some(false);
        rest = rest[..rest.len() - 11].trim_end();
    }
    let upper = rest.to_ascii_uppercase();
    let mut asc = true;
    if upper.ends_with(" DESC") {
        asc = false;
        rest = rest[..rest.len() - 5].trim_end();
    } else if upper.ends_with(" ASC") {
        rest = rest[..rest.len() - 4].trim_end();
    }
    (rest, asc, nulls_first.unwrap_or(!asc))
}

/// The distinct keys already in the job's target, as `<q>.k0`, `<q>.k1`, ... (typed as the
/// model's fields) and `<q>.hit`; `None` when the target does not exist yet.
async fn target_keys(
    project: &Project,
    job: &Job,
    model: &CanonicalModel,
    keys: &[String],
    q: &str,
    ctx: &SessionContext,
    redactor: &Redactor,
) -> Result<Option<DataFrame>> {
    if job.target.is_database() {
        // A merge or scd2 load matches keys itself; an append replay may add duplicates of
        // a key the table has, which its primary key refuses.
        return Ok(None);
    }
    let dir = match (job.target.table(), job.target.path()) {
        (Some(t), _) => project.path(project.settings.warehouse.join(t.get_ref())),
        (None, Some(p)) => resolve_dir(project, p.get_ref(), redactor)
            .map_err(|e| Error::target(p.get_ref(), e))?,
        (None, None) => return Ok(None),
    };
    if !dir.is_dir() {
        return Ok(None);
    }
    let to_err = |e: DataFusionError| Error::engine(&job.name, redactor, &e);
    let partitions: Vec<(String, DataType)> = job
        .target
        .partition_by()
        .iter()
        .filter_map(|p| {
            model
                .field(p.get_ref())
                .map(|f| (f.name.clone(), f.data_type.to_arrow()))
        })
        .collect();
    let frame = ctx
        .read_parquet(
            dir.to_string_lossy().to_string(),
            datafusion::prelude::ParquetReadOptions::default().table_partition_cols(partitions),
        )
        .await
        .map_err(to_err)?;
    let qr = TableReference::bare(q);
    let mut exprs = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let Some(f) = model.field(k) else {
            return Ok(None);
        };
        exprs.push(
            try_cast(source::ident_col(k), f.data_type.to_arrow())
                .alias_qualified(Some(qr.clone()), format!("k{i}")),
        );
    }
    let frame = frame
        .select(exprs)
        .map_err(to_err)?
        .distinct()
        .map_err(to_err)?;
    let mut exprs = all_columns(frame.schema());
    exprs.push(lit(true).alias_qualified(Some(qr), "hit"));
    Ok(Some(frame.select(exprs).map_err(to_err)?))
}

/// Why a reference could not be planned: a mistake in the mapping or job, or a run error.
enum RefError {
    Config(String, Option<String>),
    Run(Error),
}

/// The valid values of a `references` rule, converted to `key_type`, as a frame with the
/// columns `<q>.key` (distinct)
/// and `<q>.hit` (true), and how to name the reference in reasons (`airports.faa`).
#[allow(clippy::too_many_arguments)]
async fn reference_frame(
    project: &Project,
    job: &Job,
    ctx: &SessionContext,
    target: &ReferenceTarget,
    column: &str,
    q: &str,
    redactor: &Redactor,
    inputs: &HashMap<String, SourceInput>,
    key_type: &DataType,
) -> std::result::Result<(DataFrame, String), RefError> {
    let to_err = |e: DataFusionError| RefError::Run(Error::engine(&job.name, redactor, &e));
    let (frame, value, shown, columns) = match target {
        ReferenceTarget::Source(name) => {
            let spec = job.sources.get(name).ok_or_else(|| {
                RefError::Run(Error::Internal(format!("source `{name}` not bound")))
            })?;
            let alias = format!("{q}_source");
            let input = inputs.get(name).unwrap_or(&SourceInput::Files);
            let scanned = source::scan_input(
                ctx,
                &project.root,
                name,
                &alias,
                spec,
                false,
                redactor,
                input,
            )
            .await
            .map_err(RefError::Run)?;
            let columns: Vec<String> = scanned.columns.iter().map(|c| c.name.clone()).collect();
            (
                scanned.frame,
                qualified_col(&alias, column),
                format!("{name}.{column}"),
                columns,
            )
        }
        ReferenceTarget::Table(table) => {
            let dir = project.path(project.settings.warehouse.join(table));
            if !dir.is_dir() {
                return Err(RefError::Config(
                    format!("table `{table}` is not loaded: {} does not exist", dir.display()),
                    Some("run the job that loads it first, or reference its source with `source = \"...\"`".into()),
                ));
            }
            let frame = ctx
                .read_parquet(
                    dir.to_string_lossy().to_string(),
                    datafusion::prelude::ParquetReadOptions::default(),
                )
                .await
                .map_err(to_err)?;
            let columns: Vec<String> = frame
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            (
                frame,
                source::ident_col(column),
                format!("table {table}.{column}"),
                columns,
            )
        }
    };
    if !columns.iter().any(|c| c == column) {
        return Err(RefError::Config(
            format!("{shown} does not exist"),
            Some(
                match did_you_mean(column, columns.iter().map(String::as_str)) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("columns: {}", columns.join(", ")),
                },
            ),
        ));
    }
    let qr = TableReference::bare(q);
    // Convert before DISTINCT, so keys that convert to the same value ("7", "07") match once.
    let frame = frame
        .select(vec![
            try_cast(value, key_type.clone()).alias_qualified(Some(qr.clone()), "key")
        ])
        .map_err(to_err)?
        .distinct()
        .map_err(to_err)?;
    let frame = frame
        .select(vec![
            qualified_col(q, "key"),
            lit(true).alias_qualified(Some(qr), "hit"),
        ])
        .map_err(to_err)?;
    Ok((frame, shown))
}
