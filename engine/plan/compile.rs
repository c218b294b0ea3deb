//! Compiling one job, stage by stage in plan order: sources → joins → `[let]` helpers → field
//! values → canonical values (missing values, casts, parse failures) → rules (see
//! [`super::rules`]) → the final projection → the run's outputs.
//!
//! Every stage type-checks what it adds and reports mistakes into one [`Diagnostics`], so a
//! user sees every mistake of the mapping at once; the compiler stops between stages that
//! cannot go on with a broken one (fields need their joins, rules need their fields).

use super::*;

/// One job being compiled: what it reads, and the plan's parts built so far.
pub(super) struct Compiler<'a> {
    pub(super) project: &'a Project,
    pub(super) job: &'a Job,
    pub(super) inputs: &'a HashMap<String, SourceInput>,
    pub(super) mode: &'a ExtractMode,
    pub(super) mapping: Mapping,
    pub(super) model: CanonicalModel,
    pub(super) ctx: SessionContext,
    pub(super) redactor: Redactor,
    /// Mistakes found so far in the mapping (and the job's target).
    pub(super) diags: Diagnostics,
    /// Mistakes in the job's dataset checks, reported with whatever the mapping has.
    check_diags: Diagnostics,
    /// Scanned sources, driving first, in the mapping's join order.
    pub(super) sources: Vec<ScannedSource>,
    /// The sources' aliases, for "valid columns" hints.
    pub(super) aliases: Vec<String>,
    /// `[let]` names compiled so far.
    pub(super) let_names: Vec<String>,
    /// Guarded expressions whose per-row errors become `eval.*` rules.
    evals: Vec<EvalRule>,
    /// Field plans, in model order.
    fields: Vec<FieldPlan>,
    /// Row rules so far, parallel to `flag_exprs`.
    pub(super) rules: Vec<RowRule>,
    /// One boolean expression per rule: true = the row fails it.
    pub(super) flag_exprs: Vec<Expr>,
}

impl<'a> Compiler<'a> {
    /// Looks up the job's mapping and model and validates its dataset checks.
    ///
    /// # Errors
    /// [`Error::Internal`] when the mapping or model is missing (the project validated them).
    pub(super) fn new(
        project: &'a Project,
        job: &'a Job,
        inputs: &'a HashMap<String, SourceInput>,
        mode: &'a ExtractMode,
    ) -> Result<Self> {
        let mapping = project.mappings.get(&job.mapping).ok_or_else(|| {
            Error::Internal(format!("job `{}` references missing mapping", job.name))
        })?;
        let model = project.models.get(&mapping.model.name).ok_or_else(|| {
            Error::Internal(format!(
                "mapping `{}` references missing model",
                mapping.name
            ))
        })?;
        let ctx = run_session(project, job)?;
        let mut check_diags = Diagnostics::default();
        for (key, msg, hint) in crate::checks::validate(&ctx, model, &job.checks) {
            let span = crate::config::key_path_span(&job.src, &key);
            let mut d = job.src.diagnostic(span, key, msg);
            d.hint = hint;
            check_diags.push(d);
        }
        Ok(Compiler {
            project,
            job,
            inputs,
            mode,
            mapping: mapping.clone(),
            model: model.clone(),
            ctx,
            redactor: Redactor::default(),
            diags: Diagnostics::default(),
            check_diags,
            sources: Vec::new(),
            aliases: Vec::new(),
            let_names: Vec::new(),
            evals: Vec::new(),
            fields: Vec::new(),
            rules: Vec::new(),
            flag_exprs: Vec::new(),
        })
    }

    /// Runs every stage and returns the compiled job.
    ///
    /// # Errors
    /// [`Error::Config`] with every problem found; [`Error::Source`] / [`Error::Connection`]
    /// when a source cannot be read.
    pub(super) async fn compile(mut self) -> Result<CompiledJob> {
        let (extractions, mut connectors) = self.scan_sources().await?;
        let frame = self.joins()?;
        self.stop_on_errors()?;
        let frame = self.lets(frame)?;
        let frame = self.field_values(frame)?;
        self.stop_on_errors()?;
        let frame = self.canonical_values(frame)?;
        let frame = self.mapping_rules(frame).await?;
        self.apply_actions();
        let reason_exprs = self.reason_exprs(&frame);
        self.stop_on_errors()?;

        let to_err = self.to_err();
        let driving = &self.sources[0];
        let flag_exprs = std::mem::take(&mut self.flag_exprs);
        let (frame, layout) = final_projection(
            frame,
            &self.model,
            driving,
            &self.rules,
            flag_exprs,
            reason_exprs,
        )
        .map_err(&to_err)?;
        // Catch anything the per-expression checks missed, before any row is read.
        frame.clone().into_optimized_plan().map_err(&to_err)?;

        let with_flags = self.rules.iter().any(|r| r.action == RuleAction::Flag);
        let outputs = JobOutputs::resolve(
            self.project,
            self.job,
            &self.model,
            self.mode,
            with_flags,
            &self.sources,
            &self.redactor,
            &mut connectors,
            &mut self.diags,
            &self.ctx,
        )?;
        if !self.diags.is_empty() || !self.check_diags.is_empty() {
            let mut d = std::mem::take(&mut self.diags);
            d.extend(self.check_diags.clone());
            return Err(Error::Config(d));
        }
        Ok(CompiledJob {
            new_files: self.new_files(),
            job: self.job.clone(),
            mapping: self.mapping,
            model: self.model,
            ctx: self.ctx,
            frame,
            rules: self.rules,
            fields: self.fields,
            sources: self.sources,
            layout,
            target_dir: outputs.target_dir,
            target_shown: outputs.target_shown,
            quarantine: outputs.quarantine,
            redactor: self.redactor,
            target: outputs.target,
            extractions,
            extract_mode: self.mode.clone(),
        })
    }

    /// Stops with every mistake found so far (and the dataset checks'), if there is one.
    fn stop_on_errors(&mut self) -> Result<()> {
        if self.diags.is_empty() {
            return Ok(());
        }
        let mut d = std::mem::take(&mut self.diags);
        d.extend(self.check_diags.clone());
        Err(Error::Config(d))
    }

    /// A DataFusion error while building the plan, as an engine error of this job.
    pub(super) fn to_err(&self) -> impl Fn(DataFusionError) -> Error + 'a {
        let job = self.job;
        let redactor = self.redactor.clone();
        move |e| Error::engine(&job.name, &redactor, &e)
    }

    /// Reports a mistake in the mapping at `span`.
    pub(super) fn err_at(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: String,
        msg: String,
        hint: Option<String>,
    ) {
        let mut d = self.mapping.src.diagnostic(span, key, msg);
        d.hint = hint;
        self.diags.push(d);
    }

    /// Reports a DataFusion error about one expression, with the names the user could have
    /// meant.
    pub(super) fn expr_err(
        &mut self,
        span: Option<std::ops::Range<usize>>,
        key: String,
        what: String,
        e: &DataFusionError,
        valid: &[String],
    ) {
        let (msg, hint) = explain(e, valid);
        self.err_at(span, key, format!("{what}: {msg}"), hint);
    }

    /// The columns an expression at `schema` could name: sources' columns and lets.
    pub(super) fn visible(&self, schema: &DFSchema) -> Vec<String> {
        visible_columns(schema, &self.let_names, &self.aliases)
    }

    /// Scans the mapping's sources (driving first), from their files or databases or from
    /// the rows given in `inputs`. Returns the database extractions and their connectors.
    ///
    /// # Errors
    /// A source that cannot be read; a misspelled `columns` key; a backfill of a job without
    /// an incremental source.
    async fn scan_sources(
        &mut self,
    ) -> Result<(
        Vec<Arc<crate::db::extract::Extraction>>,
        HashMap<String, crate::db::Connector>,
    )> {
        let mut extractions = Vec::new();
        let mut connectors = HashMap::new();
        let uses = std::iter::once((&self.mapping.from, true))
            .chain(self.mapping.joins.iter().map(|j| (&j.source, false)));
        for (u, driving) in uses {
            let spec = self
                .job
                .sources
                .get(&u.source)
                .ok_or_else(|| Error::Internal(format!("source `{}` not bound", u.source)))?;
            let given = self.inputs.get(&u.source).unwrap_or(&SourceInput::Files);
            let new_files = self.new_files_input(&u.source, spec, given)?;
            let input = new_files.as_ref().unwrap_or(given);
            let database = spec
                .database()
                .filter(|_| matches!(input, SourceInput::Files));
            let scanned = if let Some(db_spec) = database {
                let (scanned, ext) = crate::db::scan(
                    &self.ctx,
                    self.project,
                    &self.job.name,
                    &u.source,
                    &u.alias,
                    db_spec,
                    driving,
                    &self.redactor,
                    self.mode,
                    &mut connectors,
                )
                .await?;
                extractions.push(ext);
                scanned
            } else {
                source::scan_input(
                    &self.ctx,
                    &self.project.root,
                    &u.source,
                    &u.alias,
                    spec,
                    driving,
                    &self.redactor,
                    input,
                )
                .await?
            };
            self.sources.push(scanned);
        }
        let unknown_columns = unknown_declared_columns(self.job, &self.sources);
        if !unknown_columns.is_empty() {
            return Err(Error::Config(unknown_columns));
        }
        if matches!(self.mode, ExtractMode::Backfill { .. })
            && !extractions.iter().any(|e| e.cursor.is_some())
        {
            return Err(Error::Usage {
                message: format!(
                    "job `{}` has no incremental source, so there is no cursor range to backfill",
                    self.job.name
                ),
                hint: Some("backfill needs a database source with `incremental = { column = ... }`; to read everything again use `sluice run --full-refresh`".into()),
            });
        }
        self.aliases = self.sources.iter().map(|s| s.alias.clone()).collect();
        Ok((extractions, connectors))
    }

    /// What an incremental file source (`incremental = { files = "new" }`) reads instead of
    /// every file: the files no committed run of the job read, from the state store; with
    /// `--full-refresh`, every file (recorded anew at the commit). `None` for other sources
    /// and for rows given by the caller (replay, tests).
    ///
    /// # Errors
    /// [`Error::State`] when the state store cannot be read.
    fn new_files_input(
        &self,
        name: &str,
        spec: &crate::config::spec::SourceSpec,
        given: &SourceInput,
    ) -> Result<Option<SourceInput>> {
        let incremental = spec.new_files().is_some();
        if !incremental || !matches!(given, SourceInput::Files) {
            return Ok(None);
        }
        let read = match self.mode {
            ExtractMode::FullRefresh => Default::default(),
            _ => crate::state::StateStore::of(self.project)?.files_read(&self.job.name, name)?,
        };
        Ok(Some(SourceInput::NewFiles(Arc::new(read))))
    }

    /// The files incremental file sources read, for the run report (not yet recorded).
    fn new_files(&self) -> Vec<crate::report::NewFilesReport> {
        self.sources
            .iter()
            .filter_map(|s| {
                let n = s.new_files.as_ref()?;
                Some(crate::report::NewFilesReport {
                    source: s.name.clone(),
                    skipped: n.skipped,
                    read: n.read.clone(),
                    replace: *self.mode == ExtractMode::FullRefresh,
                    recorded: false,
                })
            })
            .collect()
    }

    /// Joins the lookup sources to the driving one, as the mapping's `[[join]]`s say.
    fn joins(&mut self) -> Result<DataFrame> {
        let to_err = self.to_err();
        let mut frame = self.sources[0].frame.clone();
        let lookups: Vec<(crate::config::Join, DataFrame)> = self
            .mapping
            .joins
            .iter()
            .cloned()
            .zip(self.sources.iter().skip(1).map(|s| s.frame.clone()))
            .collect();
        for (j, right) in lookups {
            let merged = frame.schema().join(right.schema()).map_err(&to_err)?;
            let on = match parse_expr(&self.ctx, j.on.get_ref(), &merged, &|_| None) {
                Ok(e) => e,
                Err(e) => {
                    let valid = visible_columns(&merged, &[], &self.aliases);
                    self.expr_err(
                        Some(j.on.span()),
                        format!("join.{}.on", j.source.alias),
                        format!("in join `{}`", j.source.alias),
                        &e,
                        &valid,
                    );
                    continue;
                }
            };
            // DataFusion builds its hash table from the join's left input and streams the
            // right one. Sources have no row-count statistics for the optimizer to swap sides
            // by, so put the lookup on the left and keep the driving rows streaming: a left
            // join from the mapping's point of view is a right join here. Memory then scales
            // with the lookup tables, not with the source.
            let kind = match j.kind {
                JoinKind::Left => JoinType::Right,
                JoinKind::Inner => JoinType::Inner,
            };
            frame = right.join_on(frame, kind, vec![on]).map_err(&to_err)?;
        }
        Ok(frame)
    }

    /// Adds the `[let]` helpers, each able to use the ones before it.
    fn lets(&mut self, mut frame: DataFrame) -> Result<DataFrame> {
        let to_err = self.to_err();
        let state = self.ctx.state();
        for l in self.mapping.lets.clone() {
            let names = self.let_names.clone();
            let resolver = move |n: &str| names.iter().any(|x| x == n).then_some(LET);
            let typed = parse_expr(&self.ctx, &l.sql, frame.schema(), &resolver)
                .and_then(|e| e.get_type(frame.schema()).map(|_| e));
            let e = match typed {
                Ok(e) => e,
                Err(e) => {
                    let valid = self.visible(frame.schema());
                    self.expr_err(
                        l.span.clone(),
                        format!("let.{}", l.name),
                        format!("in `{}`", l.name),
                        &e,
                        &valid,
                    );
                    continue;
                }
            };
            let mut outputs = ValueOutputs::new(LET, EVAL_LET);
            outputs.push(&state, &l.name, e, frame.schema());
            if outputs.is_guarded(&l.name) {
                self.evals.push(EvalRule::new(
                    format!("eval.let.{}", l.name),
                    EVAL_LET,
                    &l.name,
                ));
            }
            frame = outputs.select(frame).map_err(&to_err)?;
            self.let_names.push(l.name.clone());
        }
        Ok(frame)
    }

    /// Adds every model field's expression as written (`NULL` for an unmapped optional
    /// field), type-checked against the field's type.
    fn field_values(&mut self, frame: DataFrame) -> Result<DataFrame> {
        let to_err = self.to_err();
        let state = self.ctx.state();
        let mut values = ValueOutputs::new(VALUE, EVAL);
        let lets = self.let_names.clone();
        let resolver = move |n: &str| lets.iter().any(|x| x == n).then_some(LET);
        for f in self.model.fields.clone() {
            let written = self
                .mapping
                .fields
                .iter()
                .find(|e| e.name == f.name)
                .cloned();
            let span = written.as_ref().and_then(|w| w.span.clone());
            let key = format!("fields.{}", f.name);
            let what = format!("in field `{}`", f.name);
            let (expr, sql) = match &written {
                Some(w) => match parse_expr(&self.ctx, &w.sql, frame.schema(), &resolver) {
                    Ok(e) => (e, w.sql.clone()),
                    Err(e) => {
                        let valid = self.visible(frame.schema());
                        self.expr_err(span, key, what, &e, &valid);
                        continue;
                    }
                },
                None => (
                    lit(ScalarValue::try_from(&f.data_type.to_arrow()).map_err(&to_err)?),
                    "NULL".to_string(),
                ),
            };
            let expr_type = match expr.get_type(frame.schema()) {
                Ok(t) => t,
                Err(e) => {
                    let valid = self.visible(frame.schema());
                    self.expr_err(span, key, what, &e, &valid);
                    continue;
                }
            };
            let class = classify_cast(&expr_type, f.data_type);
            if let CastClass::Lossy(m) | CastClass::Incompatible(m) = &class {
                let what = if matches!(class, CastClass::Lossy(_)) {
                    "lossy implicit cast"
                } else {
                    "wrong type"
                };
                let hint = declared_column_hint(&expr, f.data_type, &self.sources)
                    .unwrap_or_else(|| cast_hint(f.data_type, &class));
                self.err_at(
                    span,
                    key,
                    format!("{what} for field `{}`: {m}", f.name),
                    Some(hint),
                );
                continue;
            }
            values.push(&state, &f.name, expr, frame.schema());
            if values.is_guarded(&f.name) {
                self.evals
                    .push(EvalRule::new(format!("eval.{}", f.name), EVAL, &f.name));
            }
            self.fields.push(FieldPlan {
                name: f.name.clone(),
                sql,
                expr_type,
                cast: class,
            });
        }
        if !self.diags.is_empty() {
            return Ok(frame);
        }
        values.select(frame).map_err(&to_err)
    }

    /// Turns field values into canonical values (missing values → NULL, then the cast to the
    /// field's type), with a `cast.<field>` rule for each cast that can fail per row, a
    /// `parse.<alias>.<column>` rule for each parsed source column the row depends on, the
    /// `eval.*` rules of guarded expressions and the model's constraints.
    fn canonical_values(&mut self, frame: DataFrame) -> Result<DataFrame> {
        let to_err = self.to_err();
        let mut canonical_exprs = columns_except(frame.schema(), VALUE);
        for (f, fp) in self.model.fields.iter().zip(&self.fields) {
            let v = qualified_col(VALUE, &f.name);
            let cleaned = if f.missing_values.is_empty() {
                v.clone()
            } else {
                let null = lit(ScalarValue::try_from(&fp.expr_type).map_err(&to_err)?);
                when(
                    cast(v.clone(), DataType::Utf8).in_list(
                        f.missing_values.iter().map(|m| lit(m.clone())).collect(),
                        false,
                    ),
                    null,
                )
                .otherwise(v.clone())
                .map_err(&to_err)?
            };
            let target = f.data_type.to_arrow();
            let typed = match fp.cast {
                CastClass::Parse => try_cast(cleaned.clone(), target),
                _ => cast(cleaned.clone(), target),
            };
            if fp.cast == CastClass::Parse {
                let failed = cleaned.is_not_null().and(typed.clone().is_null());
                self.flag_exprs.push(failed.clone());
                self.rules.push(cast_rule(f, failed));
            }
            canonical_exprs
                .push(typed.alias_qualified(Some(TableReference::bare(CANONICAL)), &f.name));
        }
        // Keep the raw values for cast reasons.
        for f in &self.fields {
            if f.cast == CastClass::Parse {
                canonical_exprs.push(qualified_col(VALUE, &f.name));
            }
        }
        self.parse_rules();
        let frame = frame.select(canonical_exprs).map_err(&to_err)?;

        // Rows whose expressions failed to evaluate (see `row_errors`).
        for e in std::mem::take(&mut self.evals) {
            self.flag_exprs
                .push(qualified_col(e.qualifier, &e.name).is_not_null());
            self.rules.push(e.rule());
        }
        // Model constraints, over canonical fields.
        for r in model_rules(&self.model) {
            let failed = requalify(r.failed.clone(), CANONICAL);
            self.flag_exprs.push(failed.clone());
            self.rules.push(RowRule { failed, ..r });
        }
        self.malformed_rule();
        Ok(frame)
    }

    /// Parse failures of source values: every column of the driving source, and the columns
    /// of lookup sources that the mapping uses.
    fn parse_rules(&mut self) {
        let used = used_columns(&self.mapping);
        let driving = self.sources[0].alias.clone();
        for s in &self.sources {
            for c in s.columns.iter().filter(|c| c.parsed) {
                if s.alias != driving
                    && !used.contains(&(s.alias.clone(), c.name.clone()))
                    && !used.contains(&(String::new(), c.name.clone()))
                {
                    continue;
                }
                let flag = qualified_col(&s.alias, &format!("{PARSE_FAILED_PREFIX}{}", c.name));
                self.rules.push(RowRule {
                    name: format!("parse.{}.{}", s.alias, c.name),
                    kind: RuleKind::Cast,
                    field: None,
                    failed: flag.clone(),
                    reason: ReasonTemplate::parse(&format!(
                        "value '{{{}.{RAW_PREFIX}{}}}' in column {}.{} is not a valid {}",
                        s.alias, c.name, s.alias, c.name, c.data_type
                    ))
                    .unwrap_or_else(|_| {
                        ReasonTemplate::literal(format!("{}.{} does not parse", s.alias, c.name))
                    }),
                    description: format!("{}.{} parses as {}", s.alias, c.name, c.data_type),
                    action: RuleAction::Quarantine,
                });
                self.flag_exprs.push(flag);
            }
        }
    }

    /// A malformed CSV record of the driving source has no values: one rule says why.
    fn malformed_rule(&mut self) {
        let driving = &self.sources[0];
        if driving.records.is_none() || driving.format != SourceFormat::Csv {
            return;
        }
        let a = &driving.alias;
        let failed = qualified_col(a, crate::csv_reader::MALFORMED_COLUMN).is_not_null();
        self.flag_exprs.push(failed.clone());
        self.rules.push(RowRule {
            name: format!("malformed.{a}"),
            kind: RuleKind::Malformed,
            field: None,
            failed,
            reason: ReasonTemplate::parse(&format!(
                "malformed record: {{{a}.{}}}",
                crate::csv_reader::MALFORMED_COLUMN
            ))
            .unwrap_or_else(|_| ReasonTemplate::literal("malformed record".into())),
            description: "the record is well-formed CSV (RFC 4180, one field per column, UTF-8)"
                .into(),
            action: RuleAction::Quarantine,
        });
    }
}

/// The `cast.<field>` rule: the field's value is set but does not convert to its type.
fn cast_rule(f: &crate::model::Field, failed: Expr) -> RowRule {
    RowRule {
        name: format!("cast.{}", f.name),
        kind: RuleKind::Cast,
        field: Some(f.name.clone()),
        failed,
        reason: ReasonTemplate::parse(&format!(
            "value '{{__v.{0}}}' of {0} is not a valid {1}",
            f.name, f.data_type
        ))
        .unwrap_or_else(|_| {
            ReasonTemplate::literal(format!("{} is not a valid {}", f.name, f.data_type))
        }),
        description: format!("{} parses as {}", f.name, f.data_type),
        action: RuleAction::Quarantine,
    }
}
