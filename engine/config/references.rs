//! References between files: a mapping's model exists, has the pinned major version and
//! every field the mapping writes; a job's mapping, connections and sources match.

use super::*;

impl Project {
    /// Checks references between files: job → mapping → model, source bindings, field coverage.
    pub(super) fn check_references(&self, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        for m in self.mappings.values() {
            self.check_mapping_model(m, broken, diags);
        }
        for j in self.jobs.values() {
            self.check_job_references(j, broken, diags);
            self.check_after(j, broken, diags);
        }
    }

    /// The jobs a job's `after` names exist, and following `after` never leads back to it.
    fn check_after(&self, j: &Job, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        let span = key_path_span(&j.src, "after");
        for upstream in &j.after {
            if self.jobs.contains_key(upstream) || broken.contains(&format!("job:{upstream}")) {
                continue;
            }
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            let mut d =
                j.src
                    .diagnostic(span.clone(), "after", format!("no job named `{upstream}`"));
            d.hint = Some(match did_you_mean(upstream, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("jobs are files in jobs/; known: {}", known.join(", ")),
            });
            diags.push(d);
        }
        // Depth-first along `after`: reaching `j` again is a cycle no run could start.
        let mut path = vec![j.name.as_str()];
        let mut todo: Vec<(usize, &str)> = j.after.iter().map(|a| (1, a.as_str())).collect();
        let mut seen = BTreeSet::new();
        while let Some((depth, name)) = todo.pop() {
            path.truncate(depth);
            path.push(name);
            if name == j.name {
                let mut d = j.src.diagnostic(
                    span.clone(),
                    "after",
                    format!("`after` makes a cycle: {}", path.join(" after ")),
                );
                d.hint = Some("a job cannot wait for itself; remove one of the names".into());
                diags.push(d);
                return;
            }
            if !seen.insert(name) {
                continue;
            }
            if let Some(next) = self.jobs.get(name) {
                todo.extend(next.after.iter().map(|a| (depth + 1, a.as_str())));
            }
        }
    }

    /// A mapping's model exists, has the pinned major version, and has every field the
    /// mapping writes; every required field is mapped.
    fn check_mapping_model(&self, m: &Mapping, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        let Some(model) = self.models.get(&m.model.name) else {
            if broken.contains(&format!("model:{}", m.model.name)) {
                // Its own errors are reported; saying it is missing would mislead.
                return;
            }
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            let mut d = m.src.diagnostic(
                m.model.span.clone(),
                "model",
                format!("no canonical model named `{}`", m.model.name),
            );
            d.hint = Some(match did_you_mean(&m.model.name, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "models are files in mappings/canonical/; known: {}",
                    known.join(", ")
                ),
            });
            diags.push(d);
            return;
        };
        if let Some(major) = m.model.major {
            if major != model.version.major {
                let mut d = m.src.diagnostic(
                    m.model.span.clone(),
                    "model",
                    format!(
                        "mapping pins `{}@{major}` but the model is version {}",
                        model.name, model.version
                    ),
                );
                d.hint = Some(format!(
                    "update the mapping for the model's breaking changes, then pin `{}@{}`",
                    model.name, model.version.major
                ));
                diags.push(d);
            }
        }
        let mapped: BTreeSet<&str> = m.fields.iter().map(|f| f.name.as_str()).collect();
        for f in &m.fields {
            if model.field(&f.name).is_none() {
                let names = model.fields.iter().map(|f| f.name.as_str());
                let mut d = m.src.diagnostic(
                    f.span.clone(),
                    format!("fields.{}", f.name),
                    format!("`{}` is not a field of model `{}`", f.name, model.name),
                );
                d.hint = Some(match did_you_mean(&f.name, names) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None => format!("add it to {} first", model.file.display()),
                });
                diags.push(d);
            }
        }
        let missing: Vec<&str> = model
            .fields
            .iter()
            .filter(|f| f.required && !mapped.contains(f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            let span = key_path_span(&m.src, "fields");
            let mut d = m.src.diagnostic(
                span,
                "fields",
                format!(
                    "required field{} of model `{}` not mapped: {}",
                    if missing.len() == 1 { "" } else { "s" },
                    model.name,
                    missing.join(", ")
                ),
            );
            d.hint = Some(format!(
                "add `{} = \"<SQL expression>\"` under [fields]",
                missing[0]
            ));
            diags.push(d);
        }
    }

    /// A job's mapping and connections exist, its sources are exactly the ones the mapping
    /// reads, and its partition columns are fields of the model.
    fn check_job_references(&self, j: &Job, broken: &BTreeSet<String>, diags: &mut Diagnostics) {
        let Some(m) = self.mappings.get(&j.mapping) else {
            if broken.contains(&format!("mapping:{}", j.mapping)) {
                return;
            }
            let known: Vec<&str> = self.mappings.keys().map(String::as_str).collect();
            let span = key_path_span(&j.src, "mapping");
            let mut d =
                j.src
                    .diagnostic(span, "mapping", format!("no mapping named `{}`", j.mapping));
            d.hint = Some(match did_you_mean(&j.mapping, known.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!(
                    "mappings are files in mappings/; known: {}",
                    known.join(", ")
                ),
            });
            diags.push(d);
            return;
        };
        self.check_connections(j, diags);
        check_bindings(j, m, diags);
        check_new_files_drive(j, m, diags);
        if let Some(model) = self.models.get(&m.model.name) {
            for p in j.target.partition_by() {
                if model.field(p.get_ref()).is_none() {
                    let names = model.fields.iter().map(|f| f.name.as_str());
                    let mut d = j.src.diagnostic(
                        Some(p.span()),
                        "target.partition_by",
                        format!("`{}` is not a field of model `{}`", p.get_ref(), model.name),
                    );
                    d.hint =
                        did_you_mean(p.get_ref(), names).map(|s| format!("did you mean `{s}`?"));
                    diags.push(d);
                }
            }
        }
    }

    /// Every connection a job names is declared in sluice.toml.
    fn check_connections(&self, j: &Job, diags: &mut Diagnostics) {
        let known: Vec<&str> = self
            .settings
            .connections
            .keys()
            .map(String::as_str)
            .collect();
        let named = j
            .sources
            .iter()
            .filter_map(|(n, s)| {
                s.database()
                    .map(|d| (format!("sources.{n}.connection"), &d.connection))
            })
            .chain(
                j.target
                    .database()
                    .map(|d| ("target.connection".to_string(), &d.connection)),
            );
        for (key, c) in named {
            if self.settings.connections.contains_key(c.get_ref()) {
                continue;
            }
            let mut d = j.src.diagnostic(
                Some(c.span()),
                key,
                format!("no connection named `{}` in sluice.toml", c.get_ref()),
            );
            let store = self.settings.stores.get(c.get_ref());
            d.hint = Some(match did_you_mean(c.get_ref(), known.iter().copied()) {
                _ if store.is_some() => format!(
                    "`{}` is an object-store connection: name its files by URL instead, `path = \"{}://{}/…\"`, and leave out `connection`",
                    c.get_ref(),
                    store.map(|s| s.kind.scheme()).unwrap_or_default(),
                    store.map(|s| s.bucket.get_ref().as_str()).unwrap_or_default()
                ),
                Some(s) => format!("did you mean `{s}`?"),
                None if known.is_empty() => {
                    "declare it in sluice.toml as [connections.<name>] with `kind` and `url`".into()
                }
                None => format!("connections in sluice.toml: {}", known.join(", ")),
            });
            diags.push(d);
        }
    }
}

/// `incremental = { files = "new" }` only on the mapping's `from` source: a lookup must be
/// read whole, or rows of new files would miss their matches in older ones.
fn check_new_files_drive(j: &Job, m: &Mapping, diags: &mut Diagnostics) {
    for (name, s) in &j.sources {
        let Some(files) = s.new_files() else {
            continue;
        };
        if *name == m.from.source {
            continue;
        }
        let mut d = j.src.diagnostic(
            Some(files.span()),
            format!("sources.{name}.incremental.files"),
            format!(
                "source `{name}` is a lookup of mapping `{}` (it reads from `{}`), and a lookup is read whole",
                m.name, m.from.source
            ),
        );
        d.hint = Some(format!(
            "only the `from` source can read new files only; remove `incremental` from `{name}`"
        ));
        diags.push(d);
    }
}

/// The sources a mapping reads (`from`, joins, `references` to a source) are bound by the
/// job, and the job binds no source the mapping does not read.
pub(super) fn check_bindings(j: &Job, m: &Mapping, diags: &mut Diagnostics) {
    let needed = m.source_names();
    let bound: Vec<&str> = j.sources.keys().map(String::as_str).collect();
    let ref_uses: Vec<SourceUse> = m
        .rules
        .iter()
        .filter_map(|r| match &r.test {
            RuleTest::References {
                target: ReferenceTarget::Source(s),
                ..
            } => Some(SourceUse {
                source: s.clone(),
                alias: s.clone(),
                span: r.span.clone(),
            }),
            _ => None,
        })
        .collect();
    let uses = std::iter::once(&m.from)
        .chain(m.joins.iter().map(|x| &x.source))
        .chain(ref_uses.iter());
    let mut reported = BTreeSet::new();
    for u in uses {
        if j.sources.contains_key(&u.source) || !reported.insert(u.source.clone()) {
            continue;
        }
        let mut d = m.src.diagnostic(
            u.span.clone(),
            "from",
            format!(
                "source `{}` is not bound by job `{}` (it binds: {})",
                u.source,
                j.name,
                if bound.is_empty() {
                    "nothing".to_string()
                } else {
                    bound.join(", ")
                }
            ),
        );
        d.hint = Some(match did_you_mean(&u.source, bound.iter().copied()) {
            Some(s) => format!(
                "did you mean `{s}`? Otherwise add [sources.{}] to {}",
                u.source,
                j.src.path.display()
            ),
            None => format!(
                "add [sources.{}] with `format` and `path` to {}",
                u.source,
                j.src.path.display()
            ),
        });
        diags.push(d);
    }
    for name in j.sources.keys() {
        if !needed.contains(&name.as_str()) {
            let span = key_path_span(&j.src, &format!("sources.{name}"));
            let mut d = j.src.diagnostic(
                span,
                format!("sources.{name}"),
                format!("source `{name}` is not read by mapping `{}`", m.name),
            );
            d.hint = Some(format!(
                "the mapping reads: {}; remove this source or fix the name",
                needed.join(", ")
            ));
            diags.push(d);
        }
    }
}
